//! The external sort task end to end through `run_stage`: spilling and not, both memory modes,
//! identical output digests, no spill file left, a second consumer forcing a spill, and
//! UNABLE_TO_ACQUIRE_MEMORY as a typed task failure.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use spillway::conf::SparkConf;
use spillway::executor::Executor;
use spillway::layout::Layout;
use spillway::memory::Unspillable;
use spillway::scheduler::{TaskFailure, run_stage};
use spillway::spill::RecordDigest;
use spillway::tasks::sort::{ExternalSorter, SortSpec, run_sort_task, write_record};
use spillway::tasks::{TaskError, TaskMetrics};

/// Each executor touches its reserved 300 MiB: run one test at a time to stay under ~1 GiB.
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

/// `spark.memory.fraction=0.05`: a 15 MiB unified pool, 7.5 MiB per task with two running.
const SMALL: &[(&str, &str)] = &[("spark.memory.fraction", "0.05")];
const LARGE: &[(&str, &str)] = &[("spark.executor.memory", "2g")];
const OFF_SMALL: &[(&str, &str)] = &[
    ("spark.memory.fraction", "0.05"),
    ("spark.memory.offHeap.enabled", "true"),
    ("spark.memory.offHeap.size", "16m"),
];
const OFF_LARGE: &[(&str, &str)] = &[
    ("spark.memory.offHeap.enabled", "true"),
    ("spark.memory.offHeap.size", "512m"),
];

fn spec() -> SortSpec {
    SortSpec {
        records_per_task: 300_000,
        record_bytes: 56,
        seed: 7,
    }
}

/// Runs a 4-task sort stage and returns each task's metrics; every task must verify.
fn sort_stage(ex: &Executor, spec: &SortSpec) -> Vec<TaskMetrics> {
    let runs = run_stage(ex, 3, 4, true, |ctx| run_sort_task(ctx, spec), |_| {});
    let metrics: Vec<TaskMetrics> = runs
        .into_iter()
        .map(|r| match r.result {
            Ok(m) => m,
            Err(e) => panic!("task {} failed: {e}", r.partition),
        })
        .collect();
    for m in &metrics {
        assert!(m.verification.ok, "{m:?}");
        assert!(m.verification.ordered);
        assert_eq!(m.records_in, spec.records_per_task);
        assert_eq!(m.records_out, spec.records_per_task);
        assert_eq!(m.verification.output_records, spec.records_per_task);
        assert!(m.peak_execution_memory > 0);
    }
    assert_eq!(ex.local_dirs().file_count(), 0, "spill files left behind");
    assert_eq!(ex.memory_manager().execution_memory_used(), 0);
    metrics
}

fn digests(ms: &[TaskMetrics]) -> Vec<(u64, u64)> {
    ms.iter()
        .map(|m| (m.verification.output_records, m.verification.output_digest))
        .collect()
}

#[test]
fn spills_or_not_the_output_is_the_same_in_both_memory_modes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let spec = spec();
    let mut seen = Vec::new();
    for (name, conf, spills) in [
        ("on-heap small", SMALL, true),
        ("on-heap large", LARGE, false),
        ("off-heap small", OFF_SMALL, true),
        ("off-heap large", OFF_LARGE, false),
    ] {
        let ex = executor(conf);
        let ms = sort_stage(&ex, &spec);
        for m in &ms {
            if spills {
                assert!(m.spill_count >= 2, "{name}: {m:?}");
                assert!(m.disk_bytes_spilled > 0, "{name}");
                assert!(m.memory_bytes_spilled > 0, "{name}");
                // A run of fixed 56-byte records: at least the records' bytes.
                assert!(m.disk_bytes_spilled >= 56 * 100_000, "{name}: {m:?}");
            } else {
                assert_eq!(m.spill_count, 0, "{name}: {m:?}");
                assert_eq!(m.disk_bytes_spilled, 0, "{name}");
                assert_eq!(m.memory_bytes_spilled, 0, "{name}");
            }
            // Input and output digests agree (checked inside) and input is the same data
            // whatever the memory.
        }
        seen.push((name, digests(&ms)));
    }
    for (name, d) in &seen[1..] {
        assert_eq!(d, &seen[0].1, "{name} differs from {}", seen[0].0);
    }
}

#[test]
fn the_metrics_serialize_with_spark_names() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ex = executor(SMALL);
    let spec = SortSpec {
        records_per_task: 50_000,
        ..spec()
    };
    let m = &sort_stage(&ex, &spec)[0];
    let json = serde_json::to_value(m).unwrap();
    for key in [
        "memoryBytesSpilled",
        "diskBytesSpilled",
        "peakExecutionMemory",
        "executorRunTime",
        "spillCount",
        "spillWriteNs",
        "spillReadNs",
        "recordsIn",
        "recordsOut",
    ] {
        assert!(json.get(key).is_some(), "{key} missing in {json}");
    }
    assert_eq!(json["verification"]["ok"], true);
}

/// The spill and page-zeroing counters belong to an executor: a second executor in the same
/// process sees none of the first one's spills, and the timeline samples each one's own.
#[test]
fn two_executors_in_one_process_keep_their_own_counters() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let a = executor(SMALL);
    let b = executor(SMALL);
    let totals = |ms: &[TaskMetrics]| {
        (
            ms.iter().map(|m| m.spill_count).sum::<u64>(),
            ms.iter().map(|m| m.disk_bytes_spilled).sum::<u64>(),
        )
    };

    // A task's memory manager counts into its own executor's metrics.
    for ex in [&a, &b] {
        let runs = run_stage(
            ex,
            0,
            1,
            true,
            |ctx| Ok::<bool, TaskError>(Arc::ptr_eq(ctx.memory.metrics(), ctx.executor.metrics())),
            |_| {},
        );
        assert!(matches!(runs[0].result, Ok(true)), "{:?}", runs[0].result);
    }
    assert!(!Arc::ptr_eq(a.metrics(), b.metrics()));

    let in_a = totals(&sort_stage(&a, &spec()));
    assert!(in_a.0 >= 4 && in_a.1 > 0, "{in_a:?}");
    assert_eq!(a.metrics().spills(), in_a);
    assert_eq!(b.metrics().spills(), (0, 0));

    let smaller = SortSpec {
        records_per_task: 150_000,
        ..spec()
    };
    let in_b = totals(&sort_stage(&b, &smaller));
    assert!(in_b.0 >= 4 && in_b.1 > 0, "{in_b:?}");
    assert_ne!(in_a, in_b);
    assert_eq!(b.metrics().spills(), in_b);
    assert_eq!(a.metrics().spills(), in_a, "b's spills counted in a");

    // The timeline reads each executor's own counters.
    let now = Instant::now();
    let sa = spillway::timeline::sample(&a, None, None, now, -1);
    let sb = spillway::timeline::sample(&b, None, None, now, -1);
    assert_eq!((sa.spills, sa.spill_bytes), in_a);
    assert_eq!((sb.spills, sb.spill_bytes), in_b);

    // Pages being zeroed in one executor are not the other's.
    assert_eq!(
        (a.metrics().touching_bytes(), b.metrics().touching_bytes()),
        (0, 0)
    );
    let zeroing = a.metrics().touching(4 << 20);
    assert_eq!(a.metrics().touching_bytes(), 4 << 20);
    assert_eq!(b.metrics().touching_bytes(), 0);
    assert_eq!(
        spillway::timeline::sample(&b, None, None, now, -1).zeroing,
        0
    );
    drop(zeroing);
    assert_eq!(a.metrics().touching_bytes(), 0);
}

#[test]
fn another_consumers_request_makes_the_sorter_spill() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ex = executor(SMALL);
    let pool = ex.layout().unified as u64;
    let runs = run_stage(
        &ex,
        0,
        1,
        true,
        |ctx| -> Result<(), TaskError> {
            let mut sorter = ExternalSorter::new(ctx, 56)?;
            let seed = 11;
            let mut input = sorter.insert_with(100_000, |i, out| write_record(seed, i, out))?;
            assert_eq!(sorter.metrics().spill_count, 0, "fits in the pool");
            let held = ctx.memory.consumers()[sorter.consumer_id().0].used;
            assert!(
                held > pool / 2,
                "the sorter holds most of the pool: {held} of {pool}"
            );
            // A second consumer (which cannot spill) asks for more than is free: the task
            // memory manager (§5.3b) asks the sorter, the only other holder, to spill.
            let other = ctx.memory.register("other", Arc::new(Unspillable));
            let page = other.allocate_page(pool - held / 2)?;
            let m = sorter.metrics();
            assert_eq!((m.spill_count, m.spills_for_others), (1, 1), "{m:?}");
            assert_eq!(sorter.records_in_memory(), 0);
            assert_eq!(ctx.memory.consumers()[sorter.consumer_id().0].used, 0);
            drop(page);
            // More records after the spill, then the merge of the run with memory.
            let more = sorter.insert_with(50_000, |i, out| write_record(seed, 100_000 + i, out))?;
            input = input.combine(more);
            let out = sorter.finish()?;
            assert!(out.ordered);
            assert_eq!(out.digest, input);
            assert_eq!(out.digest.records, 150_000);
            Ok(())
        },
        |_| {},
    );
    if let Err(e) = &runs[0].result {
        panic!("{e}");
    }
    assert_eq!(ex.local_dirs().file_count(), 0);
}

#[test]
fn a_pool_smaller_than_the_first_array_fails_the_task_with_unable_to_acquire_memory() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A pool smaller than a page is not yet a failure: Spark (and spillway) hand out a page of
    // what was acquired if it holds the record (docs/spark-model.md §5.4–§5.5) — a 300 KiB pool with 1 MiB
    // pages sorts, spilling often. A 30 KiB pool cannot hold the sorter's first pointer
    // array (4096 × 2 longs = 64 KiB): UNABLE_TO_ACQUIRE_MEMORY.
    let ex = executor(&[("spark.memory.fraction", "0.0001")]);
    let runs = run_stage(&ex, 0, 1, true, |ctx| run_sort_task(ctx, &spec()), |_| {});
    match &runs[0].result {
        Err(TaskFailure::Task(e @ TaskError::Memory(_))) => {
            assert_eq!(e.error_class(), Some("UNABLE_TO_ACQUIRE_MEMORY"));
            let text = e.to_string();
            assert!(
                text.starts_with(
                    "[UNABLE_TO_ACQUIRE_MEMORY] Unable to acquire 65536 bytes of memory, got 31457."
                ),
                "{text}"
            );
        }
        other => panic!("expected UNABLE_TO_ACQUIRE_MEMORY, got {other:?}"),
    }
    assert_eq!(runs[0].leaked_bytes, 0);
    assert_eq!(ex.memory_manager().execution_memory_used(), 0);
    assert_eq!(ex.local_dirs().file_count(), 0);

    // 300 KiB, two tasks at a time: 150 KiB each, pages smaller than asked, many spills; a
    // page granted right after a spill freed the array is given back when the array is
    // asked for (it held no records).
    let ex = executor(&[("spark.memory.fraction", "0.001")]);
    for m in sort_stage(&ex, &spec()) {
        assert!(m.spill_count > 10, "{m:?}");
    }
}

#[test]
fn a_task_that_cannot_get_its_page_fails_alone() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ex = executor(SMALL);
    let normal = spec();
    // One 20 MiB record needs a 20 MiB page: more than the 15 MiB pool can ever give.
    let huge = SortSpec {
        records_per_task: 3,
        record_bytes: 20 << 20,
        seed: 7,
    };
    let runs = run_stage(
        &ex,
        0,
        4,
        true,
        |ctx| run_sort_task(ctx, if ctx.partition == 1 { &huge } else { &normal }),
        |_| {},
    );
    for r in &runs {
        match (&r.result, r.partition) {
            (Err(TaskFailure::Task(e)), 1) => {
                assert_eq!(e.error_class(), Some("UNABLE_TO_ACQUIRE_MEMORY"), "{e}");
                assert!(
                    e.to_string().contains("Unable to acquire 20971524 bytes"),
                    "{e}"
                );
            }
            (Ok(m), p) if p != 1 => {
                assert!(m.verification.ok);
                assert!(m.spill_count > 0);
            }
            (other, p) => panic!("partition {p}: {other:?}"),
        }
    }
    assert_eq!(ex.memory_manager().execution_memory_used(), 0);
    assert_eq!(ex.local_dirs().file_count(), 0);
}

#[test]
fn digests_match_a_plain_in_memory_sort() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The digest of the input computed outside the sorter equals the task's.
    let spec = SortSpec {
        records_per_task: 20_000,
        ..spec()
    };
    let ex = executor(SMALL);
    let ms = sort_stage(&ex, &spec);
    let data = spec.data(3, 0);
    let mut d = RecordDigest::default();
    let mut buf = vec![0u8; 56];
    for i in 0..spec.records_per_task {
        data.write_record(i, &mut buf);
        d.add(&buf);
    }
    assert_eq!(ms[0].verification.input_digest, d.hash_sum);
    assert_eq!(ms[0].verification.output_digest, d.hash_sum);
}

/// The spills' compression: off, and each codec (`spark.shuffle.spill.compress`,
/// `spark.io.compression.codec`; on with lz4 by default).
const COMPRESSIONS: [(&str, &[(&str, &str)]); 4] = [
    ("off", &[("spark.shuffle.spill.compress", "false")]),
    ("lz4", &[]),
    ("snappy", &[("spark.io.compression.codec", "snappy")]),
    ("zstd", &[("spark.io.compression.codec", "zstd")]),
];

/// Every spill file under the executor's private local directories.
fn spill_files(dirs: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
    fn walk(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    dirs.iter().for_each(|d| walk(d, &mut out));
    out
}

#[test]
fn the_sort_verifies_with_each_codec_and_without_compression() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let spec = spec();
    let mut seen = Vec::new();
    for (name, extra) in COMPRESSIONS {
        let ex = executor(&[SMALL, extra].concat());
        let codec = ex.compression().spill.map(|c| c.name.short_name());
        assert_eq!(codec, (name != "off").then_some(name));
        let ms = sort_stage(&ex, &spec);
        for m in &ms {
            assert!(m.spill_count >= 2, "{name}: {m:?}");
            // Random records do not compress: every frame is stored raw, so the runs hold
            // at least the records' bytes whatever the codec.
            assert!(m.disk_bytes_spilled >= 56 * 100_000, "{name}: {m:?}");
        }
        seen.push((name, digests(&ms)));
    }
    for (name, d) in &seen[1..] {
        assert_eq!(d, &seen[0].1, "{name} differs from {}", seen[0].0);
    }
}

/// The runs on disk while the sorter holds them: each carries the codec in its header (or 0
/// with compression off), verifies, and their bytes are `diskBytesSpilled`. The sort's
/// records are random, so every compressed frame is stored raw: a run is its records plus
/// 16 bytes a frame.
#[test]
fn a_sorters_runs_carry_the_codec() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for (name, extra) in COMPRESSIONS {
        let ex = executor(&[SMALL, extra].concat());
        let dirs: Vec<std::path::PathBuf> = ex
            .local_dirs()
            .dirs()
            .iter()
            .map(|d| d.to_path_buf())
            .collect();
        let want = ex.compression().spill.map(|c| c.name);
        let runs = run_stage(
            &ex,
            0,
            1,
            true,
            |ctx| -> Result<(), TaskError> {
                let mut sorter = ExternalSorter::new(ctx, 56)?;
                let seed = 17;
                let input = sorter.insert_with(400_000, |i, out| write_record(seed, i, out))?;
                let m = sorter.metrics();
                assert!(m.spill_count >= 1, "{name}: {m:?}");
                let files = spill_files(&dirs);
                assert_eq!(files.len() as u64, m.spill_count, "{name}");
                let mut on_disk = 0;
                for f in &files {
                    let bytes = std::fs::read(f).unwrap();
                    assert_eq!(bytes[11], want.map_or(0, |c| c.id()), "{name}: {f:?}");
                    let info = spillway::spill::verify_file(f).unwrap();
                    assert_eq!(info.codec, want, "{name}");
                    assert_eq!(info.stored_payload_bytes, info.payload_bytes, "{name}");
                    let header = spillway::spill::frame_header_bytes(want) as u64;
                    assert_eq!(
                        info.file_bytes,
                        32 + header * info.frames + info.payload_bytes + 64,
                        "{name}"
                    );
                    on_disk += info.file_bytes;
                }
                assert_eq!(on_disk, m.disk_bytes_spilled, "{name}");
                let out = sorter.finish()?;
                assert_eq!(out.digest, input, "{name}");
                assert!(out.ordered, "{name}");
                Ok(())
            },
            |_| {},
        );
        if let Err(e) = &runs[0].result {
            panic!("{name}: {e}");
        }
        assert_eq!(ex.local_dirs().file_count(), 0, "{name}: runs left behind");
    }
}
