//! Label cardinality controls for the job metrics: how `ref`, `job` and `runner` values are
//! written, and which labels are dropped. Merge-request refs, parallel job names and per-host
//! runners multiply series; these policies fold them.

pub use crate::config::labels::{
    Droppable, JobMode, JobRewrite, LabelsConfig, LabelsError, Pattern, RefMode, RunnerMode,
    default_fingerprint,
};
use crate::model::JobRunner;
use crate::tracker::Event;

impl RunnerMode {
    /// The label value for a job's runner; `""` for a job that never got one.
    pub fn value(self, runner: Option<&JobRunner>) -> &str {
        match (self, runner) {
            (Self::Description, Some(r)) => &r.description,
            (Self::Type, Some(r)) => &r.runner_type,
            _ => "",
        }
    }
}

impl LabelsConfig {
    /// Rewrites the labels of `events` for a project whose default branch is `default_branch`.
    /// (Dropped labels and the runner value are left to the metric layout.)
    pub fn apply(&self, events: &mut [Event], default_branch: Option<&str>) {
        if self.ref_ == RefMode::Raw && self.job == JobMode::Raw && self.job_rewrites.is_empty() {
            return;
        }
        for e in events {
            let labels = match e {
                Event::Started { labels, .. }
                | Event::Completed { labels, .. }
                | Event::Flaky { labels } => labels,
            };
            labels.ref_ = match self.ref_ {
                RefMode::Raw => std::mem::take(&mut labels.ref_),
                RefMode::None => String::new(),
                RefMode::Kind => ref_kind(&labels.ref_, labels.tag, default_branch).to_string(),
            };
            if self.job == JobMode::Normalized {
                labels.name = normalize_job(&labels.name).to_string();
            }
            if let Some(name) = self.rewrite_job(&labels.name) {
                labels.name = name;
            }
        }
    }
}

pub fn ref_kind(ref_: &str, tag: bool, default_branch: Option<&str>) -> &'static str {
    if tag {
        "tag"
    } else if ref_.starts_with("refs/merge-requests/") {
        "merge_request"
    } else if default_branch == Some(ref_) {
        "default_branch"
    } else {
        "branch"
    }
}

/// Strips GitLab's `parallel: N` suffix (` 3/8`) and `parallel:matrix` suffix (`: [a, b]`).
pub fn normalize_job(name: &str) -> &str {
    let name = match name.rsplit_once(' ') {
        Some((base, suffix))
            if suffix
                .split_once('/')
                .is_some_and(|(i, n)| is_digits(i) && is_digits(n)) =>
        {
            base
        }
        _ => name,
    };
    match name.find(": [") {
        Some(i) if name.ends_with(']') => &name[..i],
        _ => name,
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::JobLabels;

    #[test]
    fn job_names_are_normalized() {
        assert_eq!(normalize_job("rspec 3/8"), "rspec");
        assert_eq!(normalize_job("rspec unit 10/12"), "rspec unit");
        assert_eq!(normalize_job("build: [linux, arm64]"), "build");
        assert_eq!(normalize_job("deploy 1/x"), "deploy 1/x");
        assert_eq!(normalize_job("lint"), "lint");
        assert_eq!(normalize_job(""), "");
    }

    #[test]
    fn refs_fold_into_kinds() {
        assert_eq!(ref_kind("main", false, Some("main")), "default_branch");
        assert_eq!(ref_kind("feature/x", false, Some("main")), "branch");
        assert_eq!(ref_kind("v1.2.3", true, Some("main")), "tag");
        assert_eq!(
            ref_kind("refs/merge-requests/12/head", false, Some("main")),
            "merge_request"
        );
        let mut events = vec![Event::Started {
            labels: JobLabels {
                ref_: "refs/merge-requests/3/head".into(),
                stage: "test".into(),
                name: "rspec 2/4".into(),
                tag: false,
                runner: None,
            },
            queued_duration: 1.0,
        }];
        let cfg = LabelsConfig {
            ref_: RefMode::Kind,
            job: JobMode::Normalized,
            ..Default::default()
        };
        cfg.apply(&mut events, Some("main"));
        let Event::Started { labels, .. } = &events[0] else {
            unreachable!("built above")
        };
        assert_eq!(
            (labels.ref_.as_str(), labels.name.as_str()),
            ("merge_request", "rspec")
        );
    }

    fn started(name: &str) -> Event {
        Event::Started {
            labels: JobLabels {
                ref_: "main".into(),
                stage: "test".into(),
                name: name.into(),
                tag: false,
                runner: None,
            },
            queued_duration: 1.0,
        }
    }

    fn names(cfg: &LabelsConfig, names: &[&str]) -> Vec<String> {
        let mut events: Vec<Event> = names.iter().map(|n| started(n)).collect();
        cfg.apply(&mut events, Some("main"));
        events
            .into_iter()
            .map(|e| match e {
                Event::Started { labels, .. }
                | Event::Completed { labels, .. }
                | Event::Flaky { labels } => labels.name,
            })
            .collect()
    }

    fn rules(rules: &[(&str, &str)]) -> Vec<JobRewrite> {
        rules
            .iter()
            .map(|(m, r)| JobRewrite::new(m, r).unwrap())
            .collect()
    }

    #[test]
    fn rewrites_are_anchored_and_the_first_match_wins() {
        let cfg = LabelsConfig {
            job_rewrites: rules(&[
                (r"deploy-(\w+)-\d+", "deploy-$1"),
                (r"(?P<kind>unit|e2e)-shard", "${kind}-tests"),
                (r"deploy-.*", "deploy"),
                ("lint", "$$lint"),
            ]),
            ..Default::default()
        };
        assert_eq!(
            names(
                &cfg,
                &[
                    "deploy-eu-17",
                    "deploy-eu",
                    "e2e-shard",
                    "my-e2e-shard",
                    "lint",
                    "rspec 1/2"
                ]
            ),
            [
                "deploy-eu",
                "deploy",
                "e2e-tests",
                "my-e2e-shard",
                "$lint",
                "rspec 1/2"
            ]
        );
    }

    #[test]
    fn rewrites_apply_after_normalization() {
        let cfg = LabelsConfig {
            job: JobMode::Normalized,
            job_rewrites: rules(&[("rspec", "test"), ("rspec 1/2", "never")]),
            ..Default::default()
        };
        assert_eq!(
            names(&cfg, &["rspec 1/2", "build: [a, b]"]),
            ["test", "build"]
        );
    }

    #[test]
    fn replacements_must_name_existing_groups() {
        for (m, r) in [
            ("a(b)", "$1"),
            ("a(b)", "${1}_x"),
            ("a(?P<x>b)", "$x-$0"),
            ("a", "$$1 and $ and ${unclosed"),
        ] {
            assert!(JobRewrite::new(m, r).is_ok(), "{m} => {r}");
        }
        for (m, r, group) in [
            ("a(b)", "$2", "2"),
            ("a(b)", "$1_x", "1_x"),
            ("a", "${y}", "y"),
        ] {
            match JobRewrite::new(m, r) {
                Err(LabelsError::MissingGroup(g)) => assert_eq!(g, group),
                other => panic!("{m} => {r}: {other:?}"),
            }
        }
        assert!(matches!(
            JobRewrite::new("a(", "x"),
            Err(LabelsError::Regex(_))
        ));
    }

    #[test]
    fn drop_and_runner_decide_the_labels() {
        let mut cfg = LabelsConfig::default();
        assert!(!cfg.keeps("runner") && cfg.keeps("ref") && cfg.keeps("status"));
        cfg.runner = RunnerMode::Type;
        cfg.drop = vec![Droppable::Ref, Droppable::FailureReason];
        assert!(cfg.keeps("runner") && !cfg.keeps("ref") && !cfg.keeps("failure_reason"));
        assert!(cfg.keeps("job") && cfg.keeps("project"));
        cfg.drop.push(Droppable::Runner);
        assert!(
            !cfg.keeps("runner"),
            "dropping runner wins over labels.runner"
        );
        assert!(matches!(
            Droppable::try_from("project".to_string()),
            Err(LabelsError::Undroppable(_))
        ));
        assert!(matches!(
            Droppable::try_from("host".to_string()),
            Err(LabelsError::UnknownLabel(_))
        ));
    }

    #[test]
    fn runner_values() {
        let r = JobRunner {
            description: "docker-7".into(),
            runner_type: "group_type".into(),
        };
        assert_eq!(RunnerMode::Description.value(Some(&r)), "docker-7");
        assert_eq!(RunnerMode::Type.value(Some(&r)), "group_type");
        assert_eq!(RunnerMode::Type.value(None), "");
        assert_eq!(RunnerMode::None.value(Some(&r)), "");
    }

    #[test]
    fn fingerprint_tells_policies_apart() {
        let default = LabelsConfig::default();
        assert_eq!(default.fingerprint(), default_fingerprint());
        let a = LabelsConfig {
            drop: vec![Droppable::Ref, Droppable::Stage, Droppable::Ref],
            ..Default::default()
        };
        let b = LabelsConfig {
            drop: vec![Droppable::Stage, Droppable::Ref],
            ..Default::default()
        };
        assert_eq!(
            a.fingerprint(),
            b.fingerprint(),
            "order and repeats do not matter"
        );
        let variants = [
            default.clone(),
            a,
            LabelsConfig {
                runner: RunnerMode::Type,
                ..Default::default()
            },
            LabelsConfig {
                runner: RunnerMode::Description,
                ..Default::default()
            },
            LabelsConfig {
                ref_: RefMode::Kind,
                ..Default::default()
            },
            LabelsConfig {
                job_rewrites: rules(&[("a", "b")]),
                ..Default::default()
            },
            LabelsConfig {
                job_rewrites: rules(&[("a", "c")]),
                ..Default::default()
            },
        ];
        let prints: std::collections::BTreeSet<String> =
            variants.iter().map(LabelsConfig::fingerprint).collect();
        assert_eq!(prints.len(), variants.len(), "{prints:#?}");
    }
}
