//! Random job histories under random fault schedules (proxy 5xx, both 429 shapes, timeouts,
//! truncated and HTML bodies, connections cut mid-response, refused tokens): once the faults stop, every counter equals the
//! ground truth.

mod common;

use std::time::Duration;

use common::{Harness, assert_matches_truth, by_id, by_path};
use gitlab_sim::{Fault, Ms, ProjectSpec, World, WorldSpec};
use proptest::prelude::*;

const T0: Ms = 1_790_000_000_000;
const HOUR: Ms = 3_600_000;

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        prop_oneof![Just(500u16), Just(502), Just(503), Just(504)].prop_map(Fault::ServerError),
        Just(Fault::RateLimitedJson),
        Just(Fault::RateLimitedText {
            retry_after_secs: 0
        }),
        Just(Fault::MalformedJson),
        Just(Fault::HtmlOk),
        Just(Fault::ConnectionReset),
        // Past the exporter's 300 ms timeout.
        Just(Fault::Delay(Duration::from_millis(450))),
        Just(Fault::Unauthorized),
        Just(Fault::Forbidden),
    ]
}

fn run_case(seed: u64, schedule: Vec<(u16, Vec<Fault>)>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let spec = WorldSpec::new(
            vec![
                ProjectSpec {
                    id: 51,
                    path: "acme/platform/api".into(),
                    pipelines_per_hour: 15.0,
                },
                ProjectSpec {
                    id: 52,
                    path: "tools/cli".into(),
                    pipelines_per_hour: 5.0,
                },
            ],
            T0,
            T0 + 3 * HOUR,
        );
        let mut h = Harness::start_with(
            World::generate(&spec, seed),
            T0 + HOUR,
            vec![by_path("acme/platform/api"), by_id(52)],
            Duration::from_secs(3600),
            |cfg| cfg.gitlab.timeout = Duration::from_millis(300),
        )
        .await;
        // The first cycle without faults fixes the backfill window the truth is computed for.
        h.poll().await;
        for (step_secs, faults) in schedule {
            h.sim.advance(Duration::from_secs(u64::from(step_secs)));
            for f in faults {
                h.sim.push_fault(f);
            }
            // Cycles may fail (more faults than retries, refused tokens): that is the point.
            let _ = h.scheduler.poll_all_once().await;
        }
        h.sim.clear_faults();
        h.sim.advance(Duration::from_secs(3 * 3600));
        h.settle().await;
        assert_matches_truth(&h.scrape().await, &h.truth());
        h.stop().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn counters_equal_truth_under_random_faults(
        seed in 0u64..1_000,
        schedule in proptest::collection::vec(
            (10u16..600, proptest::collection::vec(fault(), 0..4)),
            5..40,
        ),
    ) {
        run_case(seed, schedule);
    }
}
