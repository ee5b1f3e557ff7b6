//! Capturing a job's graph instead of running it: how every process of a
//! cluster gets the graph of a job whose operators are closures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use floe::api::executor::{CaptureError, capture_job};
use floe::core::JobId;
use floe::prelude::*;
use floe::runtime::JobManager;
use floe::runtime::plan::{PlanSignature, cap_parallelism};

/// A keyed job whose source counts what it generates.
fn keyed_job(
    p: u32,
    generated: Arc<AtomicU64>,
    out: CollectSink<(u64, u64)>,
) -> anyhow::Result<()> {
    let env = StreamEnvironment::new();
    env.set_parallelism(p);
    env.from_source(
        GeneratorSource::new(1000, move |i| {
            generated.fetch_add(1, Ordering::SeqCst);
            i % 10
        }),
        "numbers",
    )
    .uid("numbers")
    .map(|k: u64| (k, 1u64))
    .key_by(|r: &(u64, u64)| r.0)
    .sum(|r: &mut (u64, u64)| &mut r.1)
    .uid("sum")
    .sink_to(out, "collect");
    env.execute("captured keyed job")?;
    Ok(())
}

fn job_id() -> JobId {
    "00112233445566778899aabbccddeeff".parse().unwrap()
}

fn signature(p: u32) -> PlanSignature {
    let generated = Arc::new(AtomicU64::new(0));
    let (sink, results) = CollectSink::new();
    let job = capture_job(job_id(), || keyed_job(p, generated.clone(), sink)).expect("a graph");
    assert_eq!(job.job_name, "captured keyed job");
    assert_eq!(
        job.settings.job_id,
        Some(job_id()),
        "the id it was captured for"
    );
    assert_eq!(generated.load(Ordering::SeqCst), 0, "nothing ran");
    assert!(results.is_empty(), "nothing ran");
    let plan = JobManager::new(job.settings)
        .plan(&job.graph)
        .expect("plans");
    PlanSignature::of(&job.graph, &plan)
}

#[test]
fn a_captured_job_does_not_run_and_captures_the_same_plan_twice() {
    let a = signature(2);
    assert_eq!(a.vertices.len(), 4, "{a:?}");
    assert_eq!(a.vertices[0].0, "Source: numbers");
    assert_eq!(a.vertices[0].1, "numbers");
    assert_eq!(a.vertices[2].1, "sum");
    assert!(a.vertices.iter().all(|v| v.2 == 2), "{a:?}");
    assert!(a.edges.iter().any(|e| e.2 == "HASH"), "{a:?}");
    assert_eq!(signature(2).mismatch(&a), None);
}

#[test]
fn a_different_build_is_named_by_its_first_difference() {
    let why = signature(3).mismatch(&signature(2)).expect("they differ");
    assert!(
        why.contains("'Source: numbers'") && why.contains("parallelism 3"),
        "{why}"
    );
    assert!(why.contains("parallelism 2"), "{why}");
}

#[test]
fn a_plan_capped_at_fewer_slots_is_the_plan_of_the_lower_parallelism() {
    // What a restart on two of three slots runs: the JobManager and each
    // TaskManager cap the graph of the job captured at p = 3 and must
    // agree with each other and with the job planned at p = 2 (same uids,
    // key groups and chains).
    let generated = Arc::new(AtomicU64::new(0));
    let (sink, _results) = CollectSink::new();
    let job = capture_job(job_id(), || keyed_job(3, generated.clone(), sink)).expect("a graph");
    let plan = JobManager::new(job.settings)
        .plan(&job.graph)
        .expect("plans");
    let capped = cap_parallelism(&job.graph, 2);
    assert_eq!(PlanSignature::of(&capped, &plan), signature(2));
    assert_eq!(
        PlanSignature::of(&cap_parallelism(&job.graph, 5), &plan),
        signature(3),
        "a cap above the parallelism changes nothing"
    );
}

#[test]
fn a_job_that_fails_or_never_executes_is_a_capture_error() {
    let e = capture_job(job_id(), || Ok(())).err().expect("no graph");
    assert!(matches!(e, CaptureError::NoExecute), "{e}");
    let e = capture_job(job_id(), || anyhow::bail!("--input is missing"))
        .err()
        .expect("no graph");
    assert_eq!(e.to_string(), "--input is missing");
}

#[test]
fn execute_runs_again_once_the_capture_is_over() {
    let _ = signature(1);
    let generated = Arc::new(AtomicU64::new(0));
    let (sink, results) = CollectSink::new();
    keyed_job(1, generated.clone(), sink).expect("runs");
    assert_eq!(generated.load(Ordering::SeqCst), 1000);
    let results = results.snapshot();
    let total: u64 = (0..10)
        .map(|k| {
            results
                .iter()
                .filter(|(key, _)| *key == k)
                .map(|(_, c)| *c)
                .max()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(total, 1000, "every key's final count is its 100 records");
}
