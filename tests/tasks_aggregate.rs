//! The hash aggregation task end to end: spilling with few and many distinct keys, not spilling
//! with ample memory, a spill asked for by another consumer, every aggregate checked against
//! an independent `HashMap` pass.

use std::sync::{Arc, Mutex};

use spillway::conf::SparkConf;
use spillway::executor::Executor;
use spillway::layout::Layout;
use spillway::memory::Unspillable;
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

/// A 15 MiB unified pool: 7.5 MiB per task with two running, room for the 6 MiB first table
/// but not for its doubling.
const SMALL: &[(&str, &str)] = &[("spark.memory.fraction", "0.05")];

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
    // The map spills once its estimate (48 bytes a key) passes 5 MiB and cannot double:
    // ~110 K keys. "Fewer": 200 K keys, each seen ~3 times; "many": up to 2 M, mostly once.
    for (distinct_keys, min_spills) in [(200_000, 1), (2_000_000, 3)] {
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
            if distinct_keys == 200_000 {
                // Every key of the expected map came out once.
                assert!(m.records_out > 180_000 && m.records_out <= 200_000, "{m:?}");
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
    let ex = executor(SMALL);
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
            // 100 keys never reach the 5 MiB threshold; another consumer's request does.
            let other = ctx.memory.register("other", Arc::new(Unspillable));
            let page = other.allocate_page(pool - (1 << 20))?;
            let m = agg.metrics();
            assert_eq!((m.spill_count, m.spills_for_others), (1, 1), "{m:?}");
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
        assert!(m.spill_count >= 3, "{name}: {m:?}");
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
