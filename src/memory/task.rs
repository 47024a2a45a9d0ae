//! Spark's `TaskMemoryManager` and `MemoryConsumer`: one per running task, holding its pages
//! (Tungsten addressing) and its consumers, and asking consumers to spill when execution memory
//! runs short (docs/spark-model.md §5).
//!
//! # Consumers and spilling
//!
//! A consumer is registered with a [`MemoryConsumer`] callback and gets a [`Consumer`] handle
//! through which it allocates pages and arrays and acquires or frees plain execution memory.
//! The task memory manager keeps each consumer's `used` bytes itself. When a request comes up
//! short it asks consumers of the same mode to spill, in Spark's order (§5.3b): consumers with
//! `used > 0` keyed by `used`, the requester keyed 0 (so it is asked last); repeatedly the
//! smallest key that covers what is missing, else the largest key, the last consumer of that
//! key; after a spill that released bytes the manager asks the memory manager again (others may
//! take the freed bytes first) and the consumer stays eligible; a consumer that released
//! nothing is dropped from the round.
//!
//! The callback runs on the requesting thread while no lock of this module is held, so a
//! consumer may free its pages from inside `spill`. A consumer must therefore not hold its own
//! state lock across a call into its [`Consumer`] handle; if it finds its state busy when asked
//! to spill, it returns 0, as Spark's sorters do when they cannot spill at that moment.
//!
//! # Pages
//!
//! A [`Page`] is a real [`MemoryBlock`] carved from the unified range (ON_HEAP) or the off-heap
//! arena (OFF_HEAP), written by its owner. Its page number indexes a table of 8192 slots;
//! [`encode_address`] packs a page number (13 bits) and an offset (51 bits) as Tungsten does.
//! Dropping a page frees it: its slot, its accounting and its memory. At task end
//! [`TaskMemoryManager::clean_up_all_allocated_memory`] releases everything still accounted and
//! reports the leak as Spark does (§5.6); pages still alive then give their memory back when
//! they are dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::metrics::ExecutorMetrics;
use crate::region::{MemoryBlock, PageAllocator};

use super::{MemoryMode, TaskAttemptId, UnifiedMemoryManager};

/// Bits of a Tungsten address that hold the page number.
pub const PAGE_NUMBER_BITS: u32 = 13;
/// Bits of a Tungsten address that hold the offset inside the page.
pub const OFFSET_BITS: u32 = 64 - PAGE_NUMBER_BITS;
/// Slots in a task's page table (`PAGE_TABLE_SIZE = 1 << 13`).
pub const PAGE_TABLE_SIZE: usize = 1 << PAGE_NUMBER_BITS;
/// The largest page a task may ask for: `(2^31 - 1) * 8` bytes (`MAXIMUM_PAGE_SIZE_BYTES`).
pub const MAXIMUM_PAGE_SIZE_BYTES: u64 = ((1u64 << 31) - 1) * 8;
const MASK_LONG_LOWER_51_BITS: u64 = (1u64 << OFFSET_BITS) - 1;

/// `TaskMemoryManager.encodePageNumberAndOffset`.
pub fn encode_address(page_number: u32, offset_in_page: u64) -> u64 {
    debug_assert!(
        (page_number as usize) < PAGE_TABLE_SIZE,
        "page number {page_number} >= {PAGE_TABLE_SIZE}"
    );
    ((page_number as u64) << OFFSET_BITS) | (offset_in_page & MASK_LONG_LOWER_51_BITS)
}

/// `TaskMemoryManager.decodePageNumber`.
pub fn decode_page_number(address: u64) -> u32 {
    (address >> OFFSET_BITS) as u32
}

/// `TaskMemoryManager.decodeOffset`.
pub fn decode_offset(address: u64) -> u64 {
    address & MASK_LONG_LOWER_51_BITS
}

/// A consumer's identity inside its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub usize);

/// Why a consumer could not spill (Spark's `IOException` from `spill`). The typed cause is
/// kept, not flattened to text, so that `SPILL_OUT_OF_MEMORY` can still be matched on the file,
/// the offset and the errno it came from, and its chain printed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerSpillError {
    /// Writing the spill file failed: the spill format's own error, naming file and offset.
    #[error(transparent)]
    File(#[from] crate::spill::SpillError),
    /// Any other I/O failure (a consumer that does not write spillway's spill format).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Spark's `MemoryConsumer.spill(size, trigger)`: free at least `size` bytes if possible by
/// writing data to disk, and return the bytes released (0 if nothing could be freed).
pub trait MemoryConsumer: Send + Sync {
    /// Spill. `trigger` is the consumer whose request caused it (possibly this one).
    fn spill(&self, size: u64, trigger: ConsumerId) -> Result<u64, ConsumerSpillError>;
}

/// A consumer that cannot spill (`spill` returns 0).
pub struct Unspillable;

impl MemoryConsumer for Unspillable {
    fn spill(&self, _size: u64, _trigger: ConsumerId) -> Result<u64, ConsumerSpillError> {
        Ok(0)
    }
}

/// Failures of task memory, with Spark's error classes.
#[derive(Debug, thiserror::Error)]
pub enum TaskMemoryError {
    /// UNABLE_TO_ACQUIRE_MEMORY (docs/spark-model.md §12.6), with the per-consumer usage dump Spark logs.
    #[error(
        "[UNABLE_TO_ACQUIRE_MEMORY] Unable to acquire {requested} bytes of memory, got \
         {received}. SQLSTATE: 53200\n{usage}"
    )]
    UnableToAcquire {
        requested: u64,
        received: u64,
        usage: String,
    },
    /// SPILL_OUT_OF_MEMORY (docs/spark-model.md §12.7).
    #[error(
        "[SPILL_OUT_OF_MEMORY] Error while calling spill() on {consumer} : {source} \
         SQLSTATE: 53200"
    )]
    SpillFailed {
        consumer: String,
        #[source]
        source: ConsumerSpillError,
    },
    /// `TooLargePageException` (docs/spark-model.md §12.8).
    #[error("Cannot allocate a page of {0} bytes.")]
    TooLargePage(u64),
    /// The page table is full (docs/spark-model.md §5.4).
    #[error("Have already allocated a maximum of {PAGE_TABLE_SIZE} pages")]
    PageTableFull,
    /// `spark.unsafe.exceptionOnMemoryLeak=true` and the task leaked (docs/spark-model.md §5.6).
    #[error("Managed memory leak detected; size = {bytes} bytes, task {task}")]
    Leak { bytes: u64, task: TaskAttemptId },
}

struct ConsumerEntry {
    name: String,
    mode: MemoryMode,
    used: u64,
    spilled_bytes: u64,
    spill_count: u64,
    callback: Arc<dyn MemoryConsumer>,
    registered: bool,
}

struct PageSlot {
    size: u64,
    consumer: ConsumerId,
}

struct State {
    consumers: Vec<ConsumerEntry>,
    page_table: Vec<Option<PageSlot>>,
    /// Lowest possibly-free slot, to keep `nextClearBit` cheap.
    next_free_hint: usize,
    acquired_but_not_used: u64,
    peak_execution_bytes: u64,
    /// Peak holding per mode, indexed by `MemoryMode::index`.
    peak_by_mode: [u64; 2],
    /// Bumped at clean-up so that pages from before it do not release twice.
    generation: u64,
}

struct Shared {
    task: TaskAttemptId,
    mode: MemoryMode,
    page_size: u64,
    manager: Arc<UnifiedMemoryManager>,
    allocator: Arc<PageAllocator>,
    /// The executor's counters (pages being zeroed; the task's consumers count spills).
    metrics: Arc<ExecutorMetrics>,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside a consumer callback never holds this lock, so poisoning only follows
        // a bug in this module; the state is still consistent enough to clean up.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One task's memory: Spark's `TaskMemoryManager` (cheap to clone; clones share the task).
#[derive(Clone)]
pub struct TaskMemoryManager {
    shared: Arc<Shared>,
}

/// What a task's memory looked like, for metrics and the usage dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerUsage {
    pub id: ConsumerId,
    pub name: String,
    pub mode: MemoryMode,
    pub used: u64,
    pub spilled_bytes: u64,
    pub spill_count: u64,
}

impl TaskMemoryManager {
    /// A task memory manager for `task`, whose Tungsten pages are `mode` and come from
    /// `allocator` (the unified range for ON_HEAP, the off-heap arena for OFF_HEAP), counting
    /// its events into its executor's `metrics`.
    pub fn new(
        manager: Arc<UnifiedMemoryManager>,
        task: TaskAttemptId,
        mode: MemoryMode,
        page_size: u64,
        allocator: Arc<PageAllocator>,
        metrics: Arc<ExecutorMetrics>,
    ) -> TaskMemoryManager {
        let mut page_table = Vec::with_capacity(PAGE_TABLE_SIZE);
        page_table.resize_with(PAGE_TABLE_SIZE, || None);
        TaskMemoryManager {
            shared: Arc::new(Shared {
                task,
                mode,
                page_size,
                manager,
                allocator,
                metrics,
                state: Mutex::new(State {
                    consumers: Vec::new(),
                    page_table,
                    next_free_hint: 0,
                    acquired_but_not_used: 0,
                    peak_execution_bytes: 0,
                    peak_by_mode: [0; 2],
                    generation: 0,
                }),
            }),
        }
    }

    /// The task this manager serves.
    pub fn task(&self) -> TaskAttemptId {
        self.shared.task
    }

    /// The Tungsten memory mode of this task's pages.
    pub fn tungsten_mode(&self) -> MemoryMode {
        self.shared.mode
    }

    /// The default page size (`spark.buffer.pageSize` or the layout's default).
    pub fn page_size(&self) -> u64 {
        self.shared.page_size
    }

    /// The counters of the executor this task runs in (spills, pages being zeroed).
    pub fn metrics(&self) -> &Arc<ExecutorMetrics> {
        &self.shared.metrics
    }

    /// Registers a consumer of the Tungsten mode. Spark registers a consumer on its first
    /// acquire; here registration hands out the handle, and the consumer joins the spill
    /// candidates once it holds memory.
    pub fn register(&self, name: &str, callback: Arc<dyn MemoryConsumer>) -> Consumer {
        self.register_in(name, self.shared.mode, callback)
    }

    /// Registers a consumer of a given mode (a consumer may use ON_HEAP memory in an
    /// OFF_HEAP executor, e.g. for arrays).
    pub fn register_in(
        &self,
        name: &str,
        mode: MemoryMode,
        callback: Arc<dyn MemoryConsumer>,
    ) -> Consumer {
        let mut st = self.shared.lock();
        let id = ConsumerId(st.consumers.len());
        st.consumers.push(ConsumerEntry {
            name: name.to_string(),
            mode,
            used: 0,
            spilled_bytes: 0,
            spill_count: 0,
            callback,
            registered: true,
        });
        Consumer {
            tmm: self.clone(),
            id,
            mode,
        }
    }

    /// Spark's `acquireExecutionMemory(required, requester)` (§5.3): acquire from the memory
    /// manager, then spill other consumers (and last the requester) until `required` bytes
    /// are had or nobody can spill. Returns what was granted, possibly less than `required`;
    /// the caller's `used` grows by the grant.
    fn acquire_execution_memory(
        &self,
        required: u64,
        requester: ConsumerId,
    ) -> Result<u64, TaskMemoryError> {
        let sh = &self.shared;
        let mode = self.consumer_mode(requester);
        let mut got = sh.manager.acquire_execution_memory(required, sh.task, mode);
        if got < required {
            // Keys: used bytes, the requester keyed 0 so it is asked last.
            let mut sorted: BTreeMap<u64, Vec<ConsumerId>> = BTreeMap::new();
            {
                let st = sh.lock();
                for (i, c) in st.consumers.iter().enumerate() {
                    if c.registered && c.used > 0 && c.mode == mode {
                        let id = ConsumerId(i);
                        let key = if id == requester { 0 } else { c.used };
                        sorted.entry(key).or_default().push(id);
                    }
                }
            }
            while got < required && !sorted.is_empty() {
                let need = required - got;
                let key = match sorted.range(need..).next() {
                    Some((k, _)) => *k,
                    None => *sorted.keys().next_back().expect("not empty"),
                };
                let list = sorted.get_mut(&key).expect("key present");
                let victim = *list.last().expect("lists are never empty");
                let (callback, name) = {
                    let st = sh.lock();
                    let c = &st.consumers[victim.0];
                    (Arc::clone(&c.callback), c.name.clone())
                };
                // What was granted so far is accounted but not yet in a page while the victim
                // writes its spill (seconds, for a large one): not resident, and not a gap.
                let _pending = sh.metrics.touching(got);
                let released = callback.spill(need, requester).map_err(|source| {
                    TaskMemoryError::SpillFailed {
                        consumer: name,
                        source,
                    }
                })?;
                if released > 0 {
                    {
                        let mut st = sh.lock();
                        let c = &mut st.consumers[victim.0];
                        c.spilled_bytes += released;
                        c.spill_count += 1;
                    }
                    got += sh.manager.acquire_execution_memory(need, sh.task, mode);
                } else {
                    list.pop();
                    if list.is_empty() {
                        sorted.remove(&key);
                    }
                }
            }
        }
        let mut st = sh.lock();
        st.consumers[requester.0].used += got;
        let held = sh.manager.execution_memory_used_by(sh.task);
        st.peak_execution_bytes = st.peak_execution_bytes.max(held);
        // Spark 4's `peakOnHeapMemory` / `peakOffHeapMemory`: the task's holding in the mode
        // just acquired from.
        let in_mode = sh.manager.execution_memory_used_by_in(sh.task, mode);
        let peak = &mut st.peak_by_mode[mode.index()];
        *peak = (*peak).max(in_mode);
        Ok(got)
    }

    /// Spark's `releaseExecutionMemory(size, consumer)`: gives back `size` bytes the consumer
    /// acquired without a page (`acquire_memory`). For a consumer's spill callback, which
    /// holds no `Consumer` handle; no lock of this manager may be held by the caller.
    pub fn release_execution_memory(&self, size: u64, consumer: ConsumerId) {
        let sh = &self.shared;
        let mode = {
            let mut st = sh.lock();
            let c = &mut st.consumers[consumer.0];
            c.used = c.used.saturating_sub(size);
            c.mode
        };
        sh.manager.release_execution_memory(size, sh.task, mode);
    }

    fn consumer_mode(&self, id: ConsumerId) -> MemoryMode {
        self.shared.lock().consumers[id.0].mode
    }

    /// Spark's `allocatePage(size, consumer)`: acquire up to `size` bytes (spilling if needed),
    /// take the lowest free page number and carve a real block of the *acquired* size.
    /// `Ok(None)` when nothing could be acquired.
    fn allocate_page(
        &self,
        size: u64,
        consumer: ConsumerId,
    ) -> Result<Option<Page>, TaskMemoryError> {
        if size > MAXIMUM_PAGE_SIZE_BYTES {
            return Err(TaskMemoryError::TooLargePage(size));
        }
        let sh = &self.shared;
        let mode = self.consumer_mode(consumer);
        loop {
            let acquired = self.acquire_execution_memory(size, consumer)?;
            if acquired == 0 {
                return Ok(None);
            }
            let (page_number, generation) = {
                let mut st = sh.lock();
                let start = st.next_free_hint;
                let Some(slot) = (start..PAGE_TABLE_SIZE).find(|&i| st.page_table[i].is_none())
                else {
                    st.consumers[consumer.0].used -= acquired;
                    drop(st);
                    sh.manager.release_execution_memory(acquired, sh.task, mode);
                    return Err(TaskMemoryError::PageTableFull);
                };
                st.page_table[slot] = Some(PageSlot {
                    size: acquired,
                    consumer,
                });
                st.next_free_hint = slot + 1;
                (slot as u32, st.generation)
            };
            match sh.allocator.allocate(acquired) {
                Ok(mut block) => {
                    // HeapMemoryAllocator's `new long[n]` is zeroed by the JVM, so an ON_HEAP
                    // page is resident from the start; UnsafeMemoryAllocator's malloc'd
                    // OFF_HEAP page becomes resident as it is written.
                    if mode == MemoryMode::OnHeap {
                        let _zeroing = sh.metrics.touching(block.len());
                        block.touch();
                    }
                    return Ok(Some(Page {
                        tmm: self.clone(),
                        block: Some(block),
                        page_number,
                        consumer,
                        mode,
                        generation,
                    }));
                }
                Err(e) => {
                    // Spark's "Failed to allocate a page (N bytes), try again.": the bytes stay
                    // accounted as acquired-but-not-used, the slot is freed, and the request
                    // is retried (spilling more, or getting nothing).
                    warn(&format!(
                        "Failed to allocate a page ({acquired} bytes), try again. ({e})"
                    ));
                    let mut st = sh.lock();
                    st.page_table[page_number as usize] = None;
                    st.next_free_hint = st.next_free_hint.min(page_number as usize);
                    st.consumers[consumer.0].used -= acquired;
                    st.acquired_but_not_used += acquired;
                }
            }
        }
    }

    fn free_page_accounting(
        &self,
        page_number: u32,
        size: u64,
        consumer: ConsumerId,
        mode: MemoryMode,
        generation: u64,
    ) {
        let sh = &self.shared;
        {
            let mut st = sh.lock();
            if st.generation != generation {
                // Released at clean-up already; only the memory goes back (by the caller).
                return;
            }
            debug_assert!(
                st.page_table[page_number as usize]
                    .as_ref()
                    .map(|s| (s.size, s.consumer))
                    == Some((size, consumer)),
                "page {page_number} of {size} bytes of {consumer:?} not in the table"
            );
            st.page_table[page_number as usize] = None;
            st.next_free_hint = st.next_free_hint.min(page_number as usize);
            let c = &mut st.consumers[consumer.0];
            c.used = c.used.saturating_sub(size);
        }
        sh.manager.release_execution_memory(size, sh.task, mode);
    }

    /// Peak execution memory this task held (both modes), Spark's `peakExecutionMemory`.
    pub fn peak_execution_memory(&self) -> u64 {
        self.shared.lock().peak_execution_bytes
    }

    /// Peak execution memory this task held in `mode` (Spark 4's
    /// `getPeakOnHeapExecutionMemory` / `getPeakOffHeapExecutionMemory`).
    pub fn peak_execution_memory_in(&self, mode: MemoryMode) -> u64 {
        self.shared.lock().peak_by_mode[mode.index()]
    }

    /// Bytes accounted to the task but not backed by a page (allocation failures).
    pub fn acquired_but_not_used(&self) -> u64 {
        self.shared.lock().acquired_but_not_used
    }

    /// Pages currently in the table.
    pub fn pages_allocated(&self) -> usize {
        self.shared
            .lock()
            .page_table
            .iter()
            .filter(|s| s.is_some())
            .count()
    }

    /// Each consumer's usage and spills.
    pub fn consumers(&self) -> Vec<ConsumerUsage> {
        self.shared
            .lock()
            .consumers
            .iter()
            .enumerate()
            .map(|(i, c)| ConsumerUsage {
                id: ConsumerId(i),
                name: c.name.clone(),
                mode: c.mode,
                used: c.used,
                spilled_bytes: c.spilled_bytes,
                spill_count: c.spill_count,
            })
            .collect()
    }

    /// Spark's `showMemoryUsage`: per-consumer usage of this task, then the executor's totals.
    pub fn memory_usage_dump(&self) -> String {
        let sh = &self.shared;
        let (lines, consumers_total) = {
            let st = sh.lock();
            let mut lines = format!("Memory used in task {}\n", sh.task);
            let mut total = 0;
            for c in st.consumers.iter().filter(|c| c.registered && c.used > 0) {
                lines.push_str(&format!(
                    "Acquired by {} ({}): {} bytes\n",
                    c.name, c.mode, c.used
                ));
                total += c.used;
            }
            (lines, total)
        };
        let task_total = sh.manager.execution_memory_used_by(sh.task);
        let mut out = lines;
        out.push_str(&format!(
            "{} bytes of memory were used by task {} but are not associated with specific \
             consumers\n",
            task_total.saturating_sub(consumers_total),
            sh.task
        ));
        out.push_str(&format!(
            "{} bytes of memory are used for execution and {} bytes of memory are used for \
             storage",
            sh.manager.execution_memory_used(),
            sh.manager.storage_memory_used()
        ));
        out
    }

    /// Spark's `cleanUpAllAllocatedMemory` (§5.6): drop the consumers, free the page table,
    /// release the acquired-but-not-used bytes and everything the task still holds in both
    /// modes. Returns the leaked bytes (what was still accounted to pages and consumers); a
    /// non-zero leak is a warning, or an error when `exception_on_leak`
    /// (`spark.unsafe.exceptionOnMemoryLeak`).
    pub fn clean_up_all_allocated_memory(
        &self,
        exception_on_leak: bool,
    ) -> Result<u64, TaskMemoryError> {
        let sh = &self.shared;
        let acquired_but_not_used = {
            let mut st = sh.lock();
            for c in st.consumers.iter_mut() {
                c.registered = false;
                c.used = 0;
            }
            st.page_table.iter_mut().for_each(|s| *s = None);
            st.next_free_hint = 0;
            st.generation += 1;
            std::mem::take(&mut st.acquired_but_not_used)
        };
        if acquired_but_not_used > 0 {
            sh.manager
                .release_execution_memory(acquired_but_not_used, sh.task, sh.mode);
        }
        let leaked = sh.manager.release_all_execution_memory_for_task(sh.task);
        if leaked > 0 {
            let err = TaskMemoryError::Leak {
                bytes: leaked,
                task: sh.task,
            };
            if exception_on_leak {
                return Err(err);
            }
            warn(&err.to_string());
        }
        Ok(leaked)
    }
}

/// Spark logs these with log4j at WARN.
fn warn(message: &str) {
    crate::log::warn("TaskMemoryManager", message);
}

impl fmt::Debug for TaskMemoryManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskMemoryManager")
            .field("task", &self.shared.task)
            .field("mode", &self.shared.mode)
            .field("page_size", &self.shared.page_size)
            .finish()
    }
}

/// A consumer's handle: Spark's `MemoryConsumer` methods, accounted to one consumer.
pub struct Consumer {
    tmm: TaskMemoryManager,
    id: ConsumerId,
    mode: MemoryMode,
}

impl Consumer {
    /// This consumer's id (the `trigger` its spill requests carry).
    pub fn id(&self) -> ConsumerId {
        self.id
    }

    /// The mode this consumer's memory is in.
    pub fn mode(&self) -> MemoryMode {
        self.mode
    }

    /// The task memory manager this consumer belongs to.
    pub fn task_memory_manager(&self) -> &TaskMemoryManager {
        &self.tmm
    }

    /// Bytes this consumer holds (`getUsed`).
    pub fn used(&self) -> u64 {
        self.tmm.shared.lock().consumers[self.id.0].used
    }

    /// `MemoryConsumer.allocatePage(required)`: a page of at least `max(pageSize, required)`
    /// requested bytes; if less than `required` can be had after spilling, the page is freed,
    /// and UNABLE_TO_ACQUIRE_MEMORY carries the usage dump.
    pub fn allocate_page(&self, required: u64) -> Result<Page, TaskMemoryError> {
        self.page_of_at_least(required.max(self.tmm.shared.page_size), required)
    }

    /// `allocatePage(required)` of a consumer whose own page size is `page_size` (Spark's
    /// `ShuffleExternalSorter` uses `min(2^27, pageSizeBytes)`): a page of at least
    /// `max(page_size, required)` requested bytes.
    pub fn allocate_page_of(&self, page_size: u64, required: u64) -> Result<Page, TaskMemoryError> {
        self.page_of_at_least(required.max(page_size), required)
    }

    /// Asks for `size` bytes; a page smaller than `required` is freed and reported.
    fn page_of_at_least(&self, size: u64, required: u64) -> Result<Page, TaskMemoryError> {
        match self.tmm.allocate_page(size, self.id)? {
            Some(p) if p.len() >= required => Ok(p),
            other => {
                let received = other.as_ref().map_or(0, |p| p.len());
                drop(other);
                Err(self.oom(required, received))
            }
        }
    }

    /// `MemoryConsumer.allocateArray(n)`: exactly `8 n` bytes for a `long[n]`.
    pub fn allocate_array(&self, longs: u64) -> Result<Page, TaskMemoryError> {
        let required = longs
            .checked_mul(8)
            .ok_or(TaskMemoryError::TooLargePage(u64::MAX))?;
        self.page_of_at_least(required, required)
    }

    /// `MemoryConsumer.acquireMemory(size)`: plain execution memory (no page), spilling others
    /// if needed; returns the bytes granted.
    pub fn acquire_memory(&self, size: u64) -> Result<u64, TaskMemoryError> {
        self.tmm.acquire_execution_memory(size, self.id)
    }

    /// `MemoryConsumer.freeMemory(size)`.
    pub fn free_memory(&self, size: u64) {
        self.tmm.release_execution_memory(size, self.id);
    }

    fn oom(&self, required: u64, received: u64) -> TaskMemoryError {
        let usage = self.tmm.memory_usage_dump();
        TaskMemoryError::UnableToAcquire {
            requested: required,
            received,
            usage,
        }
    }
}

impl Drop for Consumer {
    /// A consumer that goes away releases what it still holds outside pages (pages release
    /// themselves) and leaves the spill candidates.
    fn drop(&mut self) {
        let sh = &self.tmm.shared;
        let mut st = sh.lock();
        let c = &mut st.consumers[self.id.0];
        c.registered = false;
        c.callback = Arc::new(Unspillable);
    }
}

/// A Tungsten page: a real block of the unified range or the off-heap arena, owned by a
/// consumer. Dropping it frees the block, its page number and its execution memory.
pub struct Page {
    tmm: TaskMemoryManager,
    /// Always `Some` until the page drops; taken in `drop` to free the memory first.
    block: Option<MemoryBlock>,
    page_number: u32,
    consumer: ConsumerId,
    mode: MemoryMode,
    generation: u64,
}

impl Page {
    fn block(&self) -> &MemoryBlock {
        self.block
            .as_ref()
            .expect("a page holds its block until it drops")
    }

    /// The page number (slot in the page table).
    pub fn page_number(&self) -> u32 {
        self.page_number
    }

    /// Bytes in the page (what was acquired, which may be less than asked).
    pub fn len(&self) -> u64 {
        self.block().len()
    }

    /// Whether the page is empty (never, for a page handed out).
    pub fn is_empty(&self) -> bool {
        self.block().is_empty()
    }

    /// The memory mode of the page.
    pub fn mode(&self) -> MemoryMode {
        self.mode
    }

    /// The page's bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.block().as_slice()
    }

    /// The page's bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.block
            .as_mut()
            .expect("a page holds its block until it drops")
            .as_mut_slice()
    }

    /// The Tungsten address of `offset` in this page.
    pub fn address(&self, offset: u64) -> u64 {
        encode_address(self.page_number, offset)
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("page_number", &self.page_number)
            .field("len", &self.len())
            .field("mode", &self.mode)
            .finish()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let len = self.len();
        // Memory first, accounting second: once the bytes are released another task may be
        // granted them, and the range must already have room for its page.
        drop(self.block.take());
        self.tmm.free_page_accounting(
            self.page_number,
            len,
            self.consumer,
            self.mode,
            self.generation,
        );
    }
}

// The unified memory manager uses loom's locks under `cfg(loom)`, which only work inside a
// loom model; these tests run real threads and memory instead.
#[cfg(all(test, not(loom)))]
mod tests {
    //! Follows Spark's `TaskMemoryManagerSuite` and `MemoryConsumerSuite` where they apply.

    use super::*;
    use crate::memory::PoolSizes;
    use crate::region::{Mapping, ReleasePolicy};

    const MIB: u64 = 1 << 20;

    /// A task memory manager over a fresh on-heap pool of `unified` bytes (no storage region)
    /// and a real range of `range` bytes (the executor gives a range twice the pool, standing
    /// in for a compacting heap; tests that want fragmentation pass less).
    fn setup(unified: u64, range: u64, page_size: u64) -> TaskMemoryManager {
        let manager = Arc::new(UnifiedMemoryManager::new(PoolSizes::symmetric(unified, 0)));
        let mapping = Mapping::anonymous(range, "unified").unwrap();
        let allocator =
            Arc::new(PageAllocator::new(mapping.whole(), ReleasePolicy::ReturnToKernel).unwrap());
        TaskMemoryManager::new(
            manager,
            1,
            MemoryMode::OnHeap,
            page_size,
            allocator,
            Arc::default(),
        )
    }

    /// Holds pages and gives them up, newest first, when asked to spill.
    struct Holder {
        name: &'static str,
        pages: Mutex<Vec<Page>>,
        log: Arc<Mutex<Vec<(&'static str, u64)>>>,
    }

    impl MemoryConsumer for Holder {
        fn spill(&self, size: u64, _trigger: ConsumerId) -> Result<u64, ConsumerSpillError> {
            self.log.lock().unwrap().push((self.name, size));
            let mut pages = self.pages.lock().unwrap();
            let mut released = 0;
            while released < size {
                match pages.pop() {
                    Some(p) => released += p.len(),
                    None => break,
                }
            }
            Ok(released)
        }
    }

    fn holder(
        tmm: &TaskMemoryManager,
        name: &'static str,
        log: &Arc<Mutex<Vec<(&'static str, u64)>>>,
    ) -> (Arc<Holder>, Consumer) {
        let h = Arc::new(Holder {
            name,
            pages: Mutex::new(Vec::new()),
            log: Arc::clone(log),
        });
        let c = tmm.register(name, h.clone());
        (h, c)
    }

    #[test]
    fn addresses_pack_13_page_bits_and_51_offset_bits() {
        let a = encode_address(8191, (1 << 51) - 1);
        assert_eq!(decode_page_number(a), 8191);
        assert_eq!(decode_offset(a), (1 << 51) - 1);
        let a = encode_address(3, 12345);
        assert_eq!(a, (3u64 << 51) | 12345);
        assert_eq!((decode_page_number(a), decode_offset(a)), (3, 12345));
    }

    #[test]
    fn pages_are_real_and_free_themselves() {
        let tmm = setup(64 * MIB, 64 * MIB, MIB);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (_h, c) = holder(&tmm, "a", &log);
        let mut page = c.allocate_page(100).unwrap();
        // A page is at least the page size.
        assert_eq!(page.len(), MIB);
        assert_eq!(page.page_number(), 0);
        page.as_mut_slice().fill(0x5a);
        assert!(page.as_slice().iter().all(|&b| b == 0x5a));
        assert_eq!(c.used(), MIB);
        assert_eq!(tmm.pages_allocated(), 1);
        let second = c.allocate_page(3 * MIB).unwrap();
        assert_eq!((second.page_number(), second.len()), (1, 3 * MIB));
        drop(page);
        assert_eq!(c.used(), 3 * MIB);
        // The lowest free slot is reused.
        let third = c.allocate_array(16).unwrap();
        assert_eq!((third.page_number(), third.len()), (0, 128));
        drop((second, third));
        assert_eq!(c.used(), 0);
        assert_eq!(tmm.shared.allocator.allocated_bytes(), 0);
        assert_eq!(tmm.shared.manager.execution_memory_used(), 0);
        assert_eq!(tmm.peak_execution_memory(), 4 * MIB);
    }

    #[test]
    fn spill_order_smallest_that_covers_else_largest_requester_last() {
        // Pool of 100 MiB: a holds 10, b holds 30, c holds 50, the requester r 5.
        let tmm = setup(100 * MIB, 200 * MIB, MIB);
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut keep = Vec::new();
        for (name, mib) in [("a", 10), ("b", 30), ("c", 50), ("r", 5)] {
            let (h, c) = holder(&tmm, name, &log);
            h.pages
                .lock()
                .unwrap()
                .push(c.allocate_page(mib * MIB).unwrap());
            keep.push((h, c));
        }
        let requester = &keep[3].1;
        // 5 MiB free; asking 25 needs 20 more: b (30) is the smallest that covers it.
        let p = requester.allocate_page(25 * MIB).unwrap();
        assert_eq!(log.lock().unwrap().as_slice(), &[("b", 20 * MIB)]);
        assert_eq!(keep[1].1.used(), 0);
        // Pool: a 10, c 50, r 5 + 25 → 10 free. Asking 70 needs 60: nobody covers it, so the
        // largest (c, 50) spills first, then a (10) covers the rest.
        log.lock().unwrap().clear();
        let q = requester.allocate_page(70 * MIB).unwrap();
        assert_eq!(
            log.lock().unwrap().as_slice(),
            &[("c", 60 * MIB), ("a", 10 * MIB)]
        );
        drop((p, q));
        // Only the requester holds memory now: it is asked last, with what is missing.
        log.lock().unwrap().clear();
        let own = requester.allocate_page(100 * MIB);
        let log = log.lock().unwrap().clone();
        assert_eq!(log, vec![("r", 5 * MIB)], "{own:?}");
        assert!(own.is_ok());
    }

    #[test]
    fn unable_to_acquire_memory_names_requested_and_received_bytes() {
        let tmm = setup(8 * MIB, 8 * MIB, MIB);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (h, c) = holder(&tmm, "pinned", &log);
        // An unspillable consumer holds 6 MiB.
        let other = tmm.register("unspillable", Arc::new(Unspillable));
        let _held = other.allocate_page(6 * MIB).unwrap();
        let err = c.allocate_page(4 * MIB).unwrap_err();
        match &err {
            TaskMemoryError::UnableToAcquire {
                requested,
                received,
                usage,
            } => {
                assert_eq!((*requested, *received), (4 * MIB, 2 * MIB));
                assert!(usage.contains("Memory used in task 1"), "{usage}");
                assert!(
                    usage.contains("Acquired by unspillable (ON_HEAP): 6291456 bytes"),
                    "{usage}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.starts_with(
                "[UNABLE_TO_ACQUIRE_MEMORY] Unable to acquire 4194304 bytes of memory, got 2097152."
            ),
            "{text}"
        );
        // The refused page was given back.
        assert_eq!(c.used(), 0);
        assert!(h.pages.lock().unwrap().is_empty());
        assert_eq!(tmm.shared.manager.execution_memory_used(), 6 * MIB);
    }

    #[test]
    fn spill_io_errors_are_spill_out_of_memory() {
        struct Broken;
        impl MemoryConsumer for Broken {
            fn spill(&self, _: u64, _: ConsumerId) -> Result<u64, ConsumerSpillError> {
                Err(std::io::Error::other("No space left on device").into())
            }
        }
        let tmm = setup(4 * MIB, 4 * MIB, MIB);
        let broken = tmm.register("broken", Arc::new(Broken));
        let _p = broken.allocate_page(4 * MIB).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (_h, c) = holder(&tmm, "r", &log);
        let err = c.allocate_page(MIB).unwrap_err();
        assert_eq!(
            err.to_string(),
            "[SPILL_OUT_OF_MEMORY] Error while calling spill() on broken : No space left on \
             device SQLSTATE: 53200"
        );
        // The consumer's typed error is the source, not a copy of its text.
        match &err {
            TaskMemoryError::SpillFailed {
                consumer,
                source: ConsumerSpillError::Io(io),
            } => {
                assert_eq!(consumer, "broken");
                assert_eq!(io.to_string(), "No space left on device");
            }
            other => panic!("{other:?}"),
        }
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn leaks_are_reported_at_clean_up() {
        let tmm = setup(16 * MIB, 16 * MIB, MIB);
        let c = tmm.register("leaky", Arc::new(Unspillable));
        let page = c.allocate_page(2 * MIB).unwrap();
        assert_eq!(c.acquire_memory(1000).unwrap(), 1000);
        let leaked = tmm.clean_up_all_allocated_memory(false).unwrap();
        assert_eq!(leaked, 2 * MIB + 1000);
        assert_eq!(tmm.shared.manager.execution_memory_used(), 0);
        // The page outlived clean-up: dropping it returns its memory without a second release.
        drop(page);
        assert_eq!(tmm.shared.allocator.allocated_bytes(), 0);
        assert_eq!(tmm.shared.manager.execution_memory_used(), 0);

        let tmm = setup(16 * MIB, 16 * MIB, MIB);
        let c = tmm.register("leaky", Arc::new(Unspillable));
        let _page = c.allocate_page(MIB).unwrap();
        let err = tmm.clean_up_all_allocated_memory(true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Managed memory leak detected; size = 1048576 bytes, task 1"
        );
        // A clean task leaks nothing.
        let tmm = setup(16 * MIB, 16 * MIB, MIB);
        let c = tmm.register("tidy", Arc::new(Unspillable));
        drop(c.allocate_page(MIB).unwrap());
        assert_eq!(tmm.clean_up_all_allocated_memory(true).unwrap(), 0);
    }

    #[test]
    fn too_large_pages_and_a_full_page_table_are_errors() {
        let tmm = setup(64 * MIB, 64 * MIB, 1024);
        let c = tmm.register("many", Arc::new(Unspillable));
        let err = c.allocate_page(MAXIMUM_PAGE_SIZE_BYTES + 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cannot allocate a page of 17179869177 bytes."
        );
        let pages: Vec<Page> = (0..PAGE_TABLE_SIZE)
            .map(|_| c.allocate_array(1).unwrap())
            .collect();
        let err = c.allocate_array(1).unwrap_err();
        assert!(matches!(err, TaskMemoryError::PageTableFull), "{err}");
        // The refused request's memory went back.
        assert_eq!(c.used(), 8 * PAGE_TABLE_SIZE as u64);
        drop(pages);
        assert_eq!(c.used(), 0);
    }

    #[test]
    fn a_range_that_cannot_place_a_page_keeps_the_bytes_acquired_but_not_used() {
        // The pool grants 8 MiB but the range only has 3 MiB: Spark's allocator-OOM path.
        let tmm = setup(8 * MIB, 3 * MIB, MIB);
        let c = tmm.register("r", Arc::new(Unspillable));
        let p = c.allocate_page(2 * MIB).unwrap();
        let err = c.allocate_page(2 * MIB).unwrap_err();
        assert!(
            matches!(err, TaskMemoryError::UnableToAcquire { .. }),
            "{err}"
        );
        assert!(tmm.acquired_but_not_used() >= 2 * MIB);
        drop(p);
        assert_eq!(tmm.clean_up_all_allocated_memory(true).unwrap(), 0);
        assert_eq!(tmm.shared.manager.execution_memory_used(), 0);
    }
}
