//! Vocabulary of the memory manager: modes, task ids, pool sizes, snapshots and wait statistics.

use std::fmt;
use std::time::Duration;

/// Spark's `TaskContext.taskAttemptId()`: unique per task attempt within an executor.
pub type TaskAttemptId = u64;

/// Spark's `org.apache.spark.memory.MemoryMode`: which pair of pools a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemoryMode {
    /// `ON_HEAP`: the unified region carved out of the (simulated) JVM heap.
    OnHeap = 0,
    /// `OFF_HEAP`: `spark.memory.offHeap.size`, independent of the heap pools.
    OffHeap = 1,
}

impl MemoryMode {
    /// Both modes, on-heap first (the order Spark sums them in).
    pub const ALL: [MemoryMode; 2] = [MemoryMode::OnHeap, MemoryMode::OffHeap];

    #[inline]
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Spark's pool name prefix (`"on-heap"` / `"off-heap"`), used in log lines.
    pub fn pool_prefix(self) -> &'static str {
        match self {
            MemoryMode::OnHeap => "on-heap",
            MemoryMode::OffHeap => "off-heap",
        }
    }
}

impl fmt::Display for MemoryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryMode::OnHeap => "ON_HEAP",
            MemoryMode::OffHeap => "OFF_HEAP",
        })
    }
}

/// Sizes the layout computes for the four pools (docs/spark-model.md §1.6–§1.8), in bytes.
///
/// The initial execution pool of a mode is `unified − storage_region`; the initial storage pool
/// is `storage_region`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolSizes {
    /// `M = (S − R) × spark.memory.fraction` (`maxHeapMemory`).
    pub on_heap_unified: u64,
    /// `M × spark.memory.storageFraction` (`onHeapStorageRegionSize`).
    pub on_heap_storage_region: u64,
    /// `O = spark.memory.offHeap.size` (`maxOffHeapMemory`), read even when off-heap is disabled.
    pub off_heap_unified: u64,
    /// `O × spark.memory.storageFraction` (`offHeapStorageMemory`).
    pub off_heap_storage_region: u64,
}

impl PoolSizes {
    /// The same unified size and storage region for both modes (handy for running a scenario in
    /// both modes).
    pub fn symmetric(unified: u64, storage_region: u64) -> Self {
        PoolSizes {
            on_heap_unified: unified,
            on_heap_storage_region: storage_region,
            off_heap_unified: unified,
            off_heap_storage_region: storage_region,
        }
    }

    /// `(unified, storage_region)` of one mode.
    pub fn of(&self, mode: MemoryMode) -> (u64, u64) {
        match mode {
            MemoryMode::OnHeap => (self.on_heap_unified, self.on_heap_storage_region),
            MemoryMode::OffHeap => (self.off_heap_unified, self.off_heap_storage_region),
        }
    }
}

/// One mode's pools at an instant (for the timeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolSnapshot {
    /// Execution pool size (`ExecutionMemoryPool.poolSize`).
    pub execution_pool_bytes: u64,
    /// Execution memory held by tasks (`ExecutionMemoryPool.memoryUsed`).
    pub execution_used_bytes: u64,
    /// Storage pool size (`StorageMemoryPool.poolSize`).
    pub storage_pool_bytes: u64,
    /// Storage (cached + unroll) memory in use.
    pub storage_used_bytes: u64,
    /// Tasks with an entry in the execution pool's map (Spark's `N`), even at 0 bytes.
    pub active_tasks: usize,
}

/// Both modes' pools at one instant, read under one lock acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemorySnapshot {
    /// `ON_HEAP` pools.
    pub on_heap: PoolSnapshot,
    /// `OFF_HEAP` pools.
    pub off_heap: PoolSnapshot,
    /// Threads currently blocked in `acquire_execution_memory` (fair-share waits, both modes).
    pub waiting_tasks: usize,
}

impl MemorySnapshot {
    /// The pools of one mode.
    pub fn mode(&self, mode: MemoryMode) -> &PoolSnapshot {
        match mode {
            MemoryMode::OnHeap => &self.on_heap,
            MemoryMode::OffHeap => &self.off_heap,
        }
    }
}

/// How often, and for how long, a task's execution acquires blocked waiting for its 1/2N share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WaitStats {
    /// Acquire calls that blocked at least once (one per call, however many wake-ups it took).
    pub waits: u64,
    /// Total time those calls spent blocked on the condition variable.
    pub waited: Duration,
}
