//! The hash aggregation task end to end: spilling with few and many distinct keys, not spilling
//! with ample memory, a spill asked for by another consumer, every aggregate checked against
//! an independent `HashMap` pass.

use std::sync::{Arc, Mutex};

use spillway::conf::SparkConf;
use spillway::executor::Executor;
use spillway::layout::Layout;
use spillway::memory::{MemoryMode, Unspillable};
use spillway::scheduler::run_stage;
use spillway::tasks::aggregate::{
    AggregateSpec, SpillableAggregator, expected_aggregates, run_aggregate_task,
};
use spillway::tasks::{TaskError, TaskMetrics};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn executor(extra: &[(&str, &str)]) -> Executor {
    let mut conf = SparkConf::new()
        .with("spark.executor.memory", "600m")
        .with("spark.executor.cores", "2")
        .with("spark.buffer.pageSize", "1m");
    for (k, v) in extra {
        conf = conf.with(k, v);
    }
    let layout = Layout::from_conf(&conf, None).unwrap();
    Executor::start(&layout, &conf).unwrap()
}

/// A 6 MiB unified pool. The map's first 5 MiB are outside it (§8.1); with the pool to itself
/// a map is granted 5 MiB at an estimate of 5 MiB, then the last 1 MiB, and spills at 11 MiB
/// (~240 K keys); with two tasks running, each is held to 3 MiB and spills at 8 MiB.
const SMALL: &[(&str, &str)] = &[("spark.memory.fraction", "0.02")];

fn stage(ex: &Executor, spec: &AggregateSpec) -> Vec<TaskMetrics> {
    let runs = run_stage(ex, 5, 3, true, |ctx| run_aggregate_task(ctx, spec), |_| {});
    let ms: Vec<TaskMetrics> = runs
        .into_iter()
        .map(|r| {
            r.result
                .unwrap_or_else(|e| panic!("task {}: {e}", r.partition))
        })
        .collect();
    for m in &ms {
        assert!(m.verification.ok, "{m:?}");
        assert_eq!(m.records_in, spec.records_per_task);
        assert_eq!(m.records_out, m.verification.output_records);
        assert_eq!(m.verification.output_records, m.verification.input_records);
    }
    assert_eq!(ex.local_dirs().file_count(), 0, "spill files left behind");
    assert_eq!(ex.memory_manager().execution_memory_used(), 0);
    ms
}

#[test]
fn spills_and_verifies_with_fewer_and_many_distinct_keys() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A map spills when its estimate (48 bytes a key) reaches 5 MiB plus what it was granted:
    // at most 11 MiB (~240 K keys) alone, 8 MiB (~175 K) beside another task. "Fewer": 400 K
    // keys (~310 K distinct, some seen twice or more); "many": up to 2 M, mostly once (~520 K
    // distinct).
    for (distinct_keys, min_spills) in [(400_000, 1), (2_000_000, 2)] {
        let ex = executor(SMALL);
        let spec = AggregateSpec {
            records_per_task: 600_000,
            record_bytes: 56,
            seed: 3,
            distinct_keys,
        };
        for m in stage(&ex, &spec) {
            assert!(m.spill_count >= min_spills, "{distinct_keys} keys: {m:?}");
            assert!(m.disk_bytes_spilled > 0 && m.memory_bytes_spilled > 0);
            if distinct_keys == 400_000 {
                // Every key of the expected map came out once.
                assert!(m.records_out > 290_000 && m.records_out <= 400_000, "{m:?}");
            }
        }
    }
}

#[test]
fn ample_memory_does_not_spill() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ex = executor(&[("spark.executor.memory", "2g")]);
    let spec = AggregateSpec {
        records_per_task: 600_000,
        record_bytes: 56,
        seed: 3,
        distinct_keys: 2_000_000,
    };
    for m in stage(&ex, &spec) {
        assert_eq!(m.spill_count, 0, "{m:?}");
        assert_eq!((m.disk_bytes_spilled, m.memory_bytes_spilled), (0, 0));
    }
}

#[test]
fn few_keys_spill_when_another_consumer_asks() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A 1 KiB first threshold: 100 keys (4.8 KB) hold execution memory, so the task memory
    // manager counts the map among the consumers it can spill (only those holding memory).
    let ex = executor(
        &[
            SMALL,
            &[("spark.shuffle.spill.initialMemoryThreshold", "1k")],
        ]
        .concat(),
    );
    let pool = ex.layout().unified as u64;
    let spec = AggregateSpec {
        records_per_task: 50_000,
        record_bytes: 56,
        seed: 9,
        distinct_keys: 100,
    };
    let runs = run_stage(
        &ex,
        0,
        1,
        true,
        |ctx| -> Result<(), TaskError> {
            let seed = 1234;
            let mut agg = SpillableAggregator::new(ctx);
            let mut buf = vec![0u8; 56];
            let mut feed = |agg: &mut SpillableAggregator, from: u64, to: u64| {
                for i in from..to {
                    spillway::tasks::aggregate::write_record(seed, spec.distinct_keys, i, &mut buf);
                    let k = u64::from_le_bytes(buf[0..8].try_into().unwrap());
                    let v = u64::from_le_bytes(buf[8..16].try_into().unwrap());
                    agg.insert(k, v)?;
                }
                Ok::<(), TaskError>(())
            };
            feed(&mut agg, 0, 25_000)?;
            // 100 keys never spill by themselves; another consumer's request for the whole
            // pool does, and gets back what the map was granted (`threshold − initial`).
            let granted = agg.threshold() - 1024;
            assert!(granted > 0);
            assert_eq!(ctx.memory.consumers()[0].used, granted);
            let other = ctx.memory.register("other", Arc::new(Unspillable));
            let page = other.allocate_page(pool)?;
            let m = agg.metrics();
            assert_eq!((m.spill_count, m.spills_for_others), (1, 1), "{m:?}");
            assert_eq!(m.memory_bytes_spilled, granted, "{m:?}");
            assert_eq!(agg.threshold(), 1024);
            drop(page);
            feed(&mut agg, 25_000, 50_000)?;
            let mut expected = expected_aggregates(&spec, seed);
            let mut keys = 0;
            agg.finish(|k, c, s| {
                assert_eq!(expected.remove(&k), Some((c, s)), "key {k}");
                keys += 1;
            })?;
            assert!(expected.is_empty());
            assert_eq!(keys, 100);
            Ok(())
        },
        |_| {},
    );
    if let Err(e) = &runs[0].result {
        panic!("{e}");
    }
    assert_eq!(ex.local_dirs().file_count(), 0);
}

/// The spills' compression: off, and each codec (`spark.shuffle.spill.compress`,
/// `spark.io.compression.codec`; on with lz4 by default).
const COMPRESSIONS: [(&str, &[(&str, &str)]); 4] = [
    ("off", &[("spark.shuffle.spill.compress", "false")]),
    ("lz4", &[]),
    ("snappy", &[("spark.io.compression.codec", "snappy")]),
    ("zstd", &[("spark.io.compression.codec", "zstd")]),
];

/// The aggregation spills `(key, count, sum)` entries of small numbers, which compress: with
/// each codec it verifies and writes fewer bytes than with compression off; the in-memory
/// side (`memoryBytesSpilled`, the spills) is the same. One task, so the spills are too.
#[test]
fn the_aggregation_verifies_with_each_codec_and_its_spills_shrink() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let spec = AggregateSpec {
        records_per_task: 600_000,
        record_bytes: 56,
        seed: 3,
        distinct_keys: 2_000_000,
    };
    let mut seen: Vec<(&str, TaskMetrics)> = Vec::new();
    for (name, extra) in COMPRESSIONS {
        let ex = executor(&[SMALL, extra].concat());
        let runs = run_stage(
            &ex,
            5,
            1,
            true,
            |ctx| run_aggregate_task(ctx, &spec),
            |_| {},
        );
        let m = match &runs[0].result {
            Ok(m) => m.clone(),
            Err(e) => panic!("{name}: {e}"),
        };
        assert!(m.verification.ok, "{name}: {m:?}");
        assert!(m.spill_count >= 2, "{name}: {m:?}");
        assert_eq!(
            ex.local_dirs().file_count(),
            0,
            "{name}: spills left behind"
        );
        seen.push((name, m));
    }
    let (_, off) = &seen[0];
    for (name, m) in &seen[1..] {
        assert_eq!(
            (m.spill_count, m.memory_bytes_spilled, m.records_out),
            (off.spill_count, off.memory_bytes_spilled, off.records_out),
            "{name}: the same spills as without compression"
        );
        assert_eq!(m.verification.output_digest, off.verification.output_digest);
        assert!(
            m.disk_bytes_spilled * 10 < off.disk_bytes_spilled * 9,
            "{name}: {} bytes on disk, {} uncompressed",
            m.disk_bytes_spilled,
            off.disk_bytes_spilled
        );
    }
}

/// Runs `body` as the one task of a one-task stage and fails the test on its error.
fn one_task(
    ex: &Executor,
    body: impl Fn(&spillway::scheduler::TaskContext) -> Result<(), TaskError> + Sync,
) {
    let runs = run_stage(ex, 0, 1, true, body, |_| {});
    if let Err(e) = &runs[0].result {
        panic!("{e}");
    }
    assert_eq!(ex.local_dirs().file_count(), 0, "spill files left behind");
    assert_eq!(ex.memory_manager().execution_memory_used(), 0);
    assert_eq!(
        ex.user_allocator().allocated_bytes(),
        0,
        "heap table left behind"
    );
}

/// §8.1: the first `initialMemoryThreshold` bytes are not taken from the pool. A map of 100 K
/// keys (an estimate of 4.8 MB) holds no execution memory; its table is heap memory nothing
/// accounts, in the user range, at most 5 MiB. One key more than 5 MiB / 48 and it asks.
#[test]
fn the_first_threshold_is_heap_memory_outside_the_pool() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ex = executor(&[]);
    let initial: u64 = 5 << 20;
    one_task(&ex, |ctx| {
        let mut agg = SpillableAggregator::new(ctx);
        for k in 0..100_000 {
            agg.insert(k, 1)?;
        }
        assert_eq!(ctx.memory.peak_execution_memory(), 0);
        assert_eq!(agg.threshold(), initial);
        let heap = agg.heap_table_bytes();
        assert!(heap >= 100_000 * 2 * 24 && heap <= initial, "{heap}");
        assert!(ex.user_allocator().allocated_bytes() >= heap);
        // 109_227 keys estimate 5_242_896 bytes ≥ 5 MiB: the next check (a multiple of 32
        // records) asks the pool for 2 × estimate − threshold, which is granted in full.
        let mut k = 100_000;
        while agg.threshold() == initial {
            agg.insert(k, 1)?;
            k += 1;
            assert!(k < 120_000, "no request after {k} keys");
        }
        let estimate = (k - 1) * 48;
        assert!(
            estimate >= initial && (k - 33) * 48 < initial,
            "asked at {k} keys"
        );
        assert_eq!(agg.threshold(), 2 * estimate);
        assert_eq!(ctx.memory.consumers()[0].used, 2 * estimate - initial);
        assert_eq!(agg.metrics().spill_count, 0);
        let mut keys = 0;
        agg.finish(|key, c, s| {
            assert!(key < k && (c, s) == (1, 1));
            keys += 1;
        })?;
        assert_eq!(keys, k);
        Ok(())
    });
}

/// §8.2 with a pool smaller than the request: at `spark.memory.fraction=0.01` the unified
/// region is 3 MiB. The map asks for ~5 MiB at an estimate of 5 MiB, is granted the 3 MiB
/// there are, adds them to its threshold and goes on; at an estimate of 8 MiB nothing more is
/// granted and it spills. Never UNABLE_TO_ACQUIRE_MEMORY.
#[test]
fn a_partial_grant_raises_the_threshold_and_the_map_spills_later() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ex = executor(&[("spark.memory.fraction", "0.01")]);
    let initial: u64 = 5 << 20;
    let pool = ex.layout().unified as u64;
    one_task(&ex, |ctx| {
        let mut agg = SpillableAggregator::new(ctx);
        let mut k = 0u64;
        while agg.threshold() == initial {
            agg.insert(k, 1)?;
            k += 1;
            assert!(k < 200_000);
        }
        assert_eq!(
            agg.threshold(),
            initial + pool,
            "the whole pool, less than asked"
        );
        assert!(2 * (k - 1) * 48 - initial > pool);
        assert_eq!(agg.metrics().spill_count, 0);
        while agg.metrics().spill_count == 0 {
            agg.insert(k, 1)?;
            k += 1;
            assert!(k < 400_000);
        }
        // Spilled at the first check (before inserting key k − 1) with estimate ≥ threshold.
        let at = k - 1;
        assert!(
            at * 48 >= initial + pool && (at - 32) * 48 < initial + pool,
            "{at}"
        );
        assert_eq!(agg.threshold(), initial);
        assert_eq!(ctx.memory.consumers()[0].used, 0);
        let m = agg.metrics();
        assert_eq!(m.memory_bytes_spilled, at * 48);
        let mut keys = 0;
        agg.finish(|key, c, s| {
            assert!(key < k && (c, s) == (1, 1));
            keys += 1;
        })?;
        assert_eq!(keys, k);
        Ok(())
    });
}

/// `Spillable` is an ON_HEAP consumer: in a task whose Tungsten pages are OFF_HEAP, the map's
/// grants still come from the on-heap execution pool.
#[test]
fn the_map_is_on_heap_in_an_off_heap_task() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ex = executor(&[
        ("spark.memory.offHeap.enabled", "true"),
        ("spark.memory.offHeap.size", "64m"),
        ("spark.shuffle.spill.initialMemoryThreshold", "64k"),
    ]);
    one_task(&ex, |ctx| {
        assert_eq!(ctx.memory.tungsten_mode(), MemoryMode::OffHeap);
        let mut agg = SpillableAggregator::new(ctx);
        for k in 0..10_000 {
            agg.insert(k, k)?;
        }
        let granted = agg.threshold() - (64 << 10);
        assert!(granted > 0);
        let mm = ex.memory_manager();
        assert_eq!(
            mm.execution_memory_used_by_in(ctx.task_attempt_id, MemoryMode::OnHeap),
            granted
        );
        assert_eq!(
            mm.execution_memory_used_by_in(ctx.task_attempt_id, MemoryMode::OffHeap),
            0
        );
        // Spark 4's per-mode peaks: all of it on-heap.
        assert_eq!(
            ctx.memory.peak_execution_memory_in(MemoryMode::OnHeap),
            granted
        );
        assert_eq!(ctx.memory.peak_execution_memory_in(MemoryMode::OffHeap), 0);
        let mut keys = 0;
        agg.finish(|key, c, s| {
            assert_eq!((c, s), (1, key));
            keys += 1;
        })?;
        assert_eq!(keys, 10_000);
        Ok(())
    });
}

/// `spark.shuffle.spill.numElementsForceSpillThreshold=1000`: the map spills once more than
/// 1000 records arrived since its last spill — before records 1002, 2003, ... of 10 000: nine
/// spills — and the aggregates still verify.
#[test]
fn the_force_spill_threshold_spills_every_thousand_and_one_records() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ex = executor(&[("spark.shuffle.spill.numElementsForceSpillThreshold", "1000")]);
    let spec = AggregateSpec {
        records_per_task: 10_000,
        record_bytes: 56,
        seed: 5,
        distinct_keys: 100,
    };
    let runs = run_stage(
        &ex,
        0,
        1,
        true,
        |ctx| run_aggregate_task(ctx, &spec),
        |_| {},
    );
    let m = runs[0].result.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert!(m.verification.ok, "{m:?}");
    assert_eq!(m.spill_count, 9, "{m:?}");
    assert_eq!(ex.local_dirs().file_count(), 0);
}
