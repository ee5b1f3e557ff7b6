//! Invalid job graphs and configurations are clear errors reported by
//! `execute` before anything runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use floe::prelude::*;
use floe::runtime::{GraphError, JobError, RestoreConflict};

/// A parallel source that counts the records it generates: it must stay at
/// zero for a job rejected before running.
fn counting_source(generated: &Arc<AtomicU64>) -> GeneratorSource<u64> {
    let g = generated.clone();
    GeneratorSource::new(1000, move |i| {
        g.fetch_add(1, Ordering::SeqCst);
        i
    })
}

/// Executes and expects the invalid-graph error `expected`, with a message
/// mentioning every part.
fn expect_invalid_graph(
    env: &StreamEnvironment,
    generated: &Arc<AtomicU64>,
    expected: GraphError,
    parts: &[&str],
) {
    let err = env
        .execute("invalid")
        .expect_err("the job must be rejected");
    let text = err.to_string();
    match err {
        JobError::InvalidGraph(e) => assert_eq!(e, expected),
        other => panic!("expected InvalidGraph, got {other:?}"),
    }
    for p in parts {
        assert!(text.contains(p), "{text:?} should contain {p:?}");
    }
    assert_eq!(generated.load(Ordering::SeqCst), 0, "nothing ran");
}

#[test]
fn forward_between_different_parallelism_is_rejected() {
    let generated = Arc::new(AtomicU64::new(0));
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    let (sink, _) = CollectSink::new();
    env.from_source(counting_source(&generated), "numbers")
        .forward()
        .map(|x: u64| x)
        .name("wider map")
        .set_parallelism(3)
        .sink_to(sink, "collect");
    expect_invalid_graph(
        &env,
        &generated,
        GraphError::ForwardChangesParallelism {
            upstream: "Source: numbers".into(),
            upstream_parallelism: 2,
            downstream: "wider map".into(),
            downstream_parallelism: 3,
        },
        &[
            "forward",
            "'Source: numbers' (parallelism 2)",
            "'wider map' (parallelism 3)",
        ],
    );
}

#[test]
fn non_parallel_source_with_parallelism_two_is_rejected() {
    let generated = Arc::new(AtomicU64::new(0));
    let env = StreamEnvironment::new();
    let (sink, _) = CollectSink::new();
    env.from_collection(vec![1u64, 2, 3])
        .set_parallelism(2)
        .sink_to(sink, "collect");
    expect_invalid_graph(
        &env,
        &generated,
        GraphError::NonParallelSource {
            operator: "Source: Collection Source".into(),
            parallelism: 2,
        },
        &[
            "Collection Source",
            "not parallel",
            "parallelism 1",
            "not 2",
        ],
    );
}

#[test]
fn non_parallel_source_keeps_parallelism_one_under_a_higher_default() {
    let env = StreamEnvironment::new();
    env.set_parallelism(4);
    let (sink, out) = CollectSink::new();
    env.from_collection(vec![1u64, 2, 3])
        .sink_to(sink, "collect");
    env.execute("default").unwrap();
    let mut got = out.snapshot();
    got.sort();
    assert_eq!(got, vec![1, 2, 3]);
}

#[test]
fn parallelism_above_max_parallelism_is_rejected() {
    // Job-wide max parallelism below the default parallelism.
    let generated = Arc::new(AtomicU64::new(0));
    let env = StreamEnvironment::new();
    env.set_parallelism(8);
    env.set_max_parallelism(4);
    let (sink, _) = CollectSink::new();
    env.from_source(counting_source(&generated), "numbers")
        .sink_to(sink, "collect");
    expect_invalid_graph(
        &env,
        &generated,
        GraphError::ParallelismAboveMax {
            operator: "Source: numbers".into(),
            parallelism: 8,
            max_parallelism: 4,
        },
        &["parallelism 8", "above its max parallelism 4"],
    );

    // Operator-level max parallelism below the operator's parallelism.
    let env = StreamEnvironment::new();
    env.set_parallelism(2);
    let (sink, _) = CollectSink::new();
    env.from_source(counting_source(&generated), "numbers")
        .key_by(|x: &u64| *x)
        .sum(|x: &mut u64| x)
        .name("summer")
        .set_parallelism(6)
        .set_max_parallelism(5)
        .sink_to(sink, "collect");
    expect_invalid_graph(
        &env,
        &generated,
        GraphError::ParallelismAboveMax {
            operator: "summer".into(),
            parallelism: 6,
            max_parallelism: 5,
        },
        &["'summer'", "parallelism 6", "max parallelism 5"],
    );

    // Max parallelism beyond Flink's upper bound.
    let env = StreamEnvironment::new();
    let (sink, _) = CollectSink::new();
    env.from_source(counting_source(&generated), "numbers")
        .map(|x: u64| x)
        .name("huge")
        .set_max_parallelism(40_000)
        .sink_to(sink, "collect");
    expect_invalid_graph(
        &env,
        &generated,
        GraphError::MaxParallelismOutOfRange {
            operator: "huge".into(),
            max_parallelism: 40_000,
        },
        &["'huge'", "40000", "32768"],
    );

    // Parallelism zero.
    let env = StreamEnvironment::new();
    let (sink, _) = CollectSink::new();
    env.from_source(counting_source(&generated), "numbers")
        .map(|x: u64| x)
        .name("nothing")
        .set_parallelism(0)
        .sink_to(sink, "collect");
    expect_invalid_graph(
        &env,
        &generated,
        GraphError::ZeroParallelism {
            operator: "nothing".into(),
        },
        &["'nothing'", "parallelism 0"],
    );
}

#[test]
fn duplicate_uids_are_rejected() {
    let generated = Arc::new(AtomicU64::new(0));
    let env = StreamEnvironment::new();
    let (a, _) = CollectSink::new();
    let (b, _) = CollectSink::new();
    let s = env
        .from_source(counting_source(&generated), "numbers")
        .uid("numbers");
    s.map(|x: u64| x + 1).uid("twin").sink_to(a, "a");
    s.map(|x: u64| x + 2).uid("twin").sink_to(b, "b");
    expect_invalid_graph(
        &env,
        &generated,
        GraphError::DuplicateUid {
            uid: "twin".into(),
            first: "Map".into(),
            second: "Map".into(),
        },
        &["'twin'", "unique"],
    );

    // Distinct uids on the same graph are fine.
    let env = StreamEnvironment::new();
    let (a, out_a) = CollectSink::new();
    let (b, out_b) = CollectSink::new();
    let s = env.from_source(counting_source(&generated), "numbers");
    s.map(|x: u64| x + 1)
        .uid("one")
        .sink_to(a, "a")
        .uid("sink-a");
    s.map(|x: u64| x + 2)
        .uid("two")
        .sink_to(b, "b")
        .uid("sink-b");
    env.execute("distinct").unwrap();
    assert_eq!((out_a.len(), out_b.len()), (1000, 1000));
}

#[test]
fn bad_configuration_values_name_the_key() {
    for (key, value) in [
        ("parallelism.default", "x"),
        ("parallelism.default", "0"),
        ("pipeline.max-parallelism", "40000"),
        ("pipeline.max-parallelism", "-3"),
        ("floe.runtime.batch-size", "0"),
        ("floe.runtime.channel-capacity", "many"),
    ] {
        let generated = Arc::new(AtomicU64::new(0));
        let env = StreamEnvironment::new();
        env.set_config(key, value);
        let (sink, _) = CollectSink::new();
        env.from_source(counting_source(&generated), "numbers")
            .sink_to(sink, "collect");
        let err = env.execute("bad-config").expect_err("rejected");
        assert!(matches!(err, JobError::Config(_)), "{key}={value}: {err:?}");
        let text = err.to_string();
        assert!(
            text.contains(key) && text.contains(value),
            "{text:?} names {key} and {value}"
        );
        assert_eq!(generated.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn configuration_values_set_in_code_take_effect() {
    // Tiny batches and channels: results stay exact.
    let env = StreamEnvironment::new();
    env.set_config("parallelism.default", "3");
    env.set_config("floe.runtime.batch-size", "3");
    env.set_config("floe.runtime.channel-capacity", "1");
    assert_eq!(env.parallelism().unwrap(), 3);
    let (sink, out) = CollectSink::new();
    env.from_sequence(1, 5000)
        .rebalance()
        .map(|x: u64| (x % 13, x))
        .key_by(|(k, _): &(u64, u64)| *k)
        .sum(|(_, x): &mut (u64, u64)| x)
        .sink_to(sink, "collect");
    env.execute("tiny-batches").unwrap();
    let mut finals = std::collections::BTreeMap::new();
    for (k, s) in out.snapshot() {
        let f: &mut u64 = finals.entry(k).or_default();
        *f = (*f).max(s);
    }
    let mut expected = std::collections::BTreeMap::new();
    for x in 1..=5000u64 {
        *expected.entry(x % 13).or_default() += x;
    }
    assert_eq!(finals, expected);
    assert_eq!(out.len(), 5000);
}

/// Executing an environment without operators is an error, as in Flink.
#[test]
fn empty_environment_is_refused() {
    let env = floe::StreamEnvironment::new();
    let err = env.execute("empty").unwrap_err();
    assert!(
        matches!(err, JobError::InvalidGraph(GraphError::NoOperators)),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("no operators defined"), "{err}");
}

/// A savepoint and a retained checkpoint to start from are refused before
/// either is read: the job restores from one snapshot.
#[test]
fn two_snapshots_to_start_from_are_refused() {
    let env = StreamEnvironment::new();
    env.set_restore_from_savepoint("/nonexistent/savepoint", false);
    env.set_restore_from_checkpoint("/nonexistent/checkpoint");
    let (sink, _) = CollectSink::new();
    env.from_sequence(1, 10).sink_to(sink, "collect");
    let err = env.execute("two-snapshots").unwrap_err();
    match &err {
        JobError::Restore(RestoreConflict::TwoSnapshots {
            savepoint,
            checkpoint,
        }) => {
            assert_eq!(
                (savepoint.as_str(), checkpoint.as_str()),
                ("/nonexistent/savepoint", "/nonexistent/checkpoint")
            );
        }
        other => panic!("expected two snapshots to be refused, got {other:?}"),
    }
    assert!(
        err.to_string().contains("restore from one snapshot"),
        "{err}"
    );
}

/// The restart strategy comes from the configuration when code sets none,
/// and a bad value is a clear error naming the key.
#[test]
fn restart_strategy_from_configuration() {
    let build = |pairs: &[(&str, &str)]| {
        let env = StreamEnvironment::new();
        for (k, v) in pairs {
            env.set_config(k, v);
        }
        let (sink, out) = CollectSink::new();
        env.from_collection(vec![1u64, 2, 3])
            .map(|x: u64| x * 2)
            .sink_to(sink, "collect");
        (env, out)
    };
    let (env, out) = build(&[
        ("restart-strategy.type", "fixed-delay"),
        ("restart-strategy.fixed-delay.attempts", "3"),
        ("restart-strategy.fixed-delay.delay", "10 ms"),
    ]);
    env.execute("configured-restart").unwrap();
    let mut got = out.snapshot();
    got.sort();
    assert_eq!(got, vec![2, 4, 6]);
    // With checkpointing on, the default restarts forever; the configured
    // `none` makes the failure final.
    let env = StreamEnvironment::new();
    env.set_config("restart-strategy.type", "none");
    env.enable_checkpointing(std::time::Duration::from_millis(50));
    let (sink, _) = CollectSink::new();
    env.from_collection(vec![1u64, 2, 3])
        .map(|x: u64| if x == 2 { panic!("bad record {x}") } else { x })
        .sink_to(sink, "collect");
    let err = env.execute("no-restart").unwrap_err().to_string();
    assert!(err.contains("bad record 2"), "{err}");
    let (env, _) = build(&[("restart-strategy.type", "sometimes")]);
    let err = env.execute("bad-restart").unwrap_err();
    assert!(matches!(err, JobError::RestartStrategy(_)), "{err:?}");
    let err = err.to_string();
    assert!(
        err.contains("restart-strategy.type") && err.contains("sometimes"),
        "{err}"
    );
}

/// Checkpoint settings changed in code are validated once, together with
/// the configuration keys, and refused with the key's name, as a bad key
/// value would be.
#[test]
fn checkpoint_settings_set_in_code_are_checked_like_configuration_keys() {
    let generated = Arc::new(AtomicU64::new(0));
    let env = StreamEnvironment::new();
    env.enable_checkpointing(std::time::Duration::from_secs(1));
    env.configure_checkpointing(|c| c.with_timeout(std::time::Duration::from_millis(5)));
    let (sink, _) = CollectSink::new();
    env.from_source(counting_source(&generated), "numbers")
        .sink_to(sink, "collect");
    let err = env.execute("bad checkpoint timeout").unwrap_err();
    assert!(matches!(err, JobError::CheckpointConfig(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "checkpointing: invalid value 5ms for checkpoint setting 'execution.checkpointing.timeout': must be at least 10 ms"
    );
    assert_eq!(generated.load(Ordering::SeqCst), 0);
}
