//! Two shards behind one webhook URL: GitLab posts every event to replica 0, which forwards
//! the events of replica 1's projects to it (`webhook.peer_url`). Together they count every
//! job once, exactly as the ground truth says.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    HOOK_SECRET, Scrape, TOKEN, assert_matches_truth, by_id, config, fast_retry, hooks_handled,
    until, with_webhooks,
};
use gitlab_jobs_exporter::app::App;
use gitlab_jobs_exporter::fleet::runner::Scheduler;
use gitlab_jobs_exporter::shard::ShardConfig;
use gitlab_sim::{HookKnobs, HookSender, Ms, ProjectSpec, SimClock, Simulator, World, WorldSpec};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const MIN: Ms = 60_000;
const HOUR: Ms = 60 * MIN;
const T0: Ms = 1_790_000_000_000;
const BACKFILL: Duration = Duration::from_secs(3600);
const IDS: [u64; 6] = [21, 22, 23, 24, 25, 26];

struct Replica {
    scheduler: Arc<Scheduler>,
    url: String,
}

/// Loopback listeners for shards 0 and 1 on one port: 127.0.0.10 and 127.0.0.11, so that
/// one `peer_url` template (`http://127.0.0.1{shard}:PORT/webhook`) names both.
async fn listeners() -> (TcpListener, TcpListener, u16) {
    for _ in 0..10 {
        let first = TcpListener::bind("127.0.0.10:0")
            .await
            .expect("bind 127.0.0.10");
        let port = first.local_addr().expect("addr").port();
        if let Ok(second) = TcpListener::bind(("127.0.0.11", port)).await {
            return (first, second, port);
        }
    }
    panic!("no port free on both 127.0.0.10 and 127.0.0.11");
}

fn start(
    base_url: &str,
    shard: u32,
    port: u16,
    listener: TcpListener,
    stop: &CancellationToken,
) -> Replica {
    let mut cfg = config(
        base_url,
        IDS.iter().map(|id| by_id(*id)).collect(),
        BACKFILL,
    );
    with_webhooks(&mut cfg);
    cfg.shard = ShardConfig {
        index: Some(shard),
        count: 2,
    };
    cfg.webhook.peer_url = Some(format!("http://127.0.0.1{{shard}}:{port}/webhook"));
    let settings = cfg.validate().expect("valid configuration");
    let app = App::new(&settings, fast_retry()).expect("exporter parts");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let s = stop.clone();
    app.spawn_http(listener, async move { s.cancelled().await });
    app.spawn_hooks(stop.clone());
    Replica {
        scheduler: app.scheduler,
        url,
    }
}

async fn page(http: &reqwest::Client, r: &Replica) -> String {
    let resp = http
        .get(format!("{}/metrics", r.url))
        .send()
        .await
        .expect("scrape");
    resp.text().await.expect("body")
}

fn events(page: &str, result: &str) -> f64 {
    Scrape::parse(page)
        .values("gitlab_jobs_exporter_webhook_events_total")
        .iter()
        .filter(|(l, _)| l["event"] == "job" && l["result"] == result)
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_with_forwarding_count_every_job_once() {
    let owners: Vec<u32> = IDS
        .iter()
        .map(|id| gitlab_jobs_exporter::shard::owner(*id, 2))
        .collect();
    assert!(
        owners.contains(&0) && owners.contains(&1),
        "both shards own projects: {owners:?}"
    );
    let projects = IDS
        .iter()
        .map(|id| ProjectSpec {
            id: *id,
            path: format!("acme/p{id}"),
            pipelines_per_hour: 8.0,
        })
        .collect();
    let world = World::generate(&WorldSpec::new(projects, T0, T0 + 3 * HOUR), 3);
    let sim = Simulator::new(world, SimClock::manual(T0 + HOUR), TOKEN.to_string());
    let gitlab = sim.spawn().await.expect("simulator");
    let stop = CancellationToken::new();
    let (l0, l1, port) = listeners().await;
    let replicas = [
        start(&gitlab.base_url, 0, port, l0, &stop),
        start(&gitlab.base_url, 1, port, l1, &stop),
    ];
    let http = reqwest::Client::new();
    let poll = || async {
        for r in &replicas {
            for result in r.scheduler.poll_all_once().await {
                result.expect("poll cycle");
            }
        }
    };
    let first_poll = sim.now_ms();
    poll().await;
    // GitLab posts every event to one URL: replica 0's.
    let hooks = HookSender::new(
        &sim,
        &format!("{}/webhook", replicas[0].url),
        HOOK_SECRET,
        HookKnobs::default(),
    )
    .expect("hook sender");
    let truth = |sim: &Simulator| {
        sim.ground_truth_since(
            first_poll - first_poll.rem_euclid(1000) - BACKFILL.as_millis() as Ms,
            first_poll,
        )
    };
    let both = || async {
        let text = format!(
            "{}{}",
            page(&http, &replicas[0]).await,
            page(&http, &replicas[1]).await
        );
        Scrape::parse(&text)
    };
    for step in 1..=180 {
        sim.advance(Duration::from_secs(5));
        hooks.deliver_due().await;
        let sent = hooks.stats().sent as f64;
        until(
            "both replicas dealt with every hook",
            Duration::from_secs(20),
            || async {
                let (p0, p1) = (
                    page(&http, &replicas[0]).await,
                    page(&http, &replicas[1]).await,
                );
                let forwarded = events(&p0, "forwarded");
                (hooks_handled(&Scrape::parse(&p0)) >= sent
                    && hooks_handled(&Scrape::parse(&p1)) >= forwarded)
                    .then_some(())
            },
        )
        .await;
        if step % 24 == 0 {
            poll().await;
        }
        if step % 12 == 0 {
            assert_matches_truth(&both().await, &truth(&sim));
        }
    }
    let (p0, p1) = (
        page(&http, &replicas[0]).await,
        page(&http, &replicas[1]).await,
    );
    assert!(
        events(&p0, "forwarded") > 20.0,
        "replica 0 forwarded replica 1's events"
    );
    assert_eq!(events(&p0, "dropped"), 0.0);
    assert_eq!(
        events(&p1, "forwarded"),
        0.0,
        "a forwarded event is never forwarded again"
    );
    assert!(events(&p1, "applied") > 20.0);
    assert_eq!(events(&p1, "unwatched"), 0.0);
    assert_eq!(hooks.stats().failed, 0);
    stop.cancel();
    gitlab.shutdown().await;
}
