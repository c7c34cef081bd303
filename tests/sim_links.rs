//! The exporter's `Link` parsing against the simulator's offset-paginated listings (moved here
//! from the simulator's own tests: the simulator crate does not depend on the exporter).

use gitlab_jobs_exporter::gitlab::link::next_relative;
use gitlab_sim::{Ms, SimClock, SimHandle, Simulator, World, fixtures};

const TOKEN: &str = "sim-secret-token";
/// 2025-11-24T16:00:00Z
const T0: Ms = 1_764_000_000_000;
const S: Ms = 1000;
const EXT: &str = "https://gitlab.example.com";
const P42: &str = "/api/v4/projects/42";

async fn start(world: World, now: Ms) -> (Simulator, SimHandle) {
    let sim = Simulator::new(world, SimClock::manual(now), TOKEN.into());
    let handle = sim.spawn().await.expect("spawn simulator");
    (sim, handle)
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    fn ids(&self) -> Vec<u64> {
        let jobs: Vec<serde_json::Value> = serde_json::from_str(&self.body).expect("json array");
        jobs.iter().map(|j| j["id"].as_u64().expect("id")).collect()
    }
}

async fn get(h: &SimHandle, path: &str) -> Got {
    // reqwest is built without a default TLS provider and refuses to build a client without one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let resp = (client.get(format!("{}{path}", h.base_url)))
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .expect("request");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    Got {
        status,
        headers,
        body: resp.text().await.expect("body"),
    }
}

#[tokio::test]
async fn pipeline_jobs_offset_pagination_is_counted_with_links() {
    let (_sim, h) = start(fixtures::pipelines_world(T0), T0 + 200 * S).await;
    let first = get(&h, &format!("{P42}/pipelines/902/jobs?per_page=100")).await;
    assert_eq!(first.status, 200);
    let ids = first.ids();
    assert_eq!(ids.len(), 100);
    assert_eq!((ids[0], ids[99]), (2109, 2010), "id descending");
    let url = |page: u32| {
        format!(
            "{EXT}{P42}/pipelines/902/jobs?id=42&include_retried=false&page={page}&per_page=100&pipeline_id=902"
        )
    };
    let link = format!(
        "<{}>; rel=\"next\", <{}>; rel=\"first\", <{}>; rel=\"last\"",
        url(2),
        url(1),
        url(2)
    );
    assert_eq!(first.header("link"), Some(link.as_str()));
    for (name, value) in [
        ("x-page", "1"),
        ("x-per-page", "100"),
        ("x-next-page", "2"),
        ("x-prev-page", ""),
        ("x-total", "105"),
        ("x-total-pages", "2"),
    ] {
        assert_eq!(first.header(name), Some(value), "{name}");
    }
    // The exporter's Link parsing picks rel="next" out of the offset links.
    let next_of = |got: &Got| {
        next_relative(got.header("link").expect("link"))
            .expect("valid link")
            .map(|rel| format!("/api/v4/{rel}"))
    };
    let second = get(&h, &next_of(&first).expect("next page")).await;
    assert_eq!(second.ids(), (2005..=2009).rev().collect::<Vec<_>>());
    assert_eq!(second.header("x-next-page"), Some(""));
    assert_eq!(second.header("x-prev-page"), Some("1"));
    assert_eq!(next_of(&second), None);
    // Grape's default page size.
    let default = get(&h, &format!("{P42}/pipelines/902/jobs")).await;
    assert_eq!(
        (default.ids().len(), default.header("x-total-pages")),
        (20, Some("6"))
    );
    h.shutdown().await;
}
