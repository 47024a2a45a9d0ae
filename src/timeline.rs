//! The timeline sampler: every few milliseconds, the pools of both modes, user and off-heap
//! memory in use, the process's resident memory, the cgroup's usage and PSI where readable,
//! the shuffle fetch buffers in flight, and the spill and eviction counters, so a run can be drawn and its accounted-versus-real gap
//! measured.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::executor::Executor;
use crate::external::WorkerPool;
use crate::pressure::OwnCgroup;
use crate::region::process_rss_bytes_fast;

/// One sample. Bytes unless named otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    pub t_ms: f64,
    /// The stage running (its index), or -1 between stages.
    pub stage: i64,
    pub on_heap_execution_pool: u64,
    pub on_heap_execution_used: u64,
    pub on_heap_storage_pool: u64,
    pub on_heap_storage_used: u64,
    pub off_heap_execution_pool: u64,
    pub off_heap_execution_used: u64,
    pub off_heap_storage_pool: u64,
    pub off_heap_storage_used: u64,
    /// User-memory bytes handed to tasks' arenas.
    pub user_used: u64,
    /// Reserved memory (touched at start).
    pub reserved: u64,
    pub active_tasks: u64,
    pub waiting_tasks: u64,
    pub rss: u64,
    /// The cgroup's usage (`memory.current` / `memory.usage_in_bytes`), 0 when unreadable.
    pub cgroup_usage: u64,
    pub psi_some_avg10: f64,
    pub psi_full_avg10: f64,
    pub psi_some_total_us: u64,
    pub psi_full_total_us: u64,
    /// Cumulative spills and spilled bytes.
    pub spills: u64,
    pub spill_bytes: u64,
    /// Cumulative evicted blocks and bytes.
    pub evictions: u64,
    pub evicted_bytes: u64,
    /// Pages freed but kept for reuse by the allocators (resident, not accounted).
    pub pooled_free_pages: u64,
    /// Pages granted and being zeroed at this instant (accounted, not yet resident).
    pub zeroing: u64,
    /// Resident memory of the PySpark-style worker processes (`external`).
    pub workers_rss: u64,
    /// Shuffle fetch buffers allocated and not yet freed (native memory outside the heap:
    /// resident, not accounted; `shuffle::fetch`).
    pub fetch_bytes_in_flight: u64,
}

impl Sample {
    /// What the model accounts: reserved + user + storage + execution, both modes.
    pub fn accounted(&self) -> u64 {
        self.reserved
            + self.user_used
            + self.on_heap_execution_used
            + self.on_heap_storage_used
            + self.off_heap_execution_used
            + self.off_heap_storage_used
    }

    /// Real resident memory minus the accounted memory and the shuffle fetch buffers in flight
    /// (native memory outside the heap, counted apart: the overhead, not a gap of the model).
    pub fn gap(&self) -> i64 {
        self.rss as i64 - self.accounted() as i64 - self.fetch_bytes_in_flight as i64
    }

    /// Whether memory was at rest at this sample: the accounted total unchanged since the
    /// previous sample, resident memory steady (within 8 MiB), and no page being zeroed. Bulk
    /// operations (zeroing a 128 MiB array, freeing a task's pages) open a transient gap as wide
    /// as the operation while they run.
    pub fn settled_after(&self, previous: &Sample) -> bool {
        self.zeroing == 0
            && previous.zeroing == 0
            && self.accounted() == previous.accounted()
            && self.rss.abs_diff(previous.rss) <= 8 << 20
    }
}

/// Takes one sample now of `executor` and, when given, the workers of `pool` (their RSS as the
/// pool's last container check measured it).
pub fn sample(
    executor: &Executor,
    pool: Option<&WorkerPool>,
    cgroup: Option<&OwnCgroup>,
    start: Instant,
    stage: i64,
) -> Sample {
    let metrics = executor.metrics();
    let zeroing = metrics.touching_bytes();
    let snap = executor.memory_manager().snapshot();
    let storage = executor.block_manager().counters();
    let (spills, spill_bytes) = metrics.spills();
    let psi = cgroup.and_then(|c| c.psi()).unwrap_or_default();
    let mut pooled =
        executor.unified_allocator().pooled_bytes() + executor.user_allocator().pooled_bytes();
    if let Some(a) = executor.off_heap_allocator() {
        pooled += a.pooled_bytes();
    }
    Sample {
        t_ms: start.elapsed().as_secs_f64() * 1e3,
        stage,
        on_heap_execution_pool: snap.on_heap.execution_pool_bytes,
        on_heap_execution_used: snap.on_heap.execution_used_bytes,
        on_heap_storage_pool: snap.on_heap.storage_pool_bytes,
        on_heap_storage_used: snap.on_heap.storage_used_bytes,
        off_heap_execution_pool: snap.off_heap.execution_pool_bytes,
        off_heap_execution_used: snap.off_heap.execution_used_bytes,
        off_heap_storage_pool: snap.off_heap.storage_pool_bytes,
        off_heap_storage_used: snap.off_heap.storage_used_bytes,
        user_used: executor.user_allocator().allocated_bytes(),
        reserved: executor.layout().reserved as u64,
        active_tasks: (snap.on_heap.active_tasks + snap.off_heap.active_tasks) as u64,
        waiting_tasks: snap.waiting_tasks as u64,
        rss: process_rss_bytes_fast().unwrap_or(0),
        cgroup_usage: cgroup.and_then(|c| c.usage_bytes()).unwrap_or(0),
        psi_some_avg10: psi.some_avg10,
        psi_full_avg10: psi.full_avg10,
        psi_some_total_us: psi.some_total_us,
        psi_full_total_us: psi.full_total_us,
        spills,
        spill_bytes,
        evictions: storage.blocks_evicted,
        evicted_bytes: storage.bytes_evicted,
        pooled_free_pages: pooled,
        zeroing,
        workers_rss: pool.map_or(0, WorkerPool::last_workers_rss),
        fetch_bytes_in_flight: metrics.fetch_bytes_in_flight(),
    }
}

/// Samples on its own thread until stopped.
pub struct Sampler<'a> {
    executor: &'a Executor,
    pool: Option<&'a WorkerPool>,
    interval: Duration,
    stop: AtomicBool,
    /// The stage index currently running (u32::MAX between stages).
    pub stage: AtomicU32,
    cgroup: Option<OwnCgroup>,
    start: Instant,
}

impl<'a> Sampler<'a> {
    /// A sampler of `executor` every `interval` (clamped to 10..=1000 ms).
    pub fn new(executor: &'a Executor, interval: Duration, start: Instant) -> Sampler<'a> {
        Sampler {
            executor,
            pool: None,
            interval: interval.clamp(Duration::from_millis(10), Duration::from_millis(1000)),
            stop: AtomicBool::new(false),
            stage: AtomicU32::new(u32::MAX),
            cgroup: OwnCgroup::discover(),
            start,
        }
    }

    /// Also samples the workers of `pool`.
    pub fn with_workers(mut self, pool: &'a WorkerPool) -> Sampler<'a> {
        self.pool = Some(pool);
        self
    }

    /// The cgroup being read, if any.
    pub fn cgroup(&self) -> Option<&OwnCgroup> {
        self.cgroup.as_ref()
    }

    fn current_stage(&self) -> i64 {
        match self.stage.load(Ordering::Relaxed) {
            u32::MAX => -1,
            s => s as i64,
        }
    }

    /// Takes a sample now (also used at stage boundaries).
    pub fn sample_now(&self) -> Sample {
        sample(
            self.executor,
            self.pool,
            self.cgroup.as_ref(),
            self.start,
            self.current_stage(),
        )
    }

    /// Samples until [`Sampler::stop`]; returns the samples.
    pub fn run(&self) -> Vec<Sample> {
        let mut samples = Vec::new();
        let mut next = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            samples.push(self.sample_now());
            next += self.interval;
            let now = Instant::now();
            if next > now {
                std::thread::park_timeout(next - now);
            } else {
                next = now;
            }
        }
        samples.push(self.sample_now());
        samples
    }

    /// Asks the sampling thread to finish.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}
