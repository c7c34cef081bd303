use super::*;

#[test]
fn label_fields_are_capped() {
    let huge = "é".repeat(400_000);
    let job: Job = serde_json::from_value(serde_json::json!({
        "id": 1, "status": "success", "name": huge, "stage": huge, "ref": huge,
        "runner": {"description": huge, "runner_type": "instance_type"},
    }))
    .unwrap();
    for v in [
        &job.name,
        &job.stage,
        &job.ref_,
        &job.runner.as_ref().unwrap().description,
    ] {
        assert!(
            v.len() <= MAX_LABEL_BYTES && v.len() >= MAX_LABEL_BYTES - 1,
            "{}",
            v.len()
        );
        assert!(v.chars().all(|c| c == 'é'));
    }
    let short: Job = serde_json::from_value(
        serde_json::json!({"id": 2, "status": "success", "name": "rspec 1/2", "ref": null}),
    )
    .unwrap();
    assert_eq!(
        (short.name.as_str(), short.ref_.as_str()),
        ("rspec 1/2", "")
    );
}

#[test]
fn decodes_gitlab_docs_example() {
    let body = include_bytes!("../../tests/fixtures/list_project_jobs_example.json");
    let (jobs, bad) = decode_jobs(body, usize::MAX).unwrap();
    assert_eq!(bad, 0);
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].id, 7);
    assert_eq!(jobs[0].status, JobStatus::Failed);
    assert_eq!(jobs[0].failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(jobs[0].duration, Some(0.173));
    assert_eq!(jobs[0].queued_duration, Some(0.010));
    assert_eq!(jobs[0].ref_, "main");
    assert_eq!(jobs[0].pipeline_id(), Some(6));
    assert!(jobs[0].has_started());
    assert_eq!(
        jobs[0].runner,
        Some(JobRunner {
            description: String::new(),
            runner_type: "instance_type".into(),
        })
    );
}

#[test]
fn runner_is_decoded_leniently() {
    let body = br#"[
            {"id": 6, "status": "success", "runner": {"id": 1, "description": "docker-1", "runner_type": "group_type"}},
            {"id": 5, "status": "success", "runner": {"id": 2, "description": null, "runner_type": 7}},
            {"id": 4, "status": "success", "runner": "docker-1"},
            {"id": 3, "status": "success", "runner": [1, 2]},
            {"id": 2, "status": "skipped", "runner": null},
            {"id": 1, "status": "skipped"}
        ]"#;
    let (jobs, bad) = decode_jobs(body, usize::MAX).unwrap();
    assert_eq!(bad, 0);
    let runners: Vec<_> = jobs
        .iter()
        .map(|j| {
            j.runner
                .as_ref()
                .map(|r| (r.description.as_str(), r.runner_type.as_str()))
        })
        .collect();
    assert_eq!(
        runners,
        vec![
            Some(("docker-1", "group_type")),
            Some(("", "")),
            None,
            None,
            None,
            None
        ]
    );
}

#[test]
fn unknown_status_and_bad_fields_are_tolerated() {
    let body = br#"[
            {"id": 3, "status": "waiting_for_approval", "stage": null, "name": "x", "ref": "main",
             "duration": -5, "queued_duration": "soon", "created_at": "yesterday"},
            {"id": 2, "status": "success", "duration": 1e300, "queued_duration": null},
            {"status": "success"},
            {"id": 1, "status": "success", "created_at": "2024-01-02T03:04:05.678+01:00"}
        ]"#;
    let (jobs, bad) = decode_jobs(body, usize::MAX).unwrap();
    assert_eq!(bad, 1);
    assert_eq!(
        jobs[0].status,
        JobStatus::Unknown("waiting_for_approval".into())
    );
    assert!(!jobs[0].status.is_final());
    assert_eq!(jobs[0].stage, "");
    assert_eq!(jobs[0].duration, None);
    assert_eq!(jobs[0].queued_duration, None);
    assert_eq!(jobs[0].created_at, None);
    assert_eq!(jobs[1].duration, None);
    assert_eq!(jobs[1].queued_duration, None);
    assert_eq!(
        jobs[2].created_at.map(|t| t.to_rfc3339()),
        Some("2024-01-02T02:04:05.678+00:00".to_string())
    );
}

#[test]
fn one_bad_job_does_not_poison_its_page() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut body = Vec::new();
    body.extend_from_slice(br#"[{"id": 7, "status": "success"},"#);
    // Invalid UTF-8: replaced, the job survives.
    body.extend_from_slice(b"{\"id\": 6, \"status\": \"success\", \"name\": \"r\xff\xfespec\"},");
    // A lone surrogate, a number out of range, nesting beyond any limit: each job is bad.
    body.extend_from_slice(br#"{"id": 5, "status": "success", "name": "\ud800"},"#);
    body.extend_from_slice(br#"{"id": 4, "status": "success", "duration": 1e400},"#);
    body.extend_from_slice(
        format!(r#"{{"id": 3, "status": "success", "runner": {deep}}},"#).as_bytes(),
    );
    body.extend_from_slice(
        format!(r#"{{"id": 2, "status": "success", "extra": {deep}}},"#).as_bytes(),
    );
    // An id no GitLab can have (its ids are bigint) would raise the high-water mark
    // past every real job for good.
    body.extend_from_slice(br#"{"id": 18446744073709551615, "status": "success"},"#);
    body.extend_from_slice(br#"{"id": 1, "status": "failed"}]"#);
    let (jobs, bad) = decode_jobs(&body, usize::MAX).unwrap();
    let ids: Vec<u64> = jobs.iter().map(|j| j.id).collect();
    // An unknown field is skipped without recursion, so even a deep one costs nothing.
    assert_eq!(ids, [7, 6, 2, 1]);
    assert_eq!(bad, 4);
    assert_eq!(jobs[1].name, "r\u{fffd}\u{fffd}spec");
    assert!(matches!(
        decode_jobs(&body, 7),
        Err(DecodeError::TooManyItems(7))
    ));
    // Still refused whole: what is not a JSON array at all.
    assert!(decode_jobs(b"<html>", usize::MAX).is_err());
    assert!(decode_jobs(b"[{\"id\": 1}", usize::MAX).is_err());
    assert!(decode_jobs(b"[] trailing", usize::MAX).is_err());
}

#[test]
fn project_pages_are_bounded_and_paths_checked() {
    let item = |id: u64, path: &str| serde_json::json!({"id": id, "path_with_namespace": path});
    let page: Vec<_> = (1..=101).map(|i| item(i, &format!("g/p{i}"))).collect();
    let body = serde_json::to_vec(&page).unwrap();
    assert!(matches!(
        decode_projects(&body, 100),
        Err(DecodeError::TooManyItems(100))
    ));
    assert_eq!(decode_projects(&body, 101).unwrap().0.len(), 101);
    let body = serde_json::to_vec(&serde_json::json!([
        item(1, "g/ok"),
        item(2, "g/forged\n2026-01-01 INFO fake"),
        item(3, "g/\u{1b}[31mred"),
        item(4, &"x".repeat(MAX_PATH_BYTES + 1)),
        item(5, ""),
    ]))
    .unwrap();
    let (projects, bad) = decode_projects(&body, 100).unwrap();
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].path_with_namespace, "g/ok");
    assert_eq!(bad, 4);
}

#[test]
fn unknown_statuses_share_one_label() {
    assert_eq!(
        JobStatus::from("waiting_for_approval".to_string()).label(),
        "unknown"
    );
    assert_eq!(JobStatus::Running.label(), "running");
}

#[test]
fn status_round_trips() {
    for s in JobStatus::NON_FINAL {
        assert_eq!(JobStatus::from(s.as_str().to_string()), s);
        assert!(!s.is_final());
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_jobs(&bytes, usize::MAX);
        }

        #[test]
        fn any_json_job_shape_decodes_or_is_skipped(
            id in prop_oneof![Just(serde_json::json!(null)), any::<i64>().prop_map(|v| serde_json::json!(v))],
            status in prop_oneof![Just(serde_json::json!("success")), Just(serde_json::json!(null)), "[a-z_]{0,12}".prop_map(|s| serde_json::json!(s))],
            duration in prop_oneof![Just(serde_json::json!(null)), any::<f64>().prop_map(|v| serde_json::json!(v)), Just(serde_json::json!("x"))],
            started in prop_oneof![Just(serde_json::json!(null)), Just(serde_json::json!("2024-01-01T00:00:00.000Z")), Just(serde_json::json!(17))],
        ) {
            let body = serde_json::to_vec(&serde_json::json!([{
                "id": id, "status": status, "duration": duration, "started_at": started,
                "failure_reason": null, "pipeline": {"id": "x"}, "stage": 3
            }])).unwrap();
            let (jobs, bad) = decode_jobs(&body, usize::MAX).unwrap();
            prop_assert_eq!(jobs.len() + bad, 1);
            for j in jobs {
                prop_assert!(j.duration.is_none_or(|d| (0.0..=MAX_PLAUSIBLE_SECONDS).contains(&d)));
            }
        }
    }
}

#[test]
fn pipeline_created_at_is_read_leniently() {
    let body = br#"[
        {"id": 1, "status": "success", "pipeline": {"id": 6, "created_at": "2026-01-01T10:00:00.000Z", "sha": "x"}},
        {"id": 2, "status": "success", "pipeline": {"id": 7, "created_at": 12}},
        {"id": 3, "status": "success", "pipeline": {"id": "8", "created_at": "soon"}},
        {"id": 4, "status": "success", "pipeline": null}
    ]"#;
    let (jobs, bad) = decode_jobs(body, usize::MAX).unwrap();
    assert_eq!(bad, 0);
    assert_eq!(jobs[0].pipeline_id(), Some(6));
    assert_eq!(
        jobs[0].pipeline.created_at,
        parse_time("2026-01-01T10:00:00.000Z")
    );
    assert_eq!(
        (jobs[1].pipeline_id(), jobs[1].pipeline.created_at),
        (Some(7), None)
    );
    assert_eq!(
        (jobs[2].pipeline_id(), jobs[2].pipeline.created_at),
        (None, None)
    );
    assert_eq!(jobs[3].pipeline, crate::model::JobPipeline::default());
}
