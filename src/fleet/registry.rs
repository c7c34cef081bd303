//! Which discovered projects are watched, as data. A discovery pass is reconciled with what is
//! watched by a pure function ([`reconcile`]: no I/O, no clock, no tokio), so every rule of
//! adding, retiring and forgetting projects is unit-tested on its own; the runner carries the
//! resulting [`Changes`] out (spawns and stops tasks, moves series) and records them with
//! [`Registry::apply`].
//!
//! Configured projects are not in the registry: they are watched for as long as they are
//! configured, and discovery leaves them (and anything another shard owns) alone.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::fleet::discovery::{Found, Pass};
use crate::model::ProjectId;

/// A discovered project as the registry knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The path discovery last listed it under.
    pub path: String,
    /// The discovery sources that listed it last (empty: not known, e.g. restored).
    pub sources: BTreeSet<usize>,
    pub state: EntryState,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EntryState {
    /// Watched. `ended`: its task stopped (its jobs answered 404, or another shard owns it).
    Live { ended: bool },
    /// No longer listed since `since` (unix seconds): not polled, series kept for the grace
    /// period.
    Retired { since: f64 },
}

/// The discovered projects, by id, and what discovery must leave alone.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: BTreeMap<ProjectId, Entry>,
    /// Configured projects' ids and lower-cased paths: left to their configuration entries.
    configured_ids: HashSet<ProjectId>,
    configured_paths: HashSet<String>,
    /// (this replica's shard, shard count).
    shard: (u32, u32),
    /// Seconds a retired project's series are kept.
    grace: f64,
}

/// What one pass changes; `reconcile` decides, the runner carries it out, `apply` records it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Never seen before: watched from the backfill window.
    pub added: Vec<Found>,
    /// Retired, listed again: polling resumes where it stopped (see `renamed` for its path).
    pub revived: Vec<ProjectId>,
    /// Live but ended (its jobs answered 404), listed again: tried again.
    pub restarted: Vec<ProjectId>,
    /// Listed under another path than before (renamed or transferred; revived ones included).
    pub renamed: Vec<(ProjectId, String)>,
    /// Live, no longer listed by a source that answered: stopped, series kept.
    pub retired: Vec<ProjectId>,
    /// Retired for the grace period: forgotten.
    pub expired: Vec<ProjectId>,
    /// The sources that listed each listed, watched project this pass.
    pub sources: Vec<(ProjectId, BTreeSet<usize>)>,
    /// How many listed projects are this replica's to watch (configured ones and other
    /// shards' left out).
    pub listed: usize,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.revived.is_empty()
            && self.restarted.is_empty()
            && self.renamed.is_empty()
            && self.retired.is_empty()
            && self.expired.is_empty()
    }
}

impl Registry {
    pub fn new(
        configured_ids: HashSet<ProjectId>,
        configured_paths: impl IntoIterator<Item = String>,
        shard: (u32, u32),
        grace: f64,
    ) -> Self {
        Self {
            entries: BTreeMap::new(),
            configured_ids,
            configured_paths: configured_paths
                .into_iter()
                .map(|p| p.to_lowercase())
                .collect(),
            shard,
            grace,
        }
    }

    pub fn get(&self, id: ProjectId) -> Option<&Entry> {
        self.entries.get(&id)
    }

    pub fn entries(&self) -> impl Iterator<Item = (ProjectId, &Entry)> {
        self.entries.iter().map(|(id, e)| (*id, e))
    }

    /// A project restored from a checkpoint (or known otherwise) enters as it was.
    pub fn insert(&mut self, id: ProjectId, entry: Entry) {
        self.entries.insert(id, entry);
    }

    /// A configured project's id, learnt at its first lookup: discovery leaves it alone from
    /// now on (a discovered entry under that id is retired by the next complete pass).
    pub fn add_configured_id(&mut self, id: ProjectId) {
        self.configured_ids.insert(id);
    }

    /// Whether a project (id and path) is a configured one's, which discovery leaves alone.
    pub fn is_configured(&self, id: ProjectId, path: &str) -> bool {
        self.configured_ids.contains(&id) || self.configured_paths.contains(&path.to_lowercase())
    }

    /// Configured projects' paths, lower-cased.
    pub fn configured_paths(&self) -> &HashSet<String> {
        &self.configured_paths
    }

    /// The poller kept `path` (a rename it refused): the entry says so again, so a later pass
    /// that still lists the project under the new path tries the rename again.
    pub fn keep_path(&mut self, id: ProjectId, path: &str) {
        if let Some(e) = self.entries.get_mut(&id) {
            path.clone_into(&mut e.path);
        }
    }

    /// Its task stopped (404, another shard's): a later pass listing it tries again.
    pub fn mark_ended(&mut self, id: ProjectId) {
        if let Some(Entry {
            state: EntryState::Live { ended },
            ..
        }) = self.entries.get_mut(&id)
        {
            *ended = true;
        }
    }

    /// Records changes `reconcile` returned (after the runner carried them out).
    pub fn apply(&mut self, changes: &Changes, now: f64) {
        for found in &changes.added {
            self.entries.insert(
                found.id,
                Entry {
                    path: found.path.clone(),
                    sources: found.sources.clone(),
                    state: EntryState::Live { ended: false },
                },
            );
        }
        for id in changes.revived.iter().chain(&changes.restarted) {
            if let Some(e) = self.entries.get_mut(id) {
                e.state = EntryState::Live { ended: false };
            }
        }
        for (id, path) in &changes.renamed {
            if let Some(e) = self.entries.get_mut(id) {
                e.path.clone_from(path);
            }
        }
        for (id, sources) in &changes.sources {
            if let Some(e) = self.entries.get_mut(id) {
                e.sources.clone_from(sources);
            }
        }
        for id in &changes.retired {
            if let Some(e) = self.entries.get_mut(id) {
                e.state = EntryState::Retired { since: now };
            }
        }
        for id in &changes.expired {
            self.entries.remove(id);
        }
    }

    /// Whether discovery watches this listed project here (not configured, this shard's).
    fn mine(&self, found: &Found) -> bool {
        !self.is_configured(found.id, &found.path)
            && crate::shard::owner(found.id, self.shard.1) == self.shard.0
    }
}

/// What `pass` (a discovery pass finished at `now`, unix seconds) changes in `current`.
///
/// A project no longer listed is retired only when every source that listed it answered (all
/// of them, when that is not known): a GitLab hiccup or one broken `[[groups]]` entry never
/// drops a project. A retired project is forgotten after the grace period (in the same pass,
/// when there is none: its series go at once).
pub fn reconcile(current: &Registry, pass: &Pass, now: f64) -> Changes {
    let listed: BTreeMap<ProjectId, &Found> = pass
        .projects
        .iter()
        .filter(|(_, f)| current.mine(f))
        .map(|(id, f)| (*id, f))
        .collect();
    let mut changes = Changes {
        listed: listed.len(),
        ..Changes::default()
    };
    for (id, found) in &listed {
        match current.entries.get(id) {
            None => changes.added.push((*found).clone()),
            Some(entry) => {
                match entry.state {
                    EntryState::Retired { .. } => changes.revived.push(*id),
                    EntryState::Live { ended: true } => changes.restarted.push(*id),
                    EntryState::Live { ended: false } => {}
                }
                if entry.path != found.path {
                    changes.renamed.push((*id, found.path.clone()));
                }
                if entry.sources != found.sources {
                    changes.sources.push((*id, found.sources.clone()));
                }
            }
        }
    }
    for (id, entry) in &current.entries {
        match entry.state {
            EntryState::Live { .. } if !listed.contains_key(id) => {
                let answered = pass.complete
                    || (!entry.sources.is_empty()
                        && entry.sources.iter().all(|s| !pass.failed.contains(s)));
                if answered {
                    changes.retired.push(*id);
                    // `now - now`: no grace period at all.
                    if current.grace <= 0.0 {
                        changes.expired.push(*id);
                    }
                }
            }
            EntryState::Retired { since }
                if !listed.contains_key(id) && now - since >= current.grace =>
            {
                changes.expired.push(*id);
            }
            _ => {}
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: f64 = 3600.0;

    fn found(id: u64, path: &str, sources: &[usize]) -> Found {
        Found {
            id,
            path: path.to_string(),
            default_branch: None,
            sources: sources.iter().copied().collect(),
        }
    }

    fn pass(projects: &[Found], failed: &[usize]) -> Pass {
        Pass {
            projects: projects.iter().map(|f| (f.id, f.clone())).collect(),
            complete: failed.is_empty(),
            failed: failed.iter().copied().collect(),
            ..Pass::default()
        }
    }

    fn registry() -> Registry {
        Registry::new(
            HashSet::from([7]),
            ["Conf/Igured".to_string()],
            (0, 1),
            GRACE,
        )
    }

    /// Reconciles and records, as the runner does.
    fn step(r: &mut Registry, p: &Pass, now: f64) -> Changes {
        let changes = reconcile(r, p, now);
        r.apply(&changes, now);
        changes
    }

    #[test]
    fn new_projects_are_added_once() {
        let mut r = registry();
        let p = pass(&[found(1, "g/a", &[0]), found(2, "g/b", &[0])], &[]);
        let c = step(&mut r, &p, 0.0);
        assert_eq!(c.added.iter().map(|f| f.id).collect::<Vec<_>>(), [1, 2]);
        assert!(step(&mut r, &p, 10.0).is_empty());
    }

    #[test]
    fn configured_and_other_shards_projects_are_left_alone() {
        let mut r = registry();
        let p = pass(
            &[found(7, "g/by-id", &[0]), found(8, "conf/IGURED", &[0])],
            &[],
        );
        assert!(step(&mut r, &p, 0.0).is_empty());
        let mut sharded = Registry::new(HashSet::new(), [], (0, 2), GRACE);
        let projects: Vec<Found> = (1..=20)
            .map(|i| found(i, &format!("g/{i}"), &[0]))
            .collect();
        let c = step(&mut sharded, &pass(&projects, &[]), 0.0);
        assert!(c.added.iter().all(|f| crate::shard::owner(f.id, 2) == 0));
        assert!(!c.added.is_empty() && c.added.len() < 20);
    }

    #[test]
    fn a_project_missing_from_a_complete_pass_is_retired_then_expires() {
        let mut r = registry();
        step(&mut r, &pass(&[found(1, "g/a", &[0])], &[]), 0.0);
        let c = step(&mut r, &pass(&[], &[]), 100.0);
        assert_eq!(c.retired, [1]);
        assert_eq!(
            r.get(1).map(|e| e.state),
            Some(EntryState::Retired { since: 100.0 })
        );
        assert!(step(&mut r, &pass(&[], &[]), 100.0 + GRACE - 1.0).is_empty());
        assert_eq!(step(&mut r, &pass(&[], &[]), 100.0 + GRACE).expired, [1]);
        assert!(r.get(1).is_none());
    }

    #[test]
    fn without_a_grace_period_a_retired_project_is_forgotten_in_the_same_pass() {
        let mut r = Registry::new(HashSet::new(), [], (0, 1), 0.0);
        step(&mut r, &pass(&[found(1, "g/a", &[0])], &[]), 0.0);
        let c = step(&mut r, &pass(&[], &[]), 10.0);
        assert_eq!(
            (c.retired.as_slice(), c.expired.as_slice()),
            (&[1][..], &[1][..])
        );
        assert!(r.get(1).is_none());
    }

    #[test]
    fn listed_counts_only_this_replicas_projects() {
        let mut r = registry();
        let p = pass(
            &[
                found(1, "g/a", &[0]),
                found(7, "g/b", &[0]),
                found(8, "conf/igured", &[0]),
            ],
            &[],
        );
        assert_eq!(step(&mut r, &p, 0.0).listed, 1);
        // A configured project's id learnt later: its discovered entry retires.
        r.add_configured_id(1);
        let c = step(&mut r, &p, 10.0);
        assert_eq!((c.listed, c.retired.as_slice()), (0, &[1][..]));
    }

    #[test]
    fn a_failed_source_keeps_what_it_listed() {
        let mut r = registry();
        step(
            &mut r,
            &pass(&[found(1, "g/a", &[0]), found(2, "h/b", &[1])], &[]),
            0.0,
        );
        // Source 1 failed: project 2 (listed by it) stays; project 1's source answered.
        let c = step(&mut r, &pass(&[], &[1]), 10.0);
        assert_eq!(c.retired, [1]);
        // Sources not known (restored): only a complete pass retires it.
        r.insert(
            3,
            Entry {
                path: "x/c".into(),
                sources: BTreeSet::new(),
                state: EntryState::Live { ended: false },
            },
        );
        assert!(!step(&mut r, &pass(&[], &[1]), 20.0).retired.contains(&3));
        assert!(step(&mut r, &pass(&[], &[]), 30.0).retired.contains(&3));
    }

    #[test]
    fn a_retired_project_listed_again_is_revived_under_its_new_path() {
        let mut r = registry();
        step(&mut r, &pass(&[found(1, "g/a", &[0])], &[]), 0.0);
        step(&mut r, &pass(&[], &[]), 10.0);
        let c = step(&mut r, &pass(&[found(1, "h/a", &[0])], &[]), 20.0);
        assert_eq!(c.revived, [1]);
        assert_eq!(c.renamed, [(1, "h/a".to_string())]);
        assert_eq!(
            r.get(1).map(|e| e.state),
            Some(EntryState::Live { ended: false })
        );
        assert_eq!(r.get(1).map(|e| e.path.as_str()), Some("h/a"));
    }

    #[test]
    fn a_live_project_renamed_moves_and_its_sources_follow() {
        let mut r = registry();
        step(&mut r, &pass(&[found(1, "g/a", &[0])], &[]), 0.0);
        let c = step(&mut r, &pass(&[found(1, "g/b", &[0, 1])], &[]), 10.0);
        assert_eq!(c.renamed, [(1, "g/b".to_string())]);
        assert!(c.added.is_empty() && c.revived.is_empty());
        assert_eq!(r.get(1).map(|e| e.sources.len()), Some(2));
    }

    #[test]
    fn an_ended_project_still_listed_is_restarted() {
        let mut r = registry();
        step(&mut r, &pass(&[found(1, "g/a", &[0])], &[]), 0.0);
        r.mark_ended(1);
        let c = step(&mut r, &pass(&[found(1, "g/a", &[0])], &[]), 10.0);
        assert_eq!(c.restarted, [1]);
        assert!(step(&mut r, &pass(&[found(1, "g/a", &[0])], &[]), 20.0).is_empty());
    }

    #[test]
    fn reconcile_changes_nothing_itself() {
        let mut r = registry();
        step(&mut r, &pass(&[found(1, "g/a", &[0])], &[]), 0.0);
        let before = r.clone();
        let c = reconcile(&r, &pass(&[found(2, "g/b", &[0])], &[]), 10.0);
        assert_eq!(c.added.len(), 1);
        assert_eq!(c.retired, [1]);
        assert_eq!(r.entries().count(), before.entries().count());
        assert_eq!(r.get(1), before.get(1));
    }
}
