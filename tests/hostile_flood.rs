//! Memory under a project-listing flood (alone in its binary, so the process's peak RSS is this
//! test's): 50,000 projects per page (100 asked) with endless next links once took the RSS to
//! 5.8 GB. Prints the peak (`VmHWM`) for the record.

mod common;

use std::time::Duration;

use common::Harness;
use gitlab_jobs_exporter::config::GroupRef;
use gitlab_sim::{Hostile, Ms, ProjectSpec, World, WorldSpec};

const T0: Ms = 1_790_000_000_000;

/// Peak resident set size of this process, in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_flood_keeps_memory_bounded() {
    let spec = WorldSpec::new(
        vec![ProjectSpec {
            id: 31,
            path: "acme/platform/api".into(),
            pipelines_per_hour: 1.0,
        }],
        T0,
        T0 + 3_600_000,
    );
    let h = Harness::start_with(
        World::generate(&spec, 1),
        T0 + 3_600_000,
        Vec::new(),
        Duration::from_secs(3600),
        |cfg| {
            cfg.groups.push(GroupRef {
                path: Some("acme".into()),
                id: None,
                include_subgroups: true,
            });
        },
    )
    .await;
    let start = vm_hwm_kib();
    h.sim
        .add_hostile(Hostile::ProjectFlood { per_page: 50_000 });
    for _ in 0..3 {
        let stats = h.scheduler.discover().await;
        assert!(!stats.complete && stats.found == 0, "{stats:?}");
    }
    let refused = vm_hwm_kib();
    // Honest page sizes, endless: the default limits.max_projects (20,000) ends each pass.
    h.sim.clear_hostile();
    h.sim.add_hostile(Hostile::ProjectFlood { per_page: 100 });
    for _ in 0..2 {
        let stats = h.scheduler.discover().await;
        assert_eq!(stats.found, 20_000, "{stats:?}");
    }
    let capped = vm_hwm_kib();
    eprintln!(
        "peak RSS (VmHWM): {start} KiB at start, {refused} KiB after 3 passes of 50,000-item pages, \
         {capped} KiB after 2 endless passes capped at 20,000 projects"
    );
    // Generous: before the fix this flood reached gigabytes.
    assert!(capped < 1024 * 1024, "{capped} KiB");
    h.stop().await;
}
