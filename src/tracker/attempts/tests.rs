use super::*;

/// T0 + `secs`, RFC 3339.
fn at(secs: i64) -> String {
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").unwrap();
    (t0 + chrono::Duration::seconds(secs)).to_rfc3339()
}

/// Job `id` of pipeline `pipeline` (created at T0 + `pipeline_at` s), named `name`, created at
/// T0 + `created` s.
fn job(id: u64, name: &str, status: &str, pipeline: u64, pipeline_at: i64, created: i64) -> Job {
    serde_json::from_value(serde_json::json!({
        "id": id, "status": status, "stage": "test", "name": name, "ref": "main",
        "created_at": at(created), "finished_at": at(created + 30),
        "pipeline": {"id": pipeline, "created_at": at(pipeline_at)},
    }))
    .unwrap()
}

/// A project's tracker and attempts fed as `Project::feed` feeds them.
#[derive(Default)]
struct World {
    tracker: Tracker,
    attempts: Attempts,
    flaky: Vec<String>,
}

impl World {
    /// Feeds one page read from the top (as `Project::feed`, then `Attempts::listed`).
    fn page(&mut self, jobs: &[Job]) {
        let mut events = Vec::new();
        let mut flaky = Vec::new();
        for j in jobs {
            let before = events.len();
            self.tracker.observe(j, 0.0, &mut events);
            self.attempts.observe(j);
            for e in &events[before..] {
                if let Event::Completed {
                    labels,
                    status: JobStatus::Success,
                    ..
                } = e
                {
                    let mut given_up = 0;
                    if let Some(l) = self
                        .attempts
                        .success(j, labels.clone(), false, &mut given_up)
                    {
                        flaky.push(Event::Flaky { labels: l });
                    }
                }
            }
        }
        self.attempts.listed(jobs, false);
        self.take(flaky);
    }

    fn take(&mut self, events: Vec<Event>) {
        for e in events {
            if let Event::Flaky { labels } = e {
                self.flaky.push(labels.name);
            }
        }
    }

    /// Ends a cycle that read `lowest..=highest` from the top, then settles.
    fn complete(&mut self, lowest: u64, highest: u64) -> Outcome {
        self.tracker.complete_cycle(Some(lowest), Some(highest));
        self.settle()
    }

    fn settle(&mut self) -> Outcome {
        let mut events = Vec::new();
        let out = self.attempts.settle(&self.tracker, &mut events);
        self.take(events);
        out
    }
}

#[test]
fn a_success_after_a_failed_attempt_is_flaky_once_even_when_read_first() {
    let mut w = World::default();
    // Newest first: the retry's success is on the page above its failed first attempt.
    w.page(&[job(12, "rspec", "success", 7, 100, 200)]);
    assert!(w.flaky.is_empty(), "decided before the page below was read");
    w.page(&[
        job(11, "lint", "success", 7, 100, 100),
        job(10, "rspec", "failed", 7, 100, 100),
        job(5, "old", "failed", 2, -1000, -1000),
    ]);
    w.complete(5, 12);
    assert_eq!(w.flaky, ["rspec"]);
    assert!(w.attempts.pending().is_empty());
    // The same pages again (a retried cycle, an overlapping page): nothing more.
    w.page(&[job(12, "rspec", "success", 7, 100, 200)]);
    w.page(&[job(10, "rspec", "failed", 7, 100, 100)]);
    w.complete(5, 12);
    assert_eq!(w.flaky, ["rspec"]);
}

#[test]
fn a_known_failed_attempt_decides_at_once_and_a_later_failure_does_not_count() {
    let mut w = World::default();
    w.page(&[
        job(20, "rspec", "failed", 8, 100, 110),
        job(19, "x", "failed", 1, 0, 0),
    ]);
    w.complete(19, 20);
    w.page(&[job(21, "rspec", "success", 8, 100, 300)]);
    assert_eq!(w.flaky, ["rspec"], "known at once");
    // A failure after a success (a failed retry of a passing job) makes nothing flaky.
    w.page(&[
        job(23, "deploy", "failed", 8, 100, 400),
        job(22, "deploy", "success", 8, 100, 350),
    ]);
    w.complete(22, 23);
    assert_eq!(w.flaky, ["rspec"]);
    assert!(w.attempts.pending().is_empty());
}

#[test]
fn a_pipeline_created_after_the_horizon_is_decided_without_lookup() {
    let mut w = World::default();
    w.page(&[job(100, "h", "failed", 1, 0, 0)]);
    w.complete(100, 100);
    assert_eq!(w.attempts.horizon().map(|h| h.id), Some(100));
    w.page(&[
        job(102, "rspec", "success", 2, 600, 610),
        job(101, "b", "success", 2, 600, 600),
    ]);
    w.complete(101, 102);
    assert!(w.attempts.pending().is_empty());
    assert!(w.attempts.lookups().is_empty());
    assert!(w.flaky.is_empty());
}

#[test]
fn a_job_list_read_to_its_end_leaves_nothing_uncertain() {
    let mut w = World::default();
    let page = [
        job(12, "rspec", "success", 7, 0, 200),
        job(11, "lint", "success", 7, 0, 0),
        job(10, "rspec", "canceled", 7, 0, 0),
    ];
    w.page(&page);
    // The page was the list's last: every job of the project has been listed.
    w.attempts.listed(&page, true);
    w.complete(10, 12);
    assert!(
        w.attempts.pending().is_empty(),
        "{:?}",
        w.attempts.pending()
    );
    assert!(w.flaky.is_empty());
}

#[test]
fn a_retry_of_a_pipeline_older_than_the_horizon_needs_one_lookup() {
    let mut w = World::default();
    w.page(&[job(500, "h", "failed", 50, 10_000, 10_000)]);
    w.complete(500, 500);
    // Yesterday's pipeline 3 retried today: its failed attempt was never listed.
    w.page(&[
        job(501, "rspec", "success", 3, 0, 20_000),
        job(502, "lint", "success", 3, 0, 20_000),
    ]);
    w.complete(501, 502);
    assert!(w.flaky.is_empty());
    assert_eq!(w.attempts.lookups(), [3]);
    assert!(w.attempts.has_lookups());
    let failed = [
        job(40, "rspec", "failed", 3, 0, 1),
        job(41, "lint", "failed", 3, 0, 2000),
    ];
    // The lookup can stop once every waiting success is decided flaky.
    assert!(w.attempts.lookup_satisfied(3, &failed));
    assert!(!w.attempts.lookup_satisfied(3, &failed[..1]));
    let mut events = Vec::new();
    let out = w.attempts.looked_up(
        3,
        Lookup::Found {
            failed: &failed[..1],
            complete: true,
        },
        &mut events,
    );
    w.take(events);
    assert_eq!(
        out,
        Outcome {
            flaky: 1,
            undecided: 0
        }
    );
    assert_eq!(w.flaky, ["rspec"]);
    assert!(w.attempts.pending().is_empty(), "lint decided not flaky");
    // The answer is remembered: a later retry of the same name decides without a lookup,
    // and so does one of another name.
    w.page(&[job(503, "rspec", "success", 3, 0, 20_100)]);
    assert_eq!(w.flaky, ["rspec", "rspec"]);
    w.page(&[job(504, "docs", "success", 3, 0, 20_200)]);
    w.complete(503, 504);
    assert!(w.attempts.pending().is_empty());
    assert_eq!(w.flaky, ["rspec", "rspec"]);
}

#[test]
fn an_unread_gap_below_defers_the_decision_until_it_is_read() {
    let mut w = World::default();
    w.page(&[job(100, "h", "failed", 1, 0, 0)]);
    w.complete(100, 100);
    // A capped cycle read 300..=400 and left 100..300 unread.
    w.page(&[job(400, "rspec", "success", 9, 500, 900)]);
    w.tracker.set_gaps(vec![crate::tracker::Gap {
        top: 300,
        bottom: 100,
        next: None,
        pages: 0,
    }]);
    w.complete(300, 400);
    assert_eq!(w.attempts.pending().len(), 1);
    assert!(
        w.attempts.lookups().is_empty(),
        "waits for the gap rather than look up"
    );
    // The catch-up reads the gap: the failed attempt is there.
    w.page(&[job(250, "rspec", "failed", 9, 500, 600)]);
    w.tracker.set_gaps(Vec::new());
    w.complete(300, 400);
    assert_eq!(w.flaky, ["rspec"]);
}

#[test]
fn an_earlier_attempt_still_followed_defers_the_decision() {
    let mut w = World::default();
    w.page(&[job(100, "h", "failed", 1, 0, 0)]);
    w.complete(100, 100);
    w.page(&[job(101, "rspec", "running", 9, 500, 600)]);
    w.complete(101, 101);
    // Its retry passed; the first attempt's end is not learnt yet (a deep followed job).
    w.page(&[job(102, "rspec", "success", 9, 500, 700)]);
    w.complete(102, 102);
    assert_eq!(w.attempts.pending().len(), 1);
    w.page(&[job(101, "rspec", "failed", 9, 500, 600)]);
    w.settle();
    assert_eq!(w.flaky, ["rspec"]);
    // Waiting has a bound: then a lookup decides.
    w.page(&[
        job(104, "x", "success", 9, 500, 800),
        job(103, "x", "running", 9, 500, 600),
    ]);
    for _ in 0..=MAX_WAITS {
        w.complete(104, 104);
    }
    assert_eq!(w.attempts.lookups(), [9]);
}

#[test]
fn a_first_attempt_from_a_hook_is_never_flaky_and_costs_nothing() {
    let mut w = World::default();
    let mut given_up = 0;
    let j = job(7, "rspec", "success", 1, 0, 0);
    let labels = JobLabels::of(&j);
    assert_eq!(
        w.attempts.success(&j, labels.clone(), true, &mut given_up),
        None
    );
    assert!(w.attempts.pending().is_empty());
    // Unless a failed attempt of the name is known (retries_count counts retried attempts).
    w.attempts.observe(&job(5, "rspec", "failed", 1, 0, 0));
    assert!(
        w.attempts
            .success(&j, labels, true, &mut given_up)
            .is_some()
    );
}

#[test]
fn lookups_that_fail_give_up_after_a_few_tries_and_404_is_not_flaky() {
    let mut w = World::default();
    w.page(&[job(500, "h", "failed", 50, 10_000, 10_000)]);
    w.complete(500, 500);
    w.page(&[
        job(501, "rspec", "success", 3, 0, 20_000),
        job(502, "lint", "success", 4, 0, 20_000),
    ]);
    w.complete(501, 502);
    assert_eq!(w.attempts.lookups(), [3, 4]);
    let mut events = Vec::new();
    let gone = w.attempts.looked_up(4, Lookup::NotFound, &mut events);
    assert_eq!(gone, Outcome::default());
    for _ in 1..MAX_LOOKUP_TRIES {
        assert_eq!(
            w.attempts.looked_up(3, Lookup::Failed, &mut events),
            Outcome::default()
        );
        assert_eq!(w.attempts.lookups(), [3]);
    }
    let out = w.attempts.looked_up(3, Lookup::Failed, &mut events);
    assert_eq!(
        out,
        Outcome {
            flaky: 0,
            undecided: 1
        }
    );
    assert!(events.is_empty());
    assert!(w.attempts.pending().is_empty());
}

#[test]
fn forgotten_pipelines_raise_a_floor_below_which_a_lookup_decides() {
    let mut a = Attempts::default();
    for p in 1..=(MAX_PIPELINES as u64 + 10) {
        a.observe(&job(p * 10, "rspec", "failed", p, 0, 0));
    }
    assert_eq!(a.failed.len(), MAX_PIPELINES);
    assert_eq!(a.pipeline_floor, 11);
    let mut w = World {
        attempts: a,
        ..Default::default()
    };
    w.page(&[job(1_000_000, "a", "success", 900_000, 100, 0)]);
    w.complete(1_000_000, 1_000_000);
    // Pipeline 5 was forgotten, though created after the horizon: not certain any more.
    w.page(&[job(1_000_001, "rspec", "success", 5, 600, 700)]);
    w.page(&[job(1_000_002, "lint", "success", 20, 600, 700)]);
    w.complete(1_000_001, 1_000_002);
    assert_eq!(w.flaky, Vec::<String>::new());
    assert_eq!(w.attempts.lookups(), [5]);
    // Names are bounded too.
    let mut a = Attempts::default();
    for i in 0..(MAX_NAMES as u64 + 1) {
        a.observe(&job(i + 1, &format!("j{i}"), "failed", 1 + i / 20, 0, 0));
    }
    assert!(a.names <= MAX_NAMES, "{}", a.names);
    assert!(a.pipeline_floor > 1);
}

#[test]
fn pending_successes_are_bounded_and_survive_a_checkpoint() {
    let mut w = World::default();
    w.page(&[
        job(10, "rspec", "failed", 1, 0, 0),
        job(9, "a", "success", 1, 0, 0),
    ]);
    let mut given_up = 0;
    for id in 0..(MAX_PENDING as u64 + 3) {
        let j = job(1_000 + id, "x", "success", 2, 0, 0);
        w.attempts
            .success(&j, JobLabels::of(&j), false, &mut given_up);
    }
    assert_eq!(given_up, 4, "9 is pending too");
    assert_eq!(w.attempts.pending().len(), MAX_PENDING);
    let json = serde_json::to_string(&w.attempts).unwrap();
    let back: Attempts = serde_json::from_str::<Attempts>(&json).unwrap().restored();
    assert_eq!(back, w.attempts);
    assert_eq!(back.names, 1);
    // A checkpoint from before flaky jobs loads as empty.
    let old: Attempts = serde_json::from_str("{}").unwrap();
    assert!(old.is_empty());
}

#[test]
fn a_success_without_a_pipeline_or_without_a_known_creation_time() {
    let mut w = World::default();
    w.page(&[job(100, "h", "failed", 1, 0, 0)]);
    w.complete(100, 100);
    let mut j = job(101, "rspec", "success", 2, 600, 600);
    j.pipeline = Default::default();
    w.page(&[j]);
    assert!(
        w.attempts.pending().is_empty(),
        "no pipeline: nothing to be flaky about"
    );
    // An older GitLab without pipeline.created_at: a lookup decides.
    let mut j = job(102, "rspec", "success", 2, 600, 600);
    j.pipeline.created_at = None;
    w.page(&[j]);
    w.complete(102, 102);
    assert_eq!(w.attempts.lookups(), [2]);
}
