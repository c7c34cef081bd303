use std::collections::BTreeMap;

use prometheus::{Encoder, TextEncoder};
use proptest::prelude::*;

use super::*;
use crate::labels::{Droppable, LabelsConfig, RunnerMode};
use crate::model::{JobRunner, JobStatus};
use crate::tracker::{Event, JobLabels};

/// What the `prometheus` crate's encoder writes for the same series: the reference.
fn encoder_text(
    jobs: &BTreeMap<String, ProjectSeries>,
    bounds: &Bounds,
    layout: &Layout,
) -> String {
    let families = jobs::families(jobs.iter(), bounds, layout);
    let mut buf = Vec::new();
    TextEncoder::new().encode(&families, &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

fn direct_text(jobs: &BTreeMap<String, ProjectSeries>, bounds: &Bounds, layout: &Layout) -> String {
    let mut len = Len::default();
    let mut buf = Vec::new();
    for f in Family::ALL {
        f.write(&mut len, jobs, bounds, layout);
        f.write(&mut buf, jobs, bounds, layout);
    }
    assert!(len.0 >= buf.len(), "size bound {} < {}", len.0, buf.len());
    String::from_utf8(buf).unwrap()
}

/// Label values that need escaping, multi-byte ones, and plain ones.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z]{1,6}",
        2 => "(?s)[a-z\"\\\\\n é😀/{}=,#]{0,8}",
        1 => Just(String::new()),
    ]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        0.0..1e4f64,
        Just(0.0),
        Just(1e-7),
        Just(0.1),
        Just(1e21),
        Just(123456789.125),
        1e-300..1e300f64,
    ]
}

fn labels() -> impl Strategy<Value = JobLabels> {
    (value(), value(), value(), prop::option::of(value())).prop_map(
        |(ref_, stage, name, runner)| JobLabels {
            ref_,
            stage,
            name,
            tag: false,
            runner: runner.map(|d| JobRunner {
                description: d,
                runner_type: "group_type".into(),
            }),
        },
    )
}

fn event() -> impl Strategy<Value = Event> {
    let status = prop::sample::select(vec![
        JobStatus::Success,
        JobStatus::Failed,
        JobStatus::Canceled,
        JobStatus::Skipped,
    ]);
    prop_oneof![
        (labels(), number()).prop_map(|(labels, queued_duration)| Event::Started {
            labels,
            queued_duration
        }),
        (labels(), status, value(), prop::option::of(number())).prop_map(
            |(labels, status, failure_reason, duration)| Event::Completed {
                labels,
                status,
                failure_reason,
                duration,
                finished_at: None,
            }
        ),
    ]
}

fn layout() -> impl Strategy<Value = Layout> {
    let runner = prop::sample::select(vec![
        RunnerMode::None,
        RunnerMode::Description,
        RunnerMode::Type,
    ]);
    let drop = prop::sample::subsequence(Droppable::ALL.to_vec(), 0..=Droppable::ALL.len());
    (runner, drop).prop_map(|(runner, drop)| {
        Layout::new(&LabelsConfig {
            runner,
            drop,
            ..Default::default()
        })
    })
}

fn bounds() -> impl Strategy<Value = Bounds> {
    let one = prop_oneof![
        Just(vec![1.0, 5.0, 60.0]),
        Just(vec![0.005, 0.25, 1e9]),
        Just(vec![0.5, f64::INFINITY]),
        Just(vec![]),
    ];
    (one.clone(), one).prop_map(|(duration, queued)| Bounds { duration, queued })
}

fn series(
    projects: Vec<(String, Vec<Event>)>,
    bounds: &Bounds,
    layout: &Layout,
    max: usize,
) -> BTreeMap<String, ProjectSeries> {
    let mut room = jobs::Room {
        max,
        used: [0; 3],
        folded: false,
    };
    let mut jobs: BTreeMap<String, ProjectSeries> = BTreeMap::new();
    for (project, events) in projects {
        jobs.entry(project)
            .or_default()
            .apply(&events, bounds, layout, &mut room);
    }
    jobs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn job_families_are_byte_for_byte_the_encoders(
        projects in prop::collection::vec((value(), prop::collection::vec(event(), 0..12)), 0..5),
        layout in layout(),
        bounds in bounds(),
        max in prop_oneof![Just(usize::MAX), 1usize..6],
    ) {
        let jobs = series(projects, &bounds, &layout, max);
        let reference = encoder_text(&jobs, &bounds, &layout);
        prop_assert_eq!(&direct_text(&jobs, &bounds, &layout), &reference);
        // Keys read from a checkpoint have no block yet: the same text, made on the fly, and
        // once labelled.
        let mut restored: BTreeMap<String, ProjectSeries> =
            serde_json::from_str(&serde_json::to_string(&jobs).unwrap()).unwrap();
        prop_assert_eq!(&direct_text(&restored, &bounds, &layout), &reference);
        for s in restored.values_mut() {
            s.label(&layout);
        }
        prop_assert!(restored.values().all(|s| s.total.keys().all(|k| k.block().is_some())));
        prop_assert_eq!(&direct_text(&restored, &bounds, &layout), &reference);
    }
}

#[test]
fn escapes_label_values_and_writes_counts_as_the_encoder() {
    let layout = Layout::default();
    let bounds = Bounds {
        duration: vec![1.0],
        queued: vec![1.0],
    };
    let labels = JobLabels {
        ref_: "a\"b\\c\nd é😀".into(),
        stage: "test".into(),
        name: "x".into(),
        tag: false,
        runner: None,
    };
    let done = Event::Completed {
        labels,
        status: JobStatus::Success,
        failure_reason: String::new(),
        duration: Some(0.1 + 0.2),
        finished_at: None,
    };
    let jobs = series(
        vec![("g/\"p\"".into(), vec![done.clone(), done])],
        &bounds,
        &layout,
        9,
    );
    let text = direct_text(&jobs, &bounds, &layout);
    assert_eq!(text, encoder_text(&jobs, &bounds, &layout));
    assert!(
        text.contains(
            r#"gitlab_ci_jobs_total{failure_reason="",job="x",project="g/\"p\"",ref="a\"b\\c\nd é😀",stage="test",status="success"} 2"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"le="+Inf"} 2"#), "{text}");
    assert!(text.contains("} 0.6000000000000001\n"), "{text}");
    // Counts past 2^53 are written as the encoder writes their f64.
    let mut big = jobs.clone();
    for n in big.values_mut().flat_map(|s| s.total.values_mut()) {
        *n = u64::MAX - 5;
    }
    assert_eq!(
        direct_text(&big, &bounds, &layout),
        encoder_text(&big, &bounds, &layout)
    );
}
