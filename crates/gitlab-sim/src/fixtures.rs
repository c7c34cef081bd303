//! Small hand-made worlds shared by the simulator's tests and the exporter's.

use crate::{JobPlan, Ms, ProjectDef, World};

/// Project 42: pipeline 900 (build failed then retried, a manual test), pipeline 902 (105
/// jobs), pipeline 903 (not created yet); project 7: pipeline 901. Times in seconds after `t0`.
pub fn pipelines_world(t0: Ms) -> World {
    let t = |s: i64| t0 + s * 1000;
    let mut jobs = vec![
        JobPlan::new(
            2001,
            42,
            900,
            "build",
            "build",
            &[
                (t(0), "created"),
                (t(1), "pending"),
                (t(2), "running"),
                (t(30), "failed"),
            ],
        ),
        JobPlan::new(
            2002,
            42,
            900,
            "test",
            "test",
            &[(t(0), "created"), (t(1), "manual")],
        ),
        JobPlan::new(
            2003,
            42,
            900,
            "build",
            "build",
            &[(t(40), "created"), (t(41), "running"), (t(60), "success")],
        ),
        JobPlan::new(2004, 7, 901, "build", "build", &[(t(50), "created")]),
    ];
    for i in 0..105u64 {
        let timeline = [(t(60), "created"), (t(61), "running"), (t(100), "success")];
        let name = format!("job-{i}");
        jobs.push(JobPlan::new(2005 + i, 42, 902, &name, "test", &timeline));
    }
    jobs.push(JobPlan::new(
        2110,
        42,
        903,
        "late",
        "test",
        &[(t(10_000), "created")],
    ));
    let projects = vec![
        ProjectDef::new(42, "group/sub/project"),
        ProjectDef::new(7, "o/p"),
    ];
    World::new(projects, jobs).expect("valid pipelines world")
}
