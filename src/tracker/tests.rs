use super::*;

fn job(id: u64, status: &str) -> Job {
    let mut j: Job = serde_json::from_value(serde_json::json!({
        "id": 1, "status": status, "stage": "test", "name": "rspec", "ref": "main",
        "created_at": "2026-01-01T10:00:00.000Z",
    }))
    .unwrap();
    // Set afterwards: the tracker must hold for any id, even those decoding refuses.
    j.id = id;
    j
}

fn started(mut j: Job, queued: f64, duration: f64) -> Job {
    j.started_at = j.created_at;
    j.queued_duration = Some(queued);
    j.duration = Some(duration);
    j
}

fn finished(mut j: Job) -> Job {
    j.finished_at = j.created_at;
    j
}

fn count_completed(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Completed { .. }))
        .count()
}

#[test]
fn counts_once_across_repeats_and_transitions() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    t.observe(&job(10, "pending"), 0.0, &mut ev);
    t.observe(&started(job(10, "running"), 4.0, 1.0), 0.0, &mut ev);
    t.observe(&started(job(10, "running"), 4.0, 2.0), 0.0, &mut ev);
    let done = finished(started(job(10, "success"), 4.0, 9.0));
    t.observe(&done, 0.0, &mut ev);
    t.observe(&done, 0.0, &mut ev);
    t.complete_cycle(Some(10), Some(10));
    t.observe(&done, 0.0, &mut ev);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(
        ev[0],
        Event::Started {
            labels: JobLabels::of(&done),
            queued_duration: 4.0
        }
    );
    assert!(
        matches!(&ev[1], Event::Completed { duration: Some(d), status: JobStatus::Success, .. } if *d == 9.0)
    );
    assert_eq!(t.followed_len(), 0);
}

#[test]
fn runner_seen_after_the_job_was_first_followed_labels_its_events() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    t.observe(&job(11, "pending"), 0.0, &mut ev);
    let mut running = started(job(11, "running"), 2.0, 1.0);
    let runner = crate::model::JobRunner {
        description: "docker-3".into(),
        runner_type: "project_type".into(),
    };
    running.runner = Some(runner.clone());
    t.observe(&running, 0.0, &mut ev);
    // A later snapshot without the runner (a mangled one) does not erase it.
    let mut done = finished(started(job(11, "success"), 2.0, 5.0));
    done.runner = None;
    t.observe(&done, 0.0, &mut ev);
    assert_eq!(ev.len(), 2);
    for e in &ev {
        let (Event::Started { labels, .. }
        | Event::Completed { labels, .. }
        | Event::Flaky { labels }) = e;
        assert_eq!(labels.runner.as_ref(), Some(&runner), "{e:?}");
    }
}

#[test]
fn canceled_while_pending_observes_no_duration() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    let mut j = finished(job(5, "canceled"));
    j.queued_duration = Some(1000.0); // keeps growing in GitLab: meaningless
    t.observe(&j, 0.0, &mut ev);
    assert_eq!(
        ev,
        vec![Event::Completed {
            labels: JobLabels::of(&j),
            status: JobStatus::Canceled,
            failure_reason: String::new(),
            duration: None,
            finished_at: j.finished_at.map(secs),
        }]
    );
}

#[test]
fn failure_reason_defaults_and_unknown_status_is_followed() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    t.observe(&job(7, "waiting_for_approval"), 0.0, &mut ev);
    assert!(ev.is_empty());
    assert_eq!(
        t.active_counts()
            .get(&JobStatus::Unknown("waiting_for_approval".into())),
        Some(&1)
    );
    t.observe(&finished(job(7, "failed")), 0.0, &mut ev);
    assert!(
        matches!(&ev[0], Event::Completed { failure_reason, .. } if failure_reason == "unknown_failure")
    );
}

#[test]
fn backfill_ignores_jobs_finished_before_cutoff() {
    let mut t = Tracker::new();
    let now = secs(parse("2026-01-01T12:00:00Z"));
    let cutoff = t.begin_first_cycle(now, 3600.0);
    assert_eq!(cutoff, now - 3600.0);
    // A retried first cycle keeps its cutoff.
    assert_eq!(t.begin_first_cycle(now + 50.0, 3600.0), cutoff);
    let mut ev = Vec::new();
    let mut old = finished(started(job(1, "success"), 1.0, 1.0));
    old.finished_at = Some(parse("2026-01-01T10:30:00Z"));
    let mut recent = finished(started(job(2, "success"), 1.0, 1.0));
    recent.finished_at = Some(parse("2026-01-01T11:30:00Z"));
    t.observe(&old, now, &mut ev);
    t.observe(&recent, now, &mut ev);
    assert_eq!(count_completed(&ev), 1);
    assert!(t.wants_page_after(&[recent.clone(), old.clone()]));
    t.complete_cycle(Some(1), Some(2));
    // After the first cycle there is no cutoff: a late job finished long ago still counts.
    let mut late = old.clone();
    late.id = 3;
    t.observe(&late, now, &mut ev);
    assert_eq!(count_completed(&ev), 2);
}

#[test]
fn paging_stops_at_high_water() {
    let mut t = Tracker::new();
    t.complete_cycle(Some(90), Some(100));
    assert!(t.wants_page_after(&[job(150, "success"), job(101, "success")]));
    assert!(!t.wants_page_after(&[job(150, "success"), job(100, "success")]));
    assert!(!t.wants_page_after(&[]));
}

#[test]
fn ids_below_floor_are_history_and_reset_jobs_are_not_recounted() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    t.observe(&finished(job(50, "skipped")), 0.0, &mut ev);
    t.complete_cycle(Some(50), Some(50));
    t.observe(&finished(job(40, "success")), 0.0, &mut ev);
    assert_eq!(count_completed(&ev), 1, "below the floor: history");
    // Skipped job 50 reset to created, then succeeds: shown active, not counted again.
    t.observe(&job(50, "created"), 0.0, &mut ev);
    assert_eq!(t.active_counts().get(&JobStatus::Created), Some(&1));
    t.observe(&finished(job(50, "success")), 0.0, &mut ev);
    assert_eq!(count_completed(&ev), 1);
    assert_eq!(t.followed_len(), 0);
}

#[test]
fn late_committed_job_below_high_water_is_counted() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    t.observe(&finished(job(100, "success")), 0.0, &mut ev);
    t.observe(&finished(job(90, "success")), 0.0, &mut ev);
    t.complete_cycle(Some(90), Some(100));
    t.observe(&finished(job(95, "success")), 0.0, &mut ev);
    t.observe(&finished(job(95, "success")), 0.0, &mut ev);
    assert_eq!(count_completed(&ev), 3);
}

#[test]
fn done_set_is_bounded() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    t.complete_cycle(Some(1), Some(1));
    for id in 2..(DONE_KEEP as u64 + 500) {
        t.observe(&finished(job(id, "success")), 0.0, &mut ev);
    }
    t.complete_cycle(Some(2), Some(DONE_KEEP as u64 + 499));
    assert_eq!(t.done.len(), DONE_KEEP);
    let before = ev.len();
    t.observe(&finished(job(3, "success")), 0.0, &mut ev);
    assert_eq!(ev.len(), before);
}

#[test]
fn folding_the_highest_possible_id_into_floor_does_not_overflow() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    t.complete_cycle(Some(1), Some(1));
    // Every done id but u64::MAX is inside an unread gap: that one would be folded first.
    t.set_gaps(vec![Gap {
        top: DONE_KEEP as u64 + 10,
        bottom: 1,
        next: None,
        pages: 0,
    }]);
    for id in (2..DONE_KEEP as u64 + 3).chain([u64::MAX]) {
        t.observe(&finished(job(id, "success")), 0.0, &mut ev);
    }
    t.complete_cycle(None, Some(u64::MAX));
    let before = ev.len();
    t.observe(&finished(job(u64::MAX, "success")), 0.0, &mut ev);
    assert_eq!(ev.len(), before, "still handled");
}

#[test]
fn ids_in_an_unread_gap_count_once_whatever_floor_does() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    t.complete_cycle(Some(10), Some(10));
    // A capped cycle read 20_000..=26_000 and left 11..20_000 unread.
    for id in 20_000..=26_000 {
        t.observe(&finished(job(id, "success")), 0.0, &mut ev);
    }
    // A deep listing showed one job inside the gap, which then completed.
    t.observe(&job(15_001, "running"), 0.0, &mut ev);
    t.observe(&finished(job(15_001, "success")), 0.0, &mut ev);
    t.set_gaps(vec![Gap {
        top: 20_000,
        bottom: 10,
        next: Some("projects/1/jobs?cursor=x".into()),
        pages: 0,
    }]);
    t.complete_cycle(Some(20_000), Some(26_000));
    assert!(t.floor > 20_000, "done folded into floor: {}", t.floor);
    assert!(t.done.contains(&15_001), "a gap id is not folded");
    let counted = count_completed(&ev);
    // The catch-up reads the gap: unread ids count, the one seen before does not.
    t.observe(&finished(job(15_000, "failed")), 0.0, &mut ev);
    t.observe(&finished(job(15_001, "success")), 0.0, &mut ev);
    t.observe(&finished(job(15_000, "failed")), 0.0, &mut ev);
    assert_eq!(count_completed(&ev), counted + 1);
    // Below the gap is history as before.
    t.observe(&finished(job(9, "success")), 0.0, &mut ev);
    assert_eq!(count_completed(&ev), counted + 1);
    // Closed, the gap's ids fold like any other.
    t.set_gaps(Vec::new());
    t.complete_cycle(Some(20_000), Some(26_000));
    assert_eq!(t.done.len(), DONE_KEEP);
    t.observe(&finished(job(15_001, "success")), 0.0, &mut ev);
    assert_eq!(count_completed(&ev), counted + 1);
}

#[test]
fn trackers_saved_before_gaps_and_settling_load() {
    let mut t = Tracker::new();
    t.set_gaps(vec![Gap {
        top: 50,
        bottom: 10,
        next: None,
        pages: 2,
    }]);
    t.settling_mut().insert(
        7,
        Settling {
            since: 1.0,
            next_check: 2.0,
            last_check: 1.0,
        },
    );
    let mut json = serde_json::to_value(&t).unwrap();
    let back: Tracker = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, t);
    let obj = json.as_object_mut().unwrap();
    obj.remove("gaps");
    obj.remove("settling");
    let old: Tracker = serde_json::from_value(json).unwrap();
    assert_eq!(old, Tracker::new());
    // Nothing to write when there is nothing: checkpoints stay as they were.
    let empty = serde_json::to_value(Tracker::new()).unwrap();
    assert!(empty.get("gaps").is_none() && empty.get("settling").is_none());
}

#[test]
fn known_ids_between_two_ids() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    t.observe(&finished(job(100, "success")), 0.0, &mut ev);
    t.observe(&job(105, "running"), 0.0, &mut ev);
    t.observe(&finished(job(110, "success")), 0.0, &mut ev);
    t.complete_cycle(Some(100), Some(110));
    assert_eq!(t.known_between(100, 110), Some(2));
    assert_eq!(t.known_between(101, 111), Some(2));
    assert_eq!(t.known_between(110, 100), Some(0));
    assert_eq!(t.known_between(50, 110), None, "below floor: unknown");
}

#[test]
fn oldest_pending_uses_server_clock() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    let mut a = job(1, "pending");
    a.queued_duration = Some(30.0);
    let mut b = job(2, "pending");
    b.queued_duration = Some(10.0);
    t.observe(&a, 1000.0, &mut ev);
    t.observe(&b, 1000.0, &mut ev);
    assert_eq!(t.oldest_pending_since(), Some(970.0));
    t.observe(&started(job(1, "running"), 31.0, 0.0), 1001.0, &mut ev);
    assert_eq!(t.oldest_pending_since(), Some(990.0));
}

fn parse(s: &str) -> DateTime<Utc> {
    crate::model::parse_time(s).unwrap()
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A job's life: statuses it passes through; the last may be final.
    fn lifecycle() -> impl Strategy<Value = Vec<&'static str>> {
        prop_oneof![
            Just(vec!["created", "pending", "running", "success"]),
            Just(vec!["pending", "running", "failed"]),
            Just(vec!["pending", "canceled"]),
            Just(vec!["created", "skipped"]),
            Just(vec!["manual"]),
            Just(vec!["manual", "pending", "running", "success"]),
            Just(vec!["waiting_for_approval", "running", "success"]),
            Just(vec!["pending", "running", "canceling", "canceled"]),
            Just(vec!["running"]),
        ]
    }

    fn snapshot(id: u64, status: &str) -> Job {
        let mut j = job(id, status);
        if matches!(status, "running" | "success" | "failed" | "canceling")
            || (status == "canceled" && id.is_multiple_of(2))
        {
            j = started(j, 3.0, 7.0);
        }
        if JobStatus::from(status.to_string()).is_final() {
            j = finished(j);
        }
        j
    }

    proptest! {
        /// Whatever order, repetition and overlap the snapshots come in, each job completes
        /// once (if it ever is seen final) and starts once (if it ever is seen started).
        #[test]
        fn each_job_counted_once(
            lives in proptest::collection::vec(lifecycle(), 1..40),
            schedule in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..4, any::<bool>()), 1..300),
        ) {
            let mut t = Tracker::new();
            let mut events = Vec::new();
            let mut progress = vec![0usize; lives.len()];
            let mut seen_final = vec![false; lives.len()];
            let mut seen_started = vec![false; lives.len()];
            let mut observed = vec![false; lives.len()];
            for (pick, advance, end_cycle) in schedule {
                let i = pick.index(lives.len());
                progress[i] = (progress[i] + advance).min(lives[i].len() - 1);
                let status = lives[i][progress[i]];
                let snap = snapshot(1000 + i as u64, status);
                seen_final[i] |= snap.status.is_final();
                seen_started[i] |= snap.has_started();
                observed[i] = true;
                t.observe(&snap, 0.0, &mut events);
                if end_cycle {
                    t.complete_cycle(Some(1000), Some(1000 + lives.len() as u64));
                }
            }
            let starts = events.iter().filter(|e| matches!(e, Event::Started { .. })).count();
            let completed = events.iter().filter(|e| matches!(e, Event::Completed { .. })).count();
            prop_assert_eq!(completed, seen_final.iter().filter(|f| **f).count());
            prop_assert_eq!(starts, seen_started.iter().filter(|s| **s).count());
            for (i, f) in seen_final.iter().enumerate() {
                prop_assert_eq!(t.is_followed(1000 + i as u64), observed[i] && !f);
            }
        }
    }

    /// One step of a hook/poll history: what happens at a moment.
    #[derive(Debug, Clone)]
    enum Step {
        /// A hook with job `i`'s status number `k` arrives.
        Hook(usize, usize),
        /// A poll cycle starts reading: it sees every job as of now.
        Read,
        /// The cycle's pages (read at its start) are applied, and the cycle ends.
        Apply,
    }

    proptest! {
        /// Hooks dropped, repeated and reordered, interleaved with poll cycles whose pages are
        /// older than hooks applied during them: after one reconciliation poll, every job is
        /// counted once and the active jobs are exactly the unfinished ones.
        #[test]
        fn hooks_in_any_order_give_the_truth_after_one_reconciliation(
            lives in proptest::collection::vec(lifecycle(), 1..25),
            fates in proptest::collection::vec((0u8..10, 0u64..2000), 100),
            polls in proptest::collection::vec((0u64..4000, 0u64..300), 0..6),
        ) {
            // Job i's status k happens at time 100*k + 7*i; its hook arrives after a delay,
            // or never (30%), or twice (15%).
            let mut timeline: Vec<(u64, u32, Step)> = Vec::new();
            let mut n = 0;
            for (i, life) in lives.iter().enumerate() {
                for k in 0..life.len() {
                    let (fate, delay) = fates[n % fates.len()];
                    n += 1;
                    let at = 100 * k as u64 + 7 * i as u64;
                    if fate >= 3 {
                        timeline.push((at + delay, 1, Step::Hook(i, k)));
                    }
                    if fate >= 8 {
                        timeline.push((at + delay / 2 + 1, 1, Step::Hook(i, k)));
                    }
                }
            }
            for (read, lag) in &polls {
                timeline.push((*read, 0, Step::Read));
                timeline.push((read + lag, 2, Step::Apply));
            }
            timeline.sort_by_key(|(t, order, _)| (*t, *order));
            let truth = |i: usize, t: u64| -> Option<usize> {
                (0..lives[i].len()).rev().find(|k| 100 * *k as u64 + 7 * i as u64 <= t)
            };
            // A job that ran shows its start in every later snapshot.
            let snap = |i: usize, k: usize| {
                let j = snapshot(1000 + i as u64, lives[i][k]);
                let ran = lives[i][..=k].iter().any(|s| matches!(*s, "running" | "canceling"));
                if ran && !j.has_started() { started(j, 3.0, 7.0) } else { j }
            };
            let mut t = Tracker::new();
            let mut events = Vec::new();
            let mut pages: Option<Vec<Job>> = None;
            for (at, _, step) in timeline {
                match step {
                    Step::Hook(i, k) => {
                        t.observe_hook(&snap(i, k), 0.0, &mut events);
                    }
                    // Overlapping cycles do not happen (a gate): a read during one is skipped.
                    Step::Read if pages.is_none() => {
                        t.cycle_started();
                        pages = Some((0..lives.len()).filter_map(|i| truth(i, at).map(|k| snap(i, k))).collect());
                    }
                    Step::Read => {}
                    Step::Apply => {
                        for j in pages.take().unwrap_or_default() {
                            t.observe(&j, 0.0, &mut events);
                        }
                        t.complete_cycle(Some(1000), Some(1000 + lives.len() as u64));
                    }
                }
            }
            // The reconciliation poll: everything as it is in the end.
            t.cycle_started();
            let last: Vec<Job> = (0..lives.len()).map(|i| snap(i, lives[i].len() - 1)).collect();
            for j in &last {
                t.observe(j, 0.0, &mut events);
            }
            let completed = events.iter().filter(|e| matches!(e, Event::Completed { .. })).count();
            let starts = events.iter().filter(|e| matches!(e, Event::Started { .. })).count();
            prop_assert_eq!(completed, last.iter().filter(|j| j.status.is_final()).count());
            prop_assert_eq!(starts, last.iter().filter(|j| j.has_started()).count());
            let mut active = BTreeMap::new();
            for j in last.iter().filter(|j| !j.status.is_final()) {
                *active.entry(j.status.clone()).or_insert(0u64) += 1;
            }
            prop_assert_eq!(t.active_counts(), active);
        }
    }

    #[test]
    fn hooks_never_move_a_job_back() {
        let mut t = Tracker::new();
        let mut ev = Vec::new();
        let run = snapshot(5, "running");
        assert_eq!(t.observe_hook(&run, 0.0, &mut ev), Seen::Changed);
        assert_eq!(t.observe_hook(&run, 0.0, &mut ev), Seen::Known);
        assert_eq!(
            t.observe_hook(&snapshot(5, "pending"), 0.0, &mut ev),
            Seen::Stale
        );
        let done = snapshot(5, "success");
        assert_eq!(t.observe_hook(&done, 0.0, &mut ev), Seen::Changed);
        assert_eq!(t.observe_hook(&done, 0.0, &mut ev), Seen::Known);
        // Late, or GitLab's reset of a skipped job: a poll settles which.
        assert_eq!(
            t.observe_hook(&snapshot(5, "created"), 0.0, &mut ev),
            Seen::Stale
        );
        assert!(!t.is_followed(5));
        assert_eq!(count_completed(&ev), 1);
        // A poll does not bring it back either: GitLab never resets a successful job (that
        // poll read a lagging replica)...
        t.cycle_started();
        t.observe(&snapshot(5, "created"), 0.0, &mut ev);
        assert!(!t.is_followed(5));
        // ...but it does reset a skipped one when its pipeline is retried: a poll shows that.
        assert_eq!(
            t.observe_hook(&snapshot(6, "skipped"), 0.0, &mut ev),
            Seen::Changed
        );
        t.cycle_started();
        t.observe(&snapshot(6, "created"), 0.0, &mut ev);
        assert!(t.is_followed(6));
        assert_eq!(count_completed(&ev), 2);
    }

    #[test]
    fn a_page_read_before_a_hook_does_not_undo_it() {
        let mut t = Tracker::new();
        let mut ev = Vec::new();
        t.observe(&snapshot(7, "pending"), 0.0, &mut ev);
        t.complete_cycle(Some(7), Some(7));
        // A cycle reads the job still running; meanwhile its hook says it succeeded.
        t.cycle_started();
        let page = snapshot(7, "running");
        t.observe_hook(&snapshot(7, "success"), 0.0, &mut ev);
        t.observe(&page, 0.0, &mut ev);
        assert!(!t.is_followed(7), "the older page brought the job back");
        assert_eq!(count_completed(&ev), 1);
        // Followed jobs are not moved back either.
        t.observe(&snapshot(8, "pending"), 0.0, &mut ev);
        t.cycle_started();
        t.observe_hook(&snapshot(8, "running"), 0.0, &mut ev);
        t.observe(&snapshot(8, "pending"), 0.0, &mut ev);
        assert_eq!(
            t.followed(8).map(|f| f.status.clone()),
            Some(JobStatus::Running)
        );
    }
}

/// Review: GitLab's API failing (an expired token: lookups refused, backing off for hours)
/// while its hooks keep coming. No cycle completes, so nothing folds `done` or trims
/// `followed`: before the cap, every hooked job stayed in memory (and in every checkpoint,
/// written each second) for as long as the polls failed.
#[test]
fn hooks_without_a_completed_cycle_keep_the_tracker_bounded() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    let finals = MAX_NEW_FROM_HOOKS as u64 + 50;
    for id in 1..=finals {
        t.observe_hook(&finished(job(id, "success")), 0.0, &mut ev);
    }
    assert!(t.done.len() <= MAX_NEW_FROM_HOOKS, "{}", t.done.len());
    assert!(t.hooked.len() <= MAX_NEW_FROM_HOOKS);
    let counted = count_completed(&ev);
    assert_eq!(counted, MAX_NEW_FROM_HOOKS);
    // A refused event says so; a poll counts it, once.
    let late = finished(job(finals, "success"));
    assert_eq!(t.observe_hook(&late, 0.0, &mut ev), Seen::Deferred);
    t.cycle_started();
    t.observe(&late, 0.0, &mut ev);
    t.observe(&late, 0.0, &mut ev);
    assert_eq!(count_completed(&ev), counted + 1);
    // A completed cycle makes room again.
    t.complete_cycle(Some(1), Some(finals));
    let next = finished(job(finals + 1, "success"));
    assert_eq!(t.observe_hook(&next, 0.0, &mut ev), Seen::Changed);
    assert!(t.done.len() <= DONE_KEEP + 1, "{}", t.done.len());

    let mut t = Tracker::new();
    let running = MAX_FOLLOWED as u64 + 50;
    for id in 1..=running {
        t.observe_hook(&job(id, "running"), 0.0, &mut ev);
    }
    assert!(t.followed_len() <= MAX_FOLLOWED, "{}", t.followed_len());
    // A followed job still moves on.
    assert_eq!(
        t.observe_hook(&finished(job(1, "success")), 0.0, &mut ev),
        Seen::Changed
    );
}

/// Review: GitLab serves API reads from database replicas, which may lag the primary by
/// seconds, while its hooks are sent after the commit. A job hooked `success` just before a
/// cycle starts, read `running` from a lagging replica in that cycle, is followed again
/// (as counted): `jobs_active` shows it running until the next poll, which for a project
/// whose hooks arrive is `webhook.reconcile_interval` (10 min) away, and no further hook
/// comes for it. `hooked` is cleared at every cycle start, so it does not protect this.
#[test]
fn a_lagging_page_after_the_cycle_started_does_not_revive_a_hooked_job() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    t.observe(&job(7, "running"), 0.0, &mut ev);
    t.complete_cycle(Some(7), Some(7));
    assert_eq!(
        t.observe_hook(&finished(job(7, "success")), 0.0, &mut ev),
        Seen::Changed
    );
    t.cycle_started();
    t.observe(&job(7, "running"), 0.0, &mut ev);
    assert_eq!(count_completed(&ev), 1);
    assert!(t.active_counts().is_empty(), "{:?}", t.active_counts());
}

/// Review: GitLab moves a job waiting_for_resource → preparing → pending, never back
/// (`Ci::Build`'s `enqueue_waiting_for_resource`, `enqueue_preparing`). Those were one step
/// of `progress`, so a late `preparing` event moved a pending job back: `jobs_active`
/// showed it preparing and `oldest_pending` lost it (a job stuck waiting for a runner went
/// unseen) until the next event or reconciliation.
#[test]
fn a_late_waiting_event_does_not_move_a_pending_job_back() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    let mut pending = job(9, "pending");
    pending.queued_duration = Some(30.0);
    assert_eq!(t.observe_hook(&pending, 100.0, &mut ev), Seen::Changed);
    for late in ["preparing", "waiting_for_resource"] {
        assert_eq!(t.observe_hook(&job(9, late), 200.0, &mut ev), Seen::Stale);
    }
    assert_eq!(
        t.observe_hook(&job(9, "waiting_for_resource"), 0.0, &mut Vec::new()),
        Seen::Stale
    );
    assert_eq!(
        t.followed(9).map(|f| f.status.clone()),
        Some(JobStatus::Pending)
    );
    assert_eq!(t.oldest_pending_since(), Some(70.0));
    // Forwards still goes: waiting_for_resource → preparing → pending.
    assert_eq!(
        t.observe_hook(&job(10, "waiting_for_resource"), 0.0, &mut ev),
        Seen::Changed
    );
    assert_eq!(
        t.observe_hook(&job(10, "preparing"), 0.0, &mut ev),
        Seen::Changed
    );
    assert_eq!(
        t.observe_hook(&job(10, "pending"), 0.0, &mut ev),
        Seen::Changed
    );
}

/// Review: a fresh start's first cycle can take minutes. A job created before the backfill
/// window and skipped meanwhile counts when polls see it (the first listing follows it
/// `created`); its Job Hook, arriving before the listing read it, was judged by its
/// creation time (skipped jobs have no `finished_at`) as history, and the listing then
/// found it final: never counted. A hook reports a change as it happens.
#[test]
fn a_job_skipped_during_the_first_cycle_counts_from_its_hook() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    // The job was created 2026-01-01T10:00:00Z; the first cycle starts a day later.
    let created = secs(job(3, "skipped").created_at.unwrap());
    let now = created + 86_400.0;
    t.begin_first_cycle(now, 3600.0);
    assert_eq!(
        t.observe_hook(&job(3, "skipped"), now, &mut ev),
        Seen::Changed
    );
    assert_eq!(count_completed(&ev), 1);
    // A page shows it too: still once.
    t.observe(&job(3, "skipped"), now, &mut ev);
    t.complete_cycle(Some(3), Some(3));
    assert_eq!(count_completed(&ev), 1);
    // A poll of the backfill still ignores such a job it finds skipped already.
    let mut t = Tracker::new();
    t.begin_first_cycle(now, 3600.0);
    t.observe(&job(4, "skipped"), now, &mut ev);
    assert_eq!(count_completed(&ev), 1);
}

/// Found by the benchmark: a job's `created` and `manual` hooks a moment apart, the late
/// `created` applied after `manual`, showed a manual job as created until the next poll.
#[test]
fn a_late_created_event_does_not_move_a_manual_job_back() {
    let mut t = Tracker::new();
    let mut ev = Vec::new();
    assert_eq!(
        t.observe_hook(&job(4, "manual"), 0.0, &mut ev),
        Seen::Changed
    );
    assert_eq!(
        t.observe_hook(&job(4, "created"), 0.0, &mut ev),
        Seen::Stale
    );
    assert_eq!(
        t.followed(4).map(|f| f.status.clone()),
        Some(JobStatus::Manual)
    );
    assert_eq!(
        t.observe_hook(&job(5, "scheduled"), 0.0, &mut ev),
        Seen::Changed
    );
    assert_eq!(
        t.observe_hook(&job(5, "manual"), 0.0, &mut ev),
        Seen::Changed
    );
}
