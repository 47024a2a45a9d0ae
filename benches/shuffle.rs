//! Shuffle map output throughput: one map task writing 64 MiB of 56-byte records into a map
//! output of 32 reduce partitions, and every partition of it read back through
//! `read_partition` (local blocks), with the bypass and the serialized writer, uncompressed and
//! with lz4; beside raw I/O of the same bytes in the same run.
//!
//! The records are generated into memory first (`MapInput`, not timed), so the writer alone is
//! timed. Uncompressed cases write incompressible records (`compressible_percent = 0`), lz4
//! cases text-like ones (`compressible_percent = 100`), what a codec is for. Files live in the
//! temp dir and stay in the page cache: page-cache-hot numbers, the writer's and reader's CPU
//! cost, not disk bandwidth (`spillway bench` measures that).
//!
//! `cargo bench --bench shuffle -- --warm-up-time 1 --measurement-time 4`; results in
//! `benches/README.md` (`shuffle` criterion bench).

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spillway::conf::SparkConf;
use spillway::executor::Executor;
use spillway::layout::Layout;
use spillway::scheduler::run_stage;
use spillway::shuffle::fetch::{FetchParams, read_partition};
use spillway::shuffle::writer::{MapInput, MapTaskOutput, WriteParams, run_map_task_on};
use spillway::shuffle::{MapStatus, Operation, ShuffleSpec, ValueClass, choose_writer};

const MIB: u64 = 1 << 20;
const MAP_BYTES: u64 = 64 * MIB;
const RECORD_BYTES: u64 = 56;
const PARTITIONS: u32 = 32;

fn spec(compressible_percent: u64) -> ShuffleSpec {
    ShuffleSpec {
        shuffle_id: 0,
        map_tasks: 1,
        reduce_partitions: PARTITIONS,
        records_per_task: MAP_BYTES / RECORD_BYTES,
        record_bytes: RECORD_BYTES,
        distinct_keys: 1 << 40,
        hot_key_percent: 0,
        compressible_percent,
        operation: Operation::PartitionBy,
        values: ValueClass::Bytes,
        seed: 7,
    }
}

/// One executor core, memory for the serialized writer to hold the map output, freed pages
/// kept (as a JVM keeps its heap).
fn executor(local: &Path) -> (Executor, SparkConf) {
    let conf = SparkConf::new()
        .with("spark.executor.memory", "1g")
        .with("spark.executor.cores", "1")
        .with("spark.local.dir", &local.display().to_string())
        .with("spillway.memory.retainFreed", "true");
    let layout = Layout::from_conf(&conf, None).unwrap();
    (Executor::start(&layout, &conf).unwrap(), conf)
}

/// The writer's configuration: `spark.shuffle.compress`, and the bypass threshold below the
/// partitions for the serialized writer.
fn case_conf(base: &SparkConf, compress: bool, serialized: bool) -> SparkConf {
    let mut c = base.clone().with(
        "spark.shuffle.compress",
        if compress { "true" } else { "false" },
    );
    if serialized {
        c = c.with("spark.shuffle.sort.bypassMergeThreshold", "1");
    }
    c
}

/// Writes one map output of `input`; the time of the writer alone.
fn write(
    ex: &Executor,
    conf: &SparkConf,
    spec: &ShuffleSpec,
    input: &MapInput,
) -> (MapTaskOutput, Duration) {
    let params = WriteParams::from_conf(conf).unwrap();
    let choice = choose_writer(spec.operation, PARTITIONS, spec.values, conf).unwrap();
    let mut runs = run_stage(
        ex,
        0,
        1,
        true,
        |ctx| {
            let t = Instant::now();
            let out = run_map_task_on(ctx, spec, &choice, &params, 0, input)?;
            Ok::<_, spillway::tasks::TaskError>((out, t.elapsed()))
        },
        |_| {},
    );
    runs.pop().unwrap().result.unwrap()
}

/// Reads every partition of `status` (local blocks) in one task; records read.
fn read_all(ex: &Executor, conf: &SparkConf, status: &[MapStatus]) -> u64 {
    let params = FetchParams::from_conf(conf).unwrap();
    let mut runs = run_stage(
        ex,
        1,
        1,
        true,
        |ctx| {
            let mut n = 0u64;
            for r in 0..PARTITIONS {
                read_partition(ctx, 0, status, r, &params, 0, |rec| {
                    black_box(rec);
                    n += 1;
                    Ok(())
                })?;
            }
            Ok::<_, spillway::tasks::TaskError>(n)
        },
        |_| {},
    );
    runs.pop().unwrap().result.unwrap()
}

fn bench(c: &mut Criterion) {
    let local = tempfile::tempdir().unwrap();
    let (ex, base) = executor(local.path());
    let random = spec(0);
    let text = spec(100);
    let random_input = MapInput::generate(&random, 0);
    let text_input = MapInput::generate(&text, 0);

    let mut g = c.benchmark_group("shuffle");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(random_input.bytes()));

    // Raw I/O of as many bytes: 32 KiB writes into a fresh file, 1 MiB reads of it.
    let raw_path = local.path().join("raw");
    let bytes = vec![0x5au8; random_input.bytes() as usize];
    g.bench_function("raw_write_32KiB", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let _ = std::fs::remove_file(&raw_path);
                let t = Instant::now();
                let mut f = File::create_new(&raw_path).unwrap();
                for chunk in bytes.chunks(32 << 10) {
                    f.write_all(chunk).unwrap();
                }
                drop(f);
                total += t.elapsed();
            }
            total
        })
    });
    g.bench_function("raw_read_1MiB", |b| {
        let mut buf = vec![0u8; MIB as usize];
        b.iter(|| {
            let mut f = File::open(&raw_path).unwrap();
            let mut n = 0;
            while let Ok(k @ 1..) = f.read(&mut buf) {
                n += k;
            }
            black_box(n)
        })
    });
    let _ = std::fs::remove_file(&raw_path);

    for (writer, serialized) in [("bypass", false), ("serialized", true)] {
        for (codec, compress, spec, input) in [
            ("none", false, &random, &random_input),
            ("lz4", true, &text, &text_input),
        ] {
            let conf = case_conf(&base, compress, serialized);
            g.bench_function(format!("write_{writer}_{codec}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // The previous output is deleted (untimed) as the next is written.
                        let (out, d) = write(&ex, &conf, spec, input);
                        total += d;
                        black_box(out.write.bytes_written);
                    }
                    total
                })
            });
            g.bench_function(format!("read_{writer}_{codec}"), |b| {
                // Written here, so that a filtered run writes only what it reads.
                let statuses = [write(&ex, &conf, spec, input).0.status];
                b.iter(|| black_box(read_all(&ex, &conf, &statuses)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
