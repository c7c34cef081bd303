//! Deterministic generation of realistic job histories.
//!
//! Pipelines arrive per project as a Poisson process; each runs build → test → deploy, a stage
//! starting when the previous one completes, later stages skipped after a blocking failure and
//! left `created` behind a job that never completes. Some jobs move alone long after the rest
//! of their pipeline settled (a late stage start, a late skip, see `blocked_steps`), the
//! timings an exporter must not assume away. Lifecycle kinds are weighted so that a few
//! hundred jobs per project show every case the exporter must handle.

use super::world::{JobPlan, Ms, ProjectDef, RunnerDef, World, is_final};

const SEC: Ms = 1_000;
const MIN: Ms = 60 * SEC;
/// Every job that finishes does so within this long after its creation.
const MAX_LIFETIME: Ms = 100 * MIN - SEC;

#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSpec {
    pub id: u64,
    pub path: String,
    pub pipelines_per_hour: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorldSpec {
    pub projects: Vec<ProjectSpec>,
    /// Pipelines are created in `[start_ms, end_ms]`.
    pub start_ms: Ms,
    pub end_ms: Ms,
    pub first_job_id: u64,
    pub first_pipeline_id: u64,
    /// A retry that fails is retried again half the time (up to four attempts,
    /// `retries_count` up to 3). Off by default, so existing worlds stay as they were.
    pub retry_chains: bool,
    /// Per project, this many failed jobs of its earliest pipelines retried at
    /// `late_retry_at_ms` (default `end_ms`) plus up to 10 minutes: a retry long after its
    /// pipeline ran, older than any backfill. 0 by default.
    pub late_retries: u32,
    pub late_retry_at_ms: Option<Ms>,
}

impl WorldSpec {
    pub fn new(projects: Vec<ProjectSpec>, start_ms: Ms, end_ms: Ms) -> Self {
        Self {
            projects,
            start_ms,
            end_ms,
            first_job_id: 1000,
            first_pipeline_id: 100,
            retry_chains: false,
            late_retries: 0,
            late_retry_at_ms: None,
        }
    }

    /// Retry chains on and `late` late retries per project (see the fields).
    pub fn with_retries(mut self, late: u32) -> Self {
        self.retry_chains = true;
        self.late_retries = late;
        self
    }

    /// `count` projects (ids 1..=count, 50 per group) at the same rate.
    pub fn uniform(count: u64, pipelines_per_hour: f64, start_ms: Ms, end_ms: Ms) -> Self {
        let projects = (1..=count)
            .map(|id| ProjectSpec {
                id,
                path: format!("bulk/group-{}/project-{id}", id / 50),
                pipelines_per_hour,
            })
            .collect();
        Self::new(projects, start_ms, end_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Success,
    Fail,
    AllowFail,
    ViaResource,
    CancelPending,
    CancelRunning,
    Skip,
    StuckPending,
    Unknown,
    Callback,
    Retried,
    Manual,
    ManualPlayed,
    Scheduled,
}

const AUTO_KINDS: [(Kind, u32); 14] = [
    (Kind::Success, 600),
    (Kind::Fail, 80),
    (Kind::AllowFail, 40),
    (Kind::ViaResource, 60),
    (Kind::CancelPending, 30),
    (Kind::CancelRunning, 30),
    (Kind::Skip, 20),
    (Kind::StuckPending, 20),
    (Kind::Unknown, 20),
    (Kind::Callback, 20),
    (Kind::Retried, 40),
    (Kind::Manual, 10),
    (Kind::ManualPlayed, 10),
    (Kind::Scheduled, 15),
];
const MANUAL_KINDS: [(Kind, u32); 3] = [
    (Kind::Manual, 40),
    (Kind::ManualPlayed, 40),
    (Kind::Scheduled, 20),
];
const FAILURE_REASONS: [(&str, u32); 5] = [
    ("script_failure", 60),
    ("runner_system_failure", 12),
    ("stuck_or_timeout_failure", 10),
    ("job_execution_timeout", 10),
    ("some_future_reason", 8),
];

fn pick<T: Copy>(rng: &mut fastrand::Rng, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|e| e.1).sum();
    let mut roll = rng.u32(0..total);
    for &(item, weight) in table {
        if roll < weight {
            return item;
        }
        roll -= weight;
    }
    table[table.len() - 1].0
}

fn log_uniform(rng: &mut fastrand::Rng, lo: Ms, hi: Ms) -> Ms {
    let (lo, hi) = ((lo as f64).ln(), (hi as f64).ln());
    (lo + rng.f64() * (hi - lo)).exp() as Ms
}

fn queue_time(rng: &mut fastrand::Rng) -> Ms {
    log_uniform(rng, SEC, 5 * MIN)
}

fn run_time(rng: &mut fastrand::Rng) -> Ms {
    if rng.u32(0..100) < 3 {
        rng.i64(40 * MIN..70 * MIN)
    } else {
        log_uniform(rng, 5 * SEC, 40 * MIN)
    }
}

/// What a job means for the next stage.
#[derive(Debug, Clone, Copy)]
enum Gate {
    Ready(Ms),
    Blocked(Ms),
    Never,
}

struct Gen<'a> {
    rng: fastrand::Rng,
    project: &'a ProjectSpec,
    pipeline_seq: u64,
    tag_seq: u64,
    /// `(created_at, project id, pipeline seq, order in pipeline)` sorts jobs into id order.
    jobs: Vec<((Ms, u64, u64, u32), JobPlan)>,
    pipelines: Vec<(Ms, u64, u64)>,
    /// [`WorldSpec::retry_chains`].
    chains: bool,
}

impl Gen<'_> {
    fn pipeline(&mut self, created: Ms) {
        let rng = &mut self.rng;
        let seq = self.pipeline_seq;
        self.pipeline_seq += 1;
        self.pipelines.push((created, self.project.id, seq));
        let (ref_, tag, source) = match rng.u32(0..100) {
            0..55 if rng.u32(0..100) < 15 => ("main".to_owned(), false, "schedule"),
            0..55 => ("main".to_owned(), false, "push"),
            55..75 => {
                let topic = ["login", "search", "billing", "cache", "docs"][rng.usize(0..5)];
                (
                    format!("feature/{topic}-{}", rng.u32(1..300)),
                    false,
                    "push",
                )
            }
            75..90 => (
                format!("refs/merge-requests/{}/head", rng.u32(1..200)),
                false,
                "merge_request_event",
            ),
            _ => {
                self.tag_seq += 1;
                (
                    format!("v1.{}.{}", self.tag_seq / 5, self.tag_seq % 5),
                    true,
                    "push",
                )
            }
        };
        let mut build = vec![("compile".to_owned(), false)];
        if rng.bool() && rng.u32(0..5) < 4 {
            build.push(("docker-build".to_owned(), false));
        }
        let parallel = rng.u32(2..=4);
        let mut test: Vec<(String, bool)> = (1..=parallel)
            .map(|i| (format!("rspec {i}/{parallel}"), false))
            .collect();
        if rng.bool() {
            test.push(("unit".to_owned(), false));
        }
        if rng.u32(0..10) < 3 {
            test.push(("lint".to_owned(), false));
        }
        let deploy = match (ref_.as_str(), tag) {
            ("main", _) => vec![
                ("deploy-staging".to_owned(), false),
                ("deploy-production".to_owned(), true),
            ],
            (_, true) => vec![
                ("release".to_owned(), false),
                ("deploy-production".to_owned(), true),
            ],
            _ if rng.u32(0..10) < 4 => vec![("review-app".to_owned(), true)],
            _ => Vec::new(),
        };
        let base = JobPlan {
            ref_,
            tag,
            source: source.to_owned(),
            runner: None,
            ..JobPlan::new(0, self.project.id, seq, "", "", &[(created, "created")])
        };
        let mut gate = Gate::Ready(created + rng.i64(200..3 * SEC));
        let mut order = 0;
        for (stage, names) in [("build", build), ("test", test), ("deploy", deploy)] {
            let mut outcomes = Vec::new();
            for (name, manual) in names {
                let tags: [&[&str]; 4] = [&["docker"], &["docker", "linux"], &["kubernetes"], &[]];
                let tag_list = tags[self.rng.usize(0..4)]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
                let mut job = JobPlan {
                    name,
                    stage: stage.to_owned(),
                    tag_list,
                    ..base.clone()
                };
                job.created_at_ms = created + Ms::from(order);
                job.timeline[0].0 = job.created_at_ms;
                match gate {
                    Gate::Never => {}
                    Gate::Blocked(at) => {
                        for step in blocked_steps(at, self.rng.u64(..)) {
                            job.timeline.push(step);
                        }
                    }
                    Gate::Ready(at) => {
                        outcomes.push(self.lifecycle(&mut job, at, manual, seq, order))
                    }
                }
                self.jobs
                    .push(((job.created_at_ms, self.project.id, seq, order), job));
                order += 1;
            }
            gate = match gate {
                Gate::Ready(_) if outcomes.iter().any(|g| matches!(g, Gate::Never)) => Gate::Never,
                Gate::Ready(_) => {
                    let last = outcomes.iter().filter_map(|g| match g {
                        Gate::Ready(t) | Gate::Blocked(t) => Some(*t),
                        Gate::Never => None,
                    });
                    let at = last.max().unwrap_or(created) + stage_delay(self.rng.u64(..));
                    if outcomes.iter().any(|g| matches!(g, Gate::Blocked(_))) {
                        Gate::Blocked(at)
                    } else {
                        Gate::Ready(at)
                    }
                }
                other => other,
            };
        }
    }

    /// Fills in `job` (ready to run at `ready`) and returns what it means for the next stage.
    fn lifecycle(
        &mut self,
        job: &mut JobPlan,
        ready: Ms,
        manual: bool,
        seq: u64,
        order: u32,
    ) -> Gate {
        let kind = pick(
            &mut self.rng,
            if manual {
                &MANUAL_KINDS[..]
            } else {
                &AUTO_KINDS[..]
            },
        );
        let rng = &mut self.rng;
        let mut tl: Vec<(Ms, &str)> = Vec::new();
        let mut at = ready;
        let mut step = |tl: &mut Vec<(Ms, &str)>, delay: Ms, status: &'static str| {
            at += delay.max(1);
            tl.push((at, status));
        };
        let q = queue_time(rng);
        let run = run_time(rng);
        let mut end = "success";
        match kind {
            Kind::Manual | Kind::ManualPlayed => {
                job.allow_failure = true; // `when: manual` jobs are allowed to fail by default
                step(&mut tl, 0, "manual");
                if kind == Kind::ManualPlayed {
                    step(&mut tl, rng.i64(MIN..30 * MIN), "pending");
                    end = if rng.u32(0..100) < 85 {
                        "success"
                    } else {
                        "failed"
                    };
                }
            }
            Kind::Scheduled => {
                step(&mut tl, 0, "scheduled");
                step(&mut tl, rng.i64(MIN..10 * MIN), "pending");
            }
            Kind::ViaResource => {
                let (wfr, prep) = [(true, false), (false, true), (true, true)][rng.usize(0..3)];
                if wfr {
                    step(&mut tl, 0, "waiting_for_resource");
                }
                if prep {
                    step(
                        &mut tl,
                        if wfr { rng.i64(SEC..3 * MIN) } else { 0 },
                        "preparing",
                    );
                }
                step(&mut tl, rng.i64(SEC..2 * MIN), "pending");
            }
            Kind::Unknown => {
                step(&mut tl, 0, "waiting_for_approval");
                step(&mut tl, rng.i64(MIN..20 * MIN), "pending");
            }
            Kind::Skip => step(&mut tl, 0, "skipped"),
            _ => step(&mut tl, 0, "pending"),
        }
        if matches!(kind, Kind::Fail | Kind::AllowFail | Kind::Retried) {
            end = "failed";
            job.allow_failure = kind == Kind::AllowFail;
        }
        if end == "failed" {
            let reason = match kind {
                Kind::Retried => ["script_failure", "runner_system_failure"][rng.usize(0..2)],
                _ => pick(rng, &FAILURE_REASONS),
            };
            job.failure_reason = Some(reason.to_owned());
        }
        let reason = job.failure_reason.as_deref();
        match kind {
            Kind::Skip | Kind::Manual => {}
            Kind::StuckPending => {}
            Kind::CancelPending => step(&mut tl, q, "canceled"),
            _ if reason == Some("stuck_or_timeout_failure") => {
                step(&mut tl, rng.i64(10 * MIN..60 * MIN), "failed")
            }
            _ => {
                step(&mut tl, q, "running");
                match kind {
                    Kind::CancelRunning => {
                        step(&mut tl, run / 2, "canceling");
                        step(&mut tl, rng.i64(SEC..30 * SEC), "canceled");
                    }
                    Kind::Callback => {
                        step(&mut tl, run, "waiting_for_callback");
                        step(&mut tl, rng.i64(5 * SEC..5 * MIN), "success");
                    }
                    _ if reason == Some("job_execution_timeout") => {
                        step(&mut tl, rng.i64(30 * MIN..60 * MIN), end)
                    }
                    _ => step(&mut tl, run, end),
                }
            }
        }
        self.finish(job, ready, tl);
        let mut outcome = gate_of(job, ready);
        if kind == Kind::Retried
            && let Some(failed_at) = job.completed_at(Ms::MAX)
        {
            outcome = self.retry(job, failed_at, seq, order);
        }
        outcome
    }

    /// The retry GitLab creates as a new job with the same name in the same pipeline.
    fn retry(&mut self, original: &JobPlan, failed_at: Ms, seq: u64, order: u32) -> Gate {
        let created = failed_at + self.rng.i64(2 * SEC..60 * SEC);
        let (job, gate) = self.retry_at(original, created, seq, order);
        let ok = job.timeline.last().is_some_and(|e| e.1 == "success");
        // Attempts are keyed 1000 apart; a chain stops at the fourth.
        if !ok && self.chains && order < 2000 && self.rng.bool() {
            let failed_at = job.completed_at(Ms::MAX).unwrap_or(created);
            return self.retry(&job, failed_at, seq, order + 1000);
        }
        gate
    }

    /// A retry of `original` created at `created` (passing 85 times in 100); the copy kept in
    /// the world and what it means for the next stage. The draws keep the order they had
    /// before retries could chain, so existing worlds are unchanged.
    fn retry_at(
        &mut self,
        original: &JobPlan,
        created: Ms,
        seq: u64,
        order: u32,
    ) -> (JobPlan, Gate) {
        let rng = &mut self.rng;
        let mut job = JobPlan {
            created_at_ms: created,
            timeline: vec![(created, "created".to_owned())],
            failure_reason: None,
            allow_failure: false,
            runner: None,
            ..original.clone()
        };
        let pending = created + rng.i64(100..2 * SEC);
        let running = pending + queue_time(rng);
        let ok = rng.u32(0..100) < 85;
        let done = running + run_time(rng).min(20 * MIN);
        let end = if ok { "success" } else { "failed" };
        if !ok {
            job.failure_reason = Some("script_failure".to_owned());
        }
        self.finish(
            &mut job,
            pending,
            vec![(pending, "pending"), (running, "running"), (done, end)],
        );
        let gate = gate_of(&job, pending);
        self.jobs
            .push(((created, self.project.id, seq, order + 1000), job.clone()));
        (job, gate)
    }

    /// [`WorldSpec::late_retries`]: failed jobs of the earliest pipelines, never retried,
    /// retried at `at` (plus up to 10 minutes), from a stream of their own.
    fn late_retries(&mut self, count: u32, at: Ms) {
        let mut candidates: Vec<((Ms, u64, u64, u32), JobPlan)> = (self.jobs.iter())
            .filter(|(_, j)| {
                j.timeline
                    .last()
                    .is_some_and(|e| e.1 == "failed" && e.0 < at)
                    && j.started_at(Ms::MAX).is_some()
            })
            .filter(|(k, j)| {
                !(self.jobs.iter()).any(|(o, p)| o.2 == k.2 && p.name == j.name && o.3 > k.3)
            })
            .cloned()
            .collect();
        candidates.sort_by_key(|c| c.0);
        candidates.dedup_by_key(|c| c.0.2);
        let saved = std::mem::replace(
            &mut self.rng,
            fastrand::Rng::with_seed(self.project.id ^ 0x1A7E_5EED),
        );
        for ((_, _, seq, order), job) in candidates.into_iter().take(count as usize) {
            let created = at + self.rng.i64(0..10 * MIN);
            self.retry_at(&job, created, seq, order.max(1) * 10);
        }
        self.rng = saved;
    }

    /// Appends `tl` to the job's timeline, squeezed to finish within [`MAX_LIFETIME`], and picks
    /// a runner if it ever runs.
    fn finish(&mut self, job: &mut JobPlan, ready: Ms, mut tl: Vec<(Ms, &str)>) {
        let deadline = job.created_at_ms + MAX_LIFETIME;
        if let Some(&(end, _)) = tl.last().filter(|e| is_final(e.1) && e.0 > deadline) {
            if ready + MIN < deadline {
                let scale = (deadline - ready) as f64 / (end - ready) as f64;
                let mut prev = ready;
                for e in tl.iter_mut().filter(|e| e.0 > ready) {
                    e.0 = (ready + ((e.0 - ready) as f64 * scale) as Ms)
                        .max(prev + 1)
                        .min(deadline);
                    prev = e.0;
                }
            } else {
                // The stage came too late to finish in time: it is skipped, as after a timeout.
                tl = vec![(ready, "skipped")];
                job.failure_reason = None;
            }
        }
        if tl.iter().any(|e| e.1 == "running") {
            let rng = &mut self.rng;
            let project = self.project.id;
            job.runner = Some(match rng.u32(0..10) {
                0..7 => RunnerDef::instance(rng.u64(1..=4)),
                7..9 => RunnerDef::new(rng.u64(11..=12), "group-runner", "group_type"),
                _ => RunnerDef::new(100 + project % 50, "project-runner", "project_type"),
            });
        } else {
            job.runner = None;
        }
        job.timeline
            .extend(tl.into_iter().map(|(t, s)| (t, s.to_owned())));
    }
}

/// Maps `roll` (one draw) into `lo..hi`, log-uniformly.
fn log_scale(roll: u64, lo: Ms, hi: Ms) -> Ms {
    let frac = (roll % 10_000) as f64 / 10_000.0;
    let (lo, hi) = ((lo as f64).ln(), (hi as f64).ln());
    (lo + frac * (hi - lo)).exp() as Ms
}

/// What a job whose stage is blocked (by a failure before it) goes through from `at`, the
/// moment GitLab processes the pipeline: usually skipped within half a second, but one in four
/// moves alone, 2 s to 3 min later (Sidekiq lagging, `when: on_success` jobs of a later stage
/// processed on their own), a third of those through `waiting_for_resource` (a resource
/// group). One draw, `roll`, decides it all.
fn blocked_steps(at: Ms, roll: u64) -> Vec<(Ms, String)> {
    let late = log_scale(roll >> 8, 2 * SEC, 3 * MIN);
    match roll % 12 {
        0 | 1 => vec![(at + late, "skipped".to_owned())],
        2 => vec![
            (at + late / 2, "waiting_for_resource".to_owned()),
            (at + late, "skipped".to_owned()),
        ],
        _ => vec![(at + 50 + (roll >> 8) as Ms % 450, "skipped".to_owned())],
    }
}

/// How long after the previous stage ended the next one starts: usually within 2 s, but one
/// time in ten 2 s to 2 min later, its `created` jobs moving long after everything else in
/// the pipeline settled. One draw, `roll`.
fn stage_delay(roll: u64) -> Ms {
    if roll.is_multiple_of(10) {
        log_scale(roll >> 8, 2 * SEC, 2 * MIN)
    } else {
        100 + (roll >> 8) as Ms % (2 * SEC - 100)
    }
}

fn gate_of(job: &JobPlan, ready: Ms) -> Gate {
    let last = job.timeline.last().map(|e| (e.0, e.1.as_str()));
    match last {
        Some((at, "success" | "skipped")) => Gate::Ready(at),
        Some((at, "failed" | "canceled")) if job.allow_failure => Gate::Ready(at),
        Some((at, "failed" | "canceled")) => Gate::Blocked(at),
        _ if job.allow_failure => Gate::Ready(ready),
        _ => Gate::Never,
    }
}

impl World {
    /// A deterministic history for `spec`: the same seed always gives the same world.
    pub fn generate(spec: &WorldSpec, seed: u64) -> World {
        let mut jobs = Vec::new();
        let mut pipelines = Vec::new();
        for project in &spec.projects {
            // One stream per project, so adding a project leaves the others unchanged.
            let rng =
                fastrand::Rng::with_seed(seed ^ project.id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut g = Gen {
                rng,
                project,
                pipeline_seq: 1,
                tag_seq: 0,
                jobs: Vec::new(),
                pipelines: Vec::new(),
                chains: spec.retry_chains,
            };
            let per_ms = project.pipelines_per_hour.max(0.0) / 3_600_000.0;
            let mut t = spec.start_ms as f64;
            while per_ms > 0.0 && per_ms.is_finite() {
                t += -(1.0 - g.rng.f64()).ln() / per_ms;
                if t > spec.end_ms as f64 {
                    break;
                }
                g.pipeline(t as Ms);
            }
            if spec.late_retries > 0 {
                g.late_retries(
                    spec.late_retries,
                    spec.late_retry_at_ms.unwrap_or(spec.end_ms),
                );
            }
            jobs.append(&mut g.jobs);
            pipelines.append(&mut g.pipelines);
        }
        // Ids come from one instance-wide sequence in creation order.
        pipelines.sort_unstable();
        let pipeline_ids: std::collections::HashMap<(u64, u64), u64> =
            (pipelines.iter().enumerate())
                .map(|(i, p)| ((p.1, p.2), spec.first_pipeline_id + i as u64))
                .collect();
        jobs.sort_unstable_by_key(|j| j.0);
        let jobs = (jobs.into_iter().enumerate())
            .map(|(i, (_, mut job))| {
                job.id = spec.first_job_id + i as u64;
                // The iid was stored in `pipeline_id` while generating.
                job.pipeline_iid = job.pipeline_id;
                job.pipeline_id = pipeline_ids
                    .get(&(job.project_id, job.pipeline_iid))
                    .copied()
                    .unwrap_or(0);
                job
            })
            .collect();
        let projects = spec
            .projects
            .iter()
            .map(|p| ProjectDef::new(p.id, &p.path))
            .collect();
        let mut world = World::from_valid(projects, jobs);
        world.logs_mut().seed = seed;
        world
    }

    /// A lively world for `--demo`: a few projects in subgroups, history from two hours ago to
    /// two days ahead.
    pub fn demo(now_ms: Ms) -> World {
        let projects = [
            (101, "acme/platform/api", 12.0),
            (102, "acme/platform/worker", 5.0),
            (103, "acme/web/frontend", 9.0),
            (104, "acme/web/docs", 1.5),
            (105, "acme/infra/terraform", 0.7),
        ];
        let projects = projects
            .iter()
            .map(|&(id, path, rate)| ProjectSpec {
                id,
                path: path.to_owned(),
                pipelines_per_hour: rate,
            })
            .collect();
        // Retries of retries, and of a pipeline from before the exporter started (the demo's
        // history starts two hours back): flaky jobs on the dashboard.
        let mut spec =
            WorldSpec::new(projects, now_ms - 2 * 60 * MIN, now_ms + 48 * 60 * MIN).with_retries(1);
        spec.late_retry_at_ms = Some(now_ms + 20 * MIN);
        World::generate(&spec, 7)
    }
}
