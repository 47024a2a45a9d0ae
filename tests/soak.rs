//! Soak test (docs/reliability.md item 12): random stages on one tight executor for a while,
//! with the invariants checked after every stage.
//!
//! One executor (`spark.executor.memory=768m`, 2 cores, 96 MiB off-heap) runs a seeded random
//! mix of cache (every storage level), scan, unpersist, broadcast, sort, aggregate, udf and
//! python stages through `scheduler::run_stage`, as `spillway run` does. After each stage:
//!
//! - per mode, execution pool + storage pool == the unified size, used <= pool size;
//! - execution memory is back to 0, no task is active or waiting, no unroll memory is held;
//! - storage used == the bytes the memory store holds;
//! - every successful task verified its records (digests of what was generated);
//! - no spill file is left: the files under the local dirs are exactly the disk blocks;
//! - failures are only the expected kinds (a UDF past the user region, a task that cannot get
//!   execution memory), and they are counted.
//!
//! `SPILLWAY_SOAK_SECS` (default 30) sets the duration, `SPILLWAY_SOAK_SEED` the seed (printed
//! on failure). `scripts/soak.sh` runs it for 10 minutes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use spillway::codec::{Codec, CodecName};
use spillway::conf::SparkConf;
use spillway::data::{RecordType, splitmix64};
use spillway::executor::Executor;
use spillway::external::task::{PythonTask, python_task};
use spillway::external::{PoolConfig, WorkerChoice, WorkerKind, WorkerPool};
use spillway::layout::Layout;
use spillway::memory::MemoryMode;
use spillway::scheduler::{TaskFailure, run_stage};
use spillway::stage::{
    BroadcastConf, CachedRdd, ClassifiedError as TaskError, TaskOutput, broadcast_task, cache_task,
    scan_task, udf_task,
};
use spillway::storage::{BlockId, StorageLevel};
use spillway::tasks::{aggregate, sort};

const MIB: u64 = 1 << 20;

/// Failure classes a tight executor may legitimately produce; anything else fails the soak.
const EXPECTED_FAILURES: &[&str] = &[
    "java.lang.OutOfMemoryError", // a UDF past the user region
    "UNABLE_TO_ACQUIRE_MEMORY",   // a task that cannot get its share after spilling
    "SPILL_OUT_OF_MEMORY",
    "PythonWorkerOOM",
    "MemoryError",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

#[derive(Default, Debug)]
struct Totals {
    stages: u64,
    stages_by_kind: BTreeMap<&'static str, u64>,
    tasks: u64,
    records_verified: u64,
    failures: BTreeMap<String, u64>,
    spilled_bytes: u64,
}

#[derive(Debug, Clone)]
enum Stage {
    Cache(CachedRdd),
    Scan(u32),
    Unpersist(u32),
    Broadcast {
        id: u64,
        bytes: u64,
        record_bytes: u64,
        conf: BroadcastConf,
    },
    Sort(u32, sort::SortSpec),
    Aggregate(u32, aggregate::AggregateSpec),
    Udf {
        tasks: u32,
        bytes: u64,
        object_bytes: u64,
    },
    Python(u32, PythonTask),
}

impl Stage {
    fn kind(&self) -> &'static str {
        match self {
            Stage::Cache(_) => "cache",
            Stage::Scan(_) => "scan",
            Stage::Unpersist(_) => "unpersist",
            Stage::Broadcast { .. } => "broadcast",
            Stage::Sort(..) => "sort",
            Stage::Aggregate(..) => "aggregate",
            Stage::Udf { .. } => "udf",
            Stage::Python(..) => "python",
        }
    }
}

const LEVELS: &[&str] = &[
    "MEMORY_ONLY",
    "MEMORY_ONLY_SER",
    "MEMORY_AND_DISK",
    "MEMORY_AND_DISK_SER",
    "DISK_ONLY",
    "OFF_HEAP",
];

fn level(name: &str) -> StorageLevel {
    name.parse().expect("a Spark storage level")
}

struct Soak<'a> {
    executor: &'a Executor,
    pool: &'a WorkerPool,
    rng: Rng,
    seed: u64,
    rdds: HashMap<u32, CachedRdd>,
    broadcasts: Vec<u64>,
    next_id: u32,
    next_broadcast: u64,
    totals: Totals,
    user_bytes: u64,
}

impl Soak<'_> {
    fn next_stage(&mut self) -> Stage {
        let r = &mut self.rng;
        let live: Vec<u32> = {
            let mut v: Vec<u32> = self.rdds.keys().copied().collect();
            v.sort();
            v
        };
        loop {
            match r.next() % 10 {
                0 | 1 if live.len() < 4 => {
                    self.next_id += 1;
                    let record_type = *r.pick(&[
                        RecordType::Raw,
                        RecordType::Bytes,
                        RecordType::LongPair,
                        RecordType::String,
                    ]);
                    let record_bytes = record_type.fixed_record_bytes().unwrap_or(*r.pick(&[
                        100,
                        1000,
                        8 * 1024,
                        64 * 1024,
                    ]));
                    return Stage::Cache(CachedRdd {
                        id: self.next_id,
                        name: format!("rdd{}", self.next_id),
                        level: level(r.pick::<&str>(LEVELS)),
                        partitions: r.range(2, 8) as u32,
                        partition_bytes: r.range(2, 48) * MIB,
                        record_bytes,
                        record_type,
                        seed: self.seed ^ u64::from(self.next_id),
                        expected: HashMap::new(),
                    });
                }
                2 if !live.is_empty() => return Stage::Scan(*r.pick(&live)),
                3 if !live.is_empty() && r.next().is_multiple_of(3) => {
                    return Stage::Unpersist(*r.pick(&live));
                }
                4 => {
                    // A fresh id each time: an executor puts a broadcast block once (Spark's
                    // `TorrentBroadcast.readBroadcastBlock` reads a local copy first).
                    self.next_broadcast += 1;
                    return Stage::Broadcast {
                        id: self.next_broadcast,
                        bytes: r.range(1, 24) * MIB,
                        record_bytes: *r.pick(&[1000, 64 * 1024]),
                        conf: BroadcastConf {
                            block_bytes: *r.pick(&[256 << 10, MIB, 4 * MIB]),
                            codec: (*r.pick(&[true, false]))
                                .then(|| Codec::with_defaults(CodecName::Lz4)),
                        },
                    };
                }
                5 => {
                    return Stage::Sort(
                        r.range(1, 6) as u32,
                        sort::SortSpec {
                            records_per_task: r.range(10_000, 800_000),
                            record_bytes: r.range(16, 200) as usize,
                            seed: r.next(),
                        },
                    );
                }
                6 => {
                    return Stage::Aggregate(
                        r.range(1, 6) as u32,
                        aggregate::AggregateSpec {
                            records_per_task: r.range(10_000, 600_000),
                            record_bytes: r.range(16, 100) as usize,
                            seed: r.next(),
                            distinct_keys: r.range(10, 400_000),
                        },
                    );
                }
                7 => {
                    // Up to 1.2x a task's share of the user region: some fail, as a UDF past
                    // the heap does.
                    let share = self.user_bytes / 2;
                    return Stage::Udf {
                        tasks: r.range(1, 4) as u32,
                        bytes: r.range(share / 20, share * 6 / 5),
                        object_bytes: *r.pick(&[64, 4096, 1 << 20]),
                    };
                }
                8 => {
                    return Stage::Python(
                        r.range(1, 3) as u32,
                        PythonTask {
                            kind: WorkerKind::Spillway,
                            bytes_per_task: r.range(0, 32) * MIB,
                            records_per_task: r.range(1_000, 200_000),
                            distinct_keys: r.range(10, 50_000),
                            seed: r.next(),
                        },
                    );
                }
                _ => {}
            }
        }
    }

    fn run(&mut self, stage_id: u32, stage: &Stage) -> Result<(), String> {
        let executor = self.executor;
        let pool = self.pool;
        let rdds = &self.rdds;
        let (num_tasks, python_kind) = match stage {
            Stage::Cache(rdd) => (rdd.partitions, None),
            Stage::Scan(id) => (rdds[id].partitions, None),
            Stage::Unpersist(_) => (0, None),
            Stage::Broadcast { .. } => (1, None),
            Stage::Sort(n, _) | Stage::Aggregate(n, _) => (*n, None),
            Stage::Udf { tasks, .. } => (*tasks, None),
            Stage::Python(n, t) => (
                *n,
                Some(
                    pool.choose(stage_id, WorkerChoice::Kind(t.kind))
                        .map_err(|e| e.to_string())?,
                ),
            ),
        };
        if let Stage::Unpersist(id) = stage {
            executor.block_manager().remove_rdd(*id);
            self.rdds.remove(id);
            self.totals.stages += 1;
            *self.totals.stages_by_kind.entry("unpersist").or_default() += 1;
            return self.check();
        }
        let seed = self.seed ^ u64::from(stage_id);
        let task = |ctx: &spillway::scheduler::TaskContext| -> Result<TaskOutput, TaskError> {
            match stage {
                Stage::Cache(rdd) => cache_task(ctx, rdd),
                Stage::Scan(id) => scan_task(ctx, &rdds[id]),
                Stage::Unpersist(_) => unreachable!(),
                Stage::Broadcast {
                    id,
                    bytes,
                    record_bytes,
                    conf,
                } => broadcast_task(ctx, *id, *bytes, *record_bytes, conf, 7),
                Stage::Sort(_, spec) => sort::run_sort_task(ctx, spec)
                    .map(TaskOutput::from)
                    .map_err(TaskError::from),
                Stage::Aggregate(_, spec) => aggregate::run_aggregate_task(ctx, spec)
                    .map(TaskOutput::from)
                    .map_err(TaskError::from),
                Stage::Udf {
                    bytes,
                    object_bytes,
                    ..
                } => udf_task(ctx, *bytes, *object_bytes, seed),
                Stage::Python(_, t) => python_task(
                    ctx,
                    pool,
                    &PythonTask {
                        kind: python_kind.expect("a worker kind"),
                        ..*t
                    },
                )
                .map(TaskOutput::from)
                .map_err(TaskError::from),
            }
        };
        let runs = run_stage(executor, stage_id, num_tasks, true, task, |_| {});
        executor.trim_page_pools();

        let t = &mut self.totals;
        t.stages += 1;
        *t.stages_by_kind.entry(stage.kind()).or_default() += 1;
        for r in &runs {
            t.tasks += 1;
            match &r.result {
                Ok(o) => {
                    if !o.verified {
                        return Err(format!("task {} not verified: {o:?}", r.partition));
                    }
                    t.records_verified += o.records_out;
                    t.spilled_bytes += o.disk_bytes_spilled;
                }
                Err(TaskFailure::Task(e)) if EXPECTED_FAILURES.contains(&e.class.as_str()) => {
                    *t.failures.entry(e.class.clone()).or_default() += 1;
                }
                Err(e) => return Err(format!("task {} failed unexpectedly: {e}", r.partition)),
            }
            if r.leaked_bytes != 0 {
                return Err(format!(
                    "task {} leaked {} bytes",
                    r.partition, r.leaked_bytes
                ));
            }
        }
        if let Stage::Cache(rdd) = stage {
            let mut rdd = rdd.clone();
            for r in &runs {
                if let Ok(o) = &r.result {
                    rdd.expected.insert(r.partition, o.digest_in);
                }
            }
            self.rdds.insert(rdd.id, rdd);
        }
        if let Stage::Broadcast { id, .. } = stage
            && !self.broadcasts.contains(id)
        {
            self.broadcasts.push(*id);
        }
        // Broadcasts are dropped now and then, as the context cleaner does.
        if self.broadcasts.len() > 3 {
            let id = self.broadcasts.remove(0);
            executor.block_manager().remove_broadcast(id);
        }
        self.check()
    }

    /// The invariants that must hold between stages.
    fn check(&self) -> Result<(), String> {
        let e = self.executor;
        let layout = e.layout();
        let snap = e.memory_manager().snapshot();
        let store = e.block_manager().memory_store();
        for (mode, unified) in [
            (MemoryMode::OnHeap, layout.unified as u64),
            (MemoryMode::OffHeap, layout.off_heap as u64),
        ] {
            let p = snap.mode(mode);
            if p.execution_pool_bytes + p.storage_pool_bytes != unified {
                return Err(format!("{mode:?}: pools {p:?} do not add up to {unified}"));
            }
            if p.execution_used_bytes > p.execution_pool_bytes
                || p.storage_used_bytes > p.storage_pool_bytes
            {
                return Err(format!("{mode:?}: used beyond pool: {p:?}"));
            }
            if p.execution_used_bytes != 0 || p.active_tasks != 0 {
                return Err(format!(
                    "{mode:?}: execution memory held between stages: {p:?}"
                ));
            }
            let unroll = store.current_unroll_memory(mode);
            if unroll != 0 {
                return Err(format!("{mode:?}: {unroll} bytes of unroll memory held"));
            }
            let held = store.memory_used(mode);
            if p.storage_used_bytes != held {
                return Err(format!(
                    "{mode:?}: storage pool uses {} bytes, the memory store holds {held}",
                    p.storage_used_bytes
                ));
            }
        }
        if snap.waiting_tasks != 0 {
            return Err(format!("{} tasks still waiting", snap.waiting_tasks));
        }
        // Files: exactly the disk blocks (spills and worker spills are gone).
        let disk = e.block_manager().disk_store();
        let mut blocks = 0;
        for rdd in self.rdds.values() {
            blocks += (0..rdd.partitions)
                .filter(|p| disk.contains(&rdd.block(*p)))
                .count();
        }
        blocks += self
            .broadcasts
            .iter()
            .filter(|id| disk.contains(&BlockId::Broadcast { broadcast_id: **id }))
            .count();
        // Their pieces on disk.
        blocks += disk
            .blocks()
            .iter()
            .filter(|(b, _)| {
                matches!(b, BlockId::BroadcastPiece { broadcast_id, .. }
                    if self.broadcasts.contains(broadcast_id))
            })
            .count();
        let files = e.local_dirs().file_count();
        if files != blocks {
            return Err(format!(
                "{files} files under the local dirs, {blocks} disk blocks"
            ));
        }
        Ok(())
    }
}

#[test]
fn soak_random_stages_keep_every_invariant() {
    let secs: u64 = std::env::var("SPILLWAY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("SPILLWAY_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let local = tempfile::tempdir().expect("temp dir");
    let conf = SparkConf::new()
        .with("spark.executor.memory", "768m")
        .with("spark.executor.cores", "2")
        .with("spark.memory.offHeap.enabled", "true")
        .with("spark.memory.offHeap.size", "96m")
        .with("spark.python.worker.memory", "16m")
        .with("spark.local.dir", &local.path().display().to_string());
    let layout = Layout::from_conf(&conf, None).expect("layout");
    let executor = Executor::start(&layout, &conf).expect("executor");
    let dirs: Vec<PathBuf> = executor
        .local_dirs()
        .dirs()
        .iter()
        .map(|d| d.to_path_buf())
        .collect();
    let mut cfg = PoolConfig::from_conf(&conf, &layout, dirs).expect("pool config");
    cfg.spillway_exe = PathBuf::from(env!("CARGO_BIN_EXE_spillway"));
    let pool = WorkerPool::new(cfg);

    let mut soak = Soak {
        executor: &executor,
        pool: &pool,
        rng: Rng(seed),
        seed,
        rdds: HashMap::new(),
        broadcasts: Vec::new(),
        next_id: 0,
        next_broadcast: 0,
        totals: Totals::default(),
        user_bytes: layout.user as u64,
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut stage_id = 0u32;
    let mut peak_rss = 0u64;
    while Instant::now() < deadline {
        let stage = soak.next_stage();
        if let Err(e) = soak.run(stage_id, &stage) {
            panic!(
                "soak failed at stage {stage_id} ({stage:?}) with SPILLWAY_SOAK_SEED={seed}: {e}\n\
                 totals so far: {:?}",
                soak.totals
            );
        }
        peak_rss = peak_rss.max(spillway::region::process_rss_bytes().unwrap_or(0));
        stage_id += 1;
    }
    pool.shutdown();
    let t = &soak.totals;
    println!(
        "soak: seed {seed}, {:.1} s, {} stages {:?}, {} tasks, {} records verified, {} MiB \
         spilled to disk, failures {:?}, peak RSS {} MiB",
        start.elapsed().as_secs_f64(),
        t.stages,
        t.stages_by_kind,
        t.tasks,
        t.records_verified,
        t.spilled_bytes / MIB,
        t.failures,
        peak_rss / MIB
    );
    assert!(t.stages > 0);
    drop(soak);
    drop(pool);
    drop(executor);
    let left: Vec<_> = walk(local.path());
    assert!(
        left.is_empty(),
        "files left after the executor dropped: {left:?}"
    );
}

fn walk(p: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
                out.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
