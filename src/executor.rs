//! The executor: owns the real memory of a [`Layout`] — the heap mapping carved into reserved,
//! user and unified ranges, and the off-heap arena — and the allocators over them.
//!
//! A fresh executor touches only its reserved 300 MiB, as a JVM that has started and loaded its
//! classes holds that much; user, storage and execution pages become resident as tasks write
//! them, and go back to the kernel when freed unless `spillway.memory.retainFreed` is set.
//!
//! # Address space beyond the model
//!
//! A JVM compacts its heap, so an allocation succeeds whenever enough bytes are free in total;
//! a page allocator over a fixed range cannot move live pages and could refuse a large page
//! for fragmentation alone, which Spark would never see. So the unified range (and the
//! off-heap arena) get address space of twice their accounted size plus one maximum page
//! ([`address_span`]). This costs no memory: the pools still bound what is used to the model's
//! bytes exactly, and only written pages are ever resident.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::codec::Compression;
use crate::conf::{ConfError, SparkConf, format_mib, keys};
use crate::interleave::ScheduleMode;
use crate::layout::Layout;
use crate::memory::{
    MemoryMode, PoolSizes, TaskAttemptId, TaskMemoryManager, UnifiedMemoryManager,
};
use crate::metrics::ExecutorMetrics;
use crate::region::{
    Mapping, PageAllocator, Range, RegionError, ReleasePolicy, UserArena, process_rss_bytes,
};
use crate::storage::block_manager::BlockManager;
use crate::storage::disk::{DiskBlockManager, LocalDirError};
use crate::storage::memory_store::{MemoryStore, UnrollConf};
use crate::storage::values::ValuesConf;

/// Why an executor could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error("cannot set up executor memory: {0}")]
    Region(#[from] RegionError),
    #[error(transparent)]
    LocalDirs(#[from] LocalDirError),
}

/// A running executor's memory.
pub struct Executor {
    layout: Layout,
    policy: ReleasePolicy,
    heap: Arc<Mapping>,
    reserved: Range,
    user: Range,
    unified: Range,
    jvm_internal: Range,
    off_heap: Option<Range>,
    user_allocator: Arc<PageAllocator>,
    unified_allocator: Arc<PageAllocator>,
    off_heap_allocator: Option<Arc<PageAllocator>>,
    memory_manager: Arc<UnifiedMemoryManager>,
    block_manager: Arc<BlockManager>,
    local_dirs: Arc<DiskBlockManager>,
    compression: Compression,
    schedule: ScheduleMode,
    spillable: SpillableConf,
    metrics: Arc<ExecutorMetrics>,
    next_task_attempt_id: AtomicU64,
}

impl Layout {
    /// The four pool sizes of the unified memory manager (docs/spark-model.md §1.6–§1.8).
    pub fn pool_sizes(&self) -> PoolSizes {
        PoolSizes {
            on_heap_unified: self.unified as u64,
            on_heap_storage_region: self.storage_region as u64,
            off_heap_unified: self.off_heap as u64,
            off_heap_storage_region: self.off_heap_storage_region as u64,
        }
    }

    /// The Tungsten memory mode: OFF_HEAP iff `spark.memory.offHeap.enabled` (docs/spark-model.md §5.1).
    pub fn tungsten_mode(&self) -> MemoryMode {
        if self.off_heap_enabled {
            MemoryMode::OffHeap
        } else {
            MemoryMode::OnHeap
        }
    }
}

impl Executor {
    /// Maps the heap (and the off-heap arena when `spark.memory.offHeap.enabled`), carves the
    /// heap into its regions and touches the reserved region.
    pub fn start(layout: &Layout, conf: &SparkConf) -> Result<Executor, ExecutorError> {
        let retain = conf.get_bool(keys::RETAIN_FREED_MEMORY)?;
        // Read once, before any memory is mapped: a codec Spark does not ship is bad input
        // (exit 2) naming spark.io.compression.codec and its value (docs/spark-model.md §19).
        let compression = Compression::from_conf(conf)?;
        let schedule = schedule_mode(conf)?;
        // How typed cached records are sized and serialized (docs/spark-model.md §21.7):
        // spark.serializer, spark.rdd.compress with the codec, compressed oops below 32 GiB.
        let values = ValuesConf::from_conf(conf, layout.heap_bytes.max(0) as u64)?;
        let policy = if retain {
            ReleasePolicy::Keep
        } else {
            ReleasePolicy::ReturnToKernel
        };
        // Laid out as reserved | user | unified (its address span) | JVM-internal.
        let ranges = layout.heap_ranges();
        let unified_span = address_span(layout.unified as u64);
        let jvm_internal_len = ranges.jvm_internal.1 as u64;
        let mut offsets = [0u64; 4];
        let lens = [
            ranges.reserved.1 as u64,
            ranges.user.1 as u64,
            unified_span,
            jvm_internal_len,
        ];
        for i in 1..4 {
            offsets[i] = offsets[i - 1] + lens[i - 1];
        }
        let heap = Mapping::anonymous(offsets[3] + lens[3], "heap")?;
        let whole = heap.whole();
        let carve = |i: usize, name: &'static str| {
            whole
                .checked_sub_range(offsets[i], lens[i])
                .map(|r| r.with_name(name))
        };
        let reserved = carve(0, "reserved")?;
        let user = carve(1, "user")?;
        let unified = carve(2, "unified")?;
        let jvm_internal = carve(3, "jvm-internal")?;
        reserved.touch()?;

        // Mapped whenever it has a size: Spark sizes the off-heap pools from
        // spark.memory.offHeap.size even when Tungsten stays on the heap, and OFF_HEAP blocks
        // can use them (docs/spark-model.md §1.8).
        let off_heap = if layout.off_heap > 0 {
            let span = address_span(layout.off_heap as u64);
            let mapping = Mapping::anonymous(span, "off-heap")?;
            Some(mapping.whole())
        } else {
            None
        };
        // Freed pages kept for reuse are resident but no longer accounted: keep the pool small
        // so the model's picture of memory stays true (`spillway.memory.pagePoolBytes`).
        // Non-negative by the key table's limits.
        let pool = conf.get_size(keys::PAGE_POOL_BYTES)? as u64;
        let allocator = |r: &Range| PageAllocator::with_pool_limit(r.clone(), policy, pool);
        let user_allocator = Arc::new(allocator(&user)?);
        let unified_allocator = Arc::new(allocator(&unified)?);
        let off_heap_allocator = match &off_heap {
            Some(r) => Some(Arc::new(allocator(r)?)),
            None => None,
        };
        let memory_manager = Arc::new(UnifiedMemoryManager::new(layout.pool_sizes()));
        let unroll = UnrollConf {
            // Within the key table's limits: a threshold >= 0, a period >= 1.
            initial_threshold: conf.get_long(keys::UNROLL_MEMORY_THRESHOLD)? as u64,
            check_period: conf.get_long(keys::UNROLL_MEMORY_CHECK_PERIOD)? as u64,
            growth_factor: conf.get_double(keys::UNROLL_MEMORY_GROWTH_FACTOR)?,
        };
        let memory_store = MemoryStore::new(
            Arc::clone(&memory_manager),
            Arc::clone(&unified_allocator),
            off_heap_allocator.clone(),
            unroll,
        );
        let spillable = SpillableConf::from_conf(conf)?;
        let local_dirs = Arc::new(DiskBlockManager::from_conf(conf)?);
        let block_manager =
            BlockManager::with_values(memory_store, Arc::clone(&local_dirs), values);
        Ok(Executor {
            memory_manager,
            block_manager,
            local_dirs,
            compression,
            schedule,
            spillable,
            metrics: Arc::new(ExecutorMetrics::new()),
            next_task_attempt_id: AtomicU64::new(0),
            layout: layout.clone(),
            policy,
            heap,
            reserved,
            user,
            unified,
            jvm_internal,
            off_heap,
            user_allocator,
            unified_allocator,
            off_heap_allocator,
        })
    }

    /// The layout this executor was built from.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether freed pages go back to the kernel.
    pub fn release_policy(&self) -> ReleasePolicy {
        self.policy
    }

    /// The whole heap mapping.
    pub fn heap(&self) -> &Arc<Mapping> {
        &self.heap
    }

    /// The reserved range (touched at start).
    pub fn reserved(&self) -> &Range {
        &self.reserved
    }

    /// The user-memory range (UDF objects).
    pub fn user(&self) -> &Range {
        &self.user
    }

    /// The unified range: storage blocks and ON_HEAP execution pages.
    pub fn unified(&self) -> &Range {
        &self.unified
    }

    /// The off-heap arena, when enabled: OFF_HEAP pages and blocks.
    pub fn off_heap(&self) -> Option<&Range> {
        self.off_heap.as_ref()
    }

    /// The allocator over the user range.
    pub fn user_allocator(&self) -> &Arc<PageAllocator> {
        &self.user_allocator
    }

    /// The allocator over the unified range.
    pub fn unified_allocator(&self) -> &Arc<PageAllocator> {
        &self.unified_allocator
    }

    /// The allocator over the off-heap arena, when enabled.
    pub fn off_heap_allocator(&self) -> Option<&Arc<PageAllocator>> {
        self.off_heap_allocator.as_ref()
    }

    /// The executor's unified memory manager (one per JVM in Spark).
    pub fn memory_manager(&self) -> &Arc<UnifiedMemoryManager> {
        &self.memory_manager
    }

    /// A task memory manager for `task`: Tungsten pages of the layout's mode and page size,
    /// carved from the unified range (ON_HEAP) or the off-heap arena (OFF_HEAP).
    pub fn task_memory_manager(&self, task: TaskAttemptId) -> TaskMemoryManager {
        let mode = self.layout.tungsten_mode();
        let allocator = match mode {
            MemoryMode::OnHeap => &self.unified_allocator,
            MemoryMode::OffHeap => self
                .off_heap_allocator
                .as_ref()
                .expect("an OFF_HEAP layout maps the off-heap arena"),
        };
        TaskMemoryManager::new(
            Arc::clone(&self.memory_manager),
            task,
            mode,
            self.layout.page_size as u64,
            Arc::clone(allocator),
            Arc::clone(&self.metrics),
        )
    }

    /// This executor's spill and page-zeroing counters (its tasks' only; other executors in
    /// the same process keep their own).
    pub fn metrics(&self) -> &Arc<ExecutorMetrics> {
        &self.metrics
    }

    /// The block manager (memory store, disk store).
    pub fn block_manager(&self) -> &Arc<BlockManager> {
        &self.block_manager
    }

    /// The local directories blocks and spills are written to.
    pub fn local_dirs(&self) -> &Arc<DiskBlockManager> {
        &self.local_dirs
    }

    /// Which files are compressed, and with what (docs/spark-model.md §19.3), read from the
    /// configuration at start: the sort and aggregation spills use `spill`
    /// (`spark.shuffle.spill.compress`, the `TempLocalBlockId` rule).
    pub fn compression(&self) -> &Compression {
        &self.compression
    }

    /// The settings of Spark's spillable collections (docs/spark-model.md §8), read at start.
    pub fn spillable(&self) -> &SpillableConf {
        &self.spillable
    }

    /// How each stage's tasks interleave at the memory manager (`spillway.schedule`,
    /// docs/spark-model.md §24), read at start.
    pub fn schedule(&self) -> ScheduleMode {
        self.schedule
    }

    /// A new task attempt id, unique in this executor (Spark's `taskAttemptId`).
    pub fn next_task_attempt_id(&self) -> TaskAttemptId {
        self.next_task_attempt_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Gives the allocators' pooled free pages back to the kernel (between stages, so that
    /// resident memory follows the model).
    pub fn trim_page_pools(&self) {
        self.user_allocator.trim();
        self.unified_allocator.trim();
        if let Some(a) = &self.off_heap_allocator {
            a.trim();
        }
    }

    /// A task's arena for user-memory objects (UDF data), cut from the user range.
    pub fn user_arena(&self) -> UserArena {
        UserArena::new(&self.user_allocator)
    }

    /// How much of each region is resident now, beside the model's size.
    pub fn residency(&self) -> Residency {
        let mut regions = vec![
            RegionResidency::of(&self.reserved, self.layout.reserved),
            RegionResidency::of(&self.user, self.layout.user),
            RegionResidency::of(&self.unified, self.layout.unified),
        ];
        if !self.jvm_internal.is_empty() {
            regions.push(RegionResidency::of(&self.jvm_internal, 0));
        }
        if let Some(off_heap) = &self.off_heap {
            regions.push(RegionResidency::of(off_heap, self.layout.off_heap));
        }
        Residency {
            regions,
            process_rss_bytes: process_rss_bytes().ok(),
        }
    }
}

/// The address space given to a range whose pools account `accounted` bytes: twice that plus
/// one maximum default page (64 MiB), so that fragmentation alone never refuses a page.
pub fn address_span(accounted: u64) -> u64 {
    if accounted == 0 {
        return 0;
    }
    accounted.saturating_mul(2).saturating_add(64 << 20)
}

/// Residency of each region, measured with `mincore`.
#[derive(Debug, Clone, Serialize)]
pub struct Residency {
    pub regions: Vec<RegionResidency>,
    /// The whole process's resident memory (`/proc/self`), when readable.
    pub process_rss_bytes: Option<u64>,
}

/// One region: its size in the model, its mapped length and what is resident.
#[derive(Debug, Clone, Serialize)]
pub struct RegionResidency {
    pub region: &'static str,
    pub model_bytes: i64,
    /// Address space of the range (more than the model for unified and off-heap).
    pub mapped_bytes: u64,
    pub resident_bytes: u64,
}

impl RegionResidency {
    fn of(range: &Range, model_bytes: i64) -> RegionResidency {
        RegionResidency {
            region: range.name(),
            model_bytes,
            mapped_bytes: range.len(),
            resident_bytes: range.resident_bytes(),
        }
    }
}

impl Residency {
    /// The resident bytes of the region named `name`.
    pub fn resident(&self, name: &str) -> Option<u64> {
        self.regions
            .iter()
            .find(|r| r.region == name)
            .map(|r| r.resident_bytes)
    }

    /// A table of model size against resident memory per region.
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "{:<14} {:>12} {:>14} {:>14} {:>9}\n",
            "region", "model MiB", "mapped B", "resident MiB", "of model"
        );
        for r in &self.regions {
            let share = if r.model_bytes <= 0 {
                "-".to_string()
            } else {
                format!(
                    "{:.1}%",
                    100.0 * r.resident_bytes as f64 / r.model_bytes as f64
                )
            };
            out.push_str(&format!(
                "{:<14} {:>12} {:>14} {:>14} {:>9}\n",
                r.region,
                format_mib(r.model_bytes.max(0) as u64),
                r.mapped_bytes,
                format_mib(r.resident_bytes),
                share
            ));
        }
        if let Some(rss) = self.process_rss_bytes {
            out.push_str(&format!("process RSS    {} MiB\n", format_mib(rss)));
        }
        out.push_str(
            "A fresh executor touches only its reserved memory; user, storage and execution \
             pages become resident as tasks write them. The unified range and the off-heap \
             arena map twice their size in address space (no memory), standing in for a \
             compacting heap.\n",
        );
        out
    }
}

impl crate::exit::Exit for ExecutorError {
    /// The configuration and the local directories it names are input; a mapping that the
    /// kernel refuses is the machine.
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            ExecutorError::Conf(_) | ExecutorError::LocalDirs(_) => {
                crate::exit::ExitStatus::BadInput
            }
            ExecutorError::Region(_) => crate::exit::ExitStatus::Failure,
        }
    }
}

/// `spillway.schedule` and `spillway.schedule.seed`.
/// The keys of Spark's `Spillable` collections (`ExternalAppendOnlyMap`, `ExternalSorter`;
/// docs/spark-model.md §8) and of the unsafe sorter's forced spill (§9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpillableConf {
    /// `spark.shuffle.spill.initialMemoryThreshold`: the bytes a collection uses before it asks
    /// the pool for any (§8.1).
    pub initial_threshold: u64,
    /// `spark.shuffle.spill.numElementsForceSpillThreshold`: a collection spills once more
    /// records than this arrived since its last spill, a sorter once it holds this many.
    pub force_spill_elements: i64,
    /// `spark.shuffle.spill.batchSize`: objects per batch of a collection's spill (§8.4),
    /// spillway's records per frame. Spark flushes a batch when the count *equals* the size,
    /// so a size below 1 writes the whole spill as one batch.
    pub batch_records: u32,
}

impl SpillableConf {
    pub fn from_conf(conf: &SparkConf) -> Result<SpillableConf, ConfError> {
        let batch = conf.get_long(keys::SPILL_BATCH_SIZE)?;
        Ok(SpillableConf {
            // Non-negative by the key table's limits.
            initial_threshold: conf.get_size(keys::SPILL_INITIAL_MEMORY_THRESHOLD)? as u64,
            force_spill_elements: i64::from(conf.get_int(keys::SPILL_FORCE_SPILL_THRESHOLD)?),
            batch_records: if batch < 1 {
                u32::MAX
            } else {
                u32::try_from(batch).unwrap_or(u32::MAX)
            },
        })
    }
}

fn schedule_mode(conf: &SparkConf) -> Result<ScheduleMode, ConfError> {
    match conf
        .get_str(keys::SCHEDULE)
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "free" => Ok(ScheduleMode::Free),
        "deterministic" => Ok(ScheduleMode::Deterministic {
            seed: conf.get_long(keys::SCHEDULE_SEED)? as u64,
        }),
        other => Err(ConfError::Unsupported {
            key: keys::SCHEDULE.into(),
            value: other.into(),
            reason: "expected free or deterministic".into(),
        }),
    }
}
