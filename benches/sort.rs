//! The headline sort stage: 4 tasks × 5,000,000 records × 56 bytes at `spark.executor.memory=1g`
//! on 2 cores (2 concurrent tasks, fair share), spilling to disk, every record verified.
//!
//! Also times record generation alone (the same generator, no sorter) so the stage's time can
//! be split: `SPILLWAY_SORT_BREAKDOWN=1` prints each task's timers once before measuring.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use spillway::conf::SparkConf;
use spillway::executor::Executor;
use spillway::layout::Layout;
use spillway::scheduler::run_stage;
use spillway::spill::RecordDigest;
use spillway::tasks::TaskMetrics;
use spillway::tasks::sort::{SortSpec, run_sort_task};

const TASKS: u32 = 4;

fn spec() -> SortSpec {
    SortSpec {
        records_per_task: 5_000_000,
        record_bytes: 56,
        seed: 42,
    }
}

/// `retain`: `spillway.memory.retainFreed=true`, freed pages stay resident as a JVM keeps its
/// heap (the default gives them back with `MADV_DONTNEED`, and every run faults them in again).
fn executor(retain: bool) -> Executor {
    let conf = SparkConf::new()
        .with("spark.executor.memory", "1g")
        .with("spark.executor.cores", "2")
        .with(
            "spillway.memory.retainFreed",
            if retain { "true" } else { "false" },
        );
    let layout = Layout::from_conf(&conf, None).unwrap();
    Executor::start(&layout, &conf).unwrap()
}

/// Runs the stage once; panics unless every task spilled-or-not and verified.
fn stage(ex: &Executor, stage_id: u32) -> Vec<TaskMetrics> {
    let spec = spec();
    let runs = run_stage(
        ex,
        stage_id,
        TASKS,
        true,
        |ctx| run_sort_task(ctx, &spec),
        |_| {},
    );
    runs.into_iter()
        .map(|r| {
            let m = r
                .result
                .unwrap_or_else(|e| panic!("task {} failed: {e}", r.partition));
            assert!(m.verification.ok);
            m
        })
        .collect()
}

/// User + system CPU seconds of this process (`/proc/self/stat`, 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file: 11 and 12 after "pid (comm)".
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (field(11) + field(12)) as f64 / 100.0
}

fn print_breakdown(ex: &Executor) {
    let t = Instant::now();
    let cpu = cpu_seconds();
    let ms = stage(ex, 0);
    let wall = t.elapsed();
    eprintln!(
        "stage wall {:.3} s, process CPU {:.2} s (user+sys; 2 cores = {:.2} s of wall at most)",
        wall.as_secs_f64(),
        cpu_seconds() - cpu,
        2.0 * wall.as_secs_f64()
    );
    for (i, m) in ms.iter().enumerate() {
        eprintln!(
            "task {i}: run {} ms, insert(gen+copy+hash+grow) {:.0} ms, sort {:.0} ms, spill write \
             (incl. its sorts) {:.0} ms, merge {:.0} ms, spills {}, disk {} MiB, memory spilled \
             {} MiB, peak {} MiB",
            m.executor_run_time,
            m.insert_ns as f64 / 1e6,
            m.sort_ns as f64 / 1e6,
            m.spill_write_ns as f64 / 1e6,
            m.spill_read_ns as f64 / 1e6,
            m.spill_count,
            m.disk_bytes_spilled >> 20,
            m.memory_bytes_spilled >> 20,
            m.peak_execution_memory >> 20
        );
    }
    // Generation alone (and the input digest), one thread, one task's records.
    let data = spec().data(0, 0);
    let mut buf = vec![0u8; 56];
    let t = Instant::now();
    let mut d = RecordDigest::default();
    for i in 0..spec().records_per_task {
        data.write_record(i, &mut buf);
        d.add(&buf);
    }
    black_box(d);
    eprintln!(
        "generate + digest 5M records (one thread): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sort_stage");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    for (name, retain) in [
        ("4x5M_56B_1g_2cores", false),
        ("4x5M_56B_1g_2cores_retainFreed", true),
    ] {
        let ex = executor(retain);
        if std::env::var_os("SPILLWAY_SORT_BREAKDOWN").is_some() {
            eprintln!("== {name}");
            print_breakdown(&ex);
        }
        let mut stage_id = 1;
        g.bench_function(name, |b| {
            b.iter(|| {
                stage_id += 1;
                black_box(stage(&ex, stage_id))
            })
        });
        assert_eq!(ex.local_dirs().file_count(), 0, "spill files left behind");
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
