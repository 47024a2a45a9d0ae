//! `UnifiedMemoryManager`: Spark's four pools (execution and storage, on- and off-heap) behind one lock.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use crossbeam::utils::CachePadded;

use super::event::{EventSink, MemoryEvent, emit};
use super::sync::{AtomicU64, AtomicUsize, Condvar, Mutex, MutexGuard};
use super::types::{MemoryMode, MemorySnapshot, PoolSizes, PoolSnapshot, TaskAttemptId, WaitStats};
use crate::ids::BlockId;

/// Spark's `MemoryStore.evictBlocksToFreeSpace`: drops cached blocks so storage can shrink.
///
/// # Contract (docs/spark-model.md §6.3)
/// - Called **with the manager's lock held** (as in Spark, where eviction runs inside
///   `memoryManager.synchronized`). It must not call back into the manager: the lock is not
///   re-entrant and the call would deadlock.
/// - Scan blocks of `mode` from least to most recently used, skipping blocks of the same RDD as
///   `block` (when `block` is an RDD block) and blocks being read, until the selection covers
///   `space` bytes. All-or-nothing: if it cannot, drop nothing and return 0; otherwise drop
///   every selected block and return their total size (which may exceed `space`).
/// - **Return the bytes dropped instead of releasing them.** In Spark the drop path calls
///   `releaseStorageMemory` re-entrantly; here the manager subtracts the returned bytes from
///   the storage pool's `used` itself, right after the call.
pub trait BlockEvictor: Send + Sync {
    /// Evict blocks of `mode` (never `block`'s own RDD) to free at least `space` bytes; return
    /// the bytes dropped (0 if `space` could not be reached).
    fn evict_blocks_to_free_space(
        &self,
        block: Option<&BlockId>,
        space: u64,
        mode: MemoryMode,
    ) -> u64;
}

/// Errors constructing a manager from pool sizes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// The storage region of a mode is larger than its unified region.
    #[error(
        "{mode} storage region ({storage_region_bytes} bytes) exceeds the unified region \
         ({unified_bytes} bytes)"
    )]
    StorageRegionExceedsUnified {
        /// Mode whose sizes are inconsistent.
        mode: MemoryMode,
        /// Requested storage region.
        storage_region_bytes: u64,
        /// Requested unified region.
        unified_bytes: u64,
    },
    /// Spark's `require(onHeapExecutionMemory > 0)` in `MemoryManager`.
    #[error(
        "onHeapExecutionMemory must be > 0 (unified {unified_bytes} bytes, storage region {storage_region_bytes} bytes)"
    )]
    NoOnHeapExecutionMemory {
        /// On-heap unified size.
        unified_bytes: u64,
        /// On-heap storage region.
        storage_region_bytes: u64,
    },
}

/// One task's entry in an execution pool's map (`memoryForTask`).
#[derive(Debug, Clone, Copy)]
struct TaskSlot {
    task: TaskAttemptId,
    /// Exact whenever the fast path is frozen (always, under the lock; see [`Locked`]).
    held_bytes: u64,
    /// Index of the task's [`FastSlot`], if one was free when it registered.
    fast: Option<usize>,
    /// While the fast path is open: `held_bytes + room` at opening (the slot's `limit`).
    limit_bytes: u64,
}

// ---------------------------------------------------------------------------------------------
// Fast path
//
// A lock-free path for the common case of docs/spark-model.md §3.2: a registered task asks for bytes that fit
// in free memory and keep it within 1/N, or releases bytes and stays registered, with nobody
// waiting and no event sink. Whenever the lock is released with no waiter and no sink, every
// registered task with a fast slot gets a *room*:
//
//     room = min(maxPoolSize / N − held, free / N, ROOM_MAX)     (floored at 0)
//
// so the rooms of all tasks add up to at most `free`. An acquire of `n <= room` is then exactly
// what one pass of Spark's loop grants (registered, fits in free memory, `held + n <= maxPool /
// N`: the whole request), and it is one compare-and-swap on the task's own word, `room -= n`.
// A release of `n` that leaves the task registered (`held − n > 0`, with `held = limit − room`)
// is `room += n`. N, the pool sizes and storage use change only under the lock, and every
// lock acquisition first *freezes* the path: it clears each word's `OPEN` bit (so every later
// CAS fails and falls back to the lock) and folds `held = limit − room` back into the map, so
// everything under the lock sees exact numbers and runs Spark's rules unchanged. Each opening
// bumps the word's generation, so a CAS prepared against an older opening (with its `limit`
// or task id) cannot succeed in a newer one.

/// Low 40 bits of a fast word: the room in bytes (capped: the fast path never needs more).
const ROOM_BITS: u32 = 40;
const ROOM_MAX: u64 = (1 << ROOM_BITS) - 1;
/// Bit 40: the fast path is open for this slot.
const OPEN: u64 = 1 << ROOM_BITS;
/// Bits 41..64: the generation of the opening (wraps; a CAS would have to stall across 2^23
/// openings of the same slot for a stale one to match).
const GEN_SHIFT: u32 = ROOM_BITS + 1;
/// No task in this slot.
const NO_TASK: u64 = u64::MAX;

/// Fast slots per mode: tasks beyond this many (an executor runs `spark.executor.cores`
/// tasks at once) take the locked path only.
#[cfg(not(loom))]
const FAST_SLOTS: usize = 64;
#[cfg(loom)]
const FAST_SLOTS: usize = 4;

/// One task's lock-free state, on its own cache line so that tasks on different cores never
/// share one.
struct FastSlot {
    /// The task using this slot (written under the lock, while frozen).
    task: AtomicU64,
    /// `generation << 41 | OPEN | room`.
    word: AtomicU64,
    /// `held + room` at the opening (written under the lock, while frozen).
    limit: AtomicU64,
}

/// The fast slots of one mode.
struct FastTable {
    slots: Box<[CachePadded<FastSlot>]>,
    /// Slots `0..used_slots` may hold a task (only grows).
    used_slots: AtomicUsize,
}

impl FastTable {
    fn new() -> FastTable {
        FastTable {
            slots: (0..FAST_SLOTS)
                .map(|_| {
                    CachePadded::new(FastSlot {
                        task: AtomicU64::new(NO_TASK),
                        word: AtomicU64::new(0),
                        limit: AtomicU64::new(0),
                    })
                })
                .collect(),
            used_slots: AtomicUsize::new(0),
        }
    }

    #[inline]
    fn find(&self, task: TaskAttemptId) -> Option<&FastSlot> {
        let used = self.used_slots.load(Acquire);
        self.slots[..used]
            .iter()
            .map(|s| &**s)
            .find(|s| s.task.load(Relaxed) == task)
    }

    /// `room -= n` if the slot is open for `task` and `n <= room`.
    #[inline]
    fn try_acquire(&self, n: u64, task: TaskAttemptId) -> bool {
        let Some(slot) = self.find(task) else {
            return false;
        };
        let mut w = slot.word.load(Acquire);
        loop {
            // The task id is read after the word: if the CAS below succeeds, no freeze came
            // in between, so the id is the one this opening was made for.
            if w & OPEN == 0 || n > w & ROOM_MAX || slot.task.load(Relaxed) != task {
                return false;
            }
            match slot.word.compare_exchange_weak(w, w - n, AcqRel, Acquire) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }

    /// `room += n` if the slot is open for `task` and the task keeps more than 0 bytes.
    #[inline]
    fn try_release(&self, n: u64, task: TaskAttemptId) -> bool {
        let Some(slot) = self.find(task) else {
            return false;
        };
        let mut w = slot.word.load(Acquire);
        loop {
            if w & OPEN == 0 || slot.task.load(Relaxed) != task {
                return false;
            }
            let limit = slot.limit.load(Relaxed);
            // held − n > 0  ⇔  room + n < limit.
            match (w & ROOM_MAX).checked_add(n) {
                Some(room) if room < limit && room <= ROOM_MAX => {}
                _ => return false,
            }
            match slot.word.compare_exchange_weak(w, w + n, AcqRel, Acquire) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }
}

/// The execution and storage pools of one mode, plus the constants they are sized from.
#[derive(Debug)]
struct ModePools {
    mode: MemoryMode,
    /// `maxHeapMemory` (M) or `maxOffHeapMemory` (O).
    unified_bytes: u64,
    /// `onHeapStorageRegionSize` / `offHeapStorageMemory`: execution cannot evict cached bytes below it.
    storage_region_bytes: u64,
    execution_pool_bytes: u64,
    /// Sum of `tasks[..].held_bytes`, kept alongside so `memoryUsed` is O(1).
    execution_used_bytes: u64,
    /// The map `taskAttemptId -> bytes` as a small vector: N is the executor's task slots
    /// (a few dozen at most), and a linear scan of 16-byte entries beats hashing here.
    tasks: Vec<TaskSlot>,
    storage_pool_bytes: u64,
    storage_used_bytes: u64,
}

impl ModePools {
    fn new(mode: MemoryMode, unified_bytes: u64, storage_region_bytes: u64) -> Self {
        ModePools {
            mode,
            unified_bytes,
            storage_region_bytes,
            execution_pool_bytes: unified_bytes - storage_region_bytes,
            execution_used_bytes: 0,
            tasks: Vec::with_capacity(16),
            storage_pool_bytes: storage_region_bytes,
            storage_used_bytes: 0,
        }
    }

    #[inline]
    fn check_invariants(&self) {
        debug_assert!(
            self.execution_pool_bytes + self.storage_pool_bytes == self.unified_bytes,
            "{} pools: execution {} + storage {} != unified {}",
            self.mode,
            self.execution_pool_bytes,
            self.storage_pool_bytes,
            self.unified_bytes
        );
        debug_assert!(
            self.execution_used_bytes <= self.execution_pool_bytes,
            "{} execution used {} > pool {}",
            self.mode,
            self.execution_used_bytes,
            self.execution_pool_bytes
        );
        debug_assert!(
            self.storage_used_bytes <= self.storage_pool_bytes,
            "{} storage used {} > pool {}",
            self.mode,
            self.storage_used_bytes,
            self.storage_pool_bytes
        );
    }

    #[inline]
    fn find(&self, task: TaskAttemptId) -> Option<usize> {
        self.tasks.iter().position(|s| s.task == task)
    }

    #[inline]
    fn execution_free(&self) -> u64 {
        self.execution_pool_bytes - self.execution_used_bytes
    }

    #[inline]
    fn storage_free(&self) -> u64 {
        self.storage_pool_bytes - self.storage_used_bytes
    }

    /// `computeMaxExecutionPoolSize`: the size execution could reach by evicting storage.
    #[inline]
    fn max_execution_pool_bytes(&self) -> u64 {
        self.unified_bytes - self.storage_used_bytes.min(self.storage_region_bytes)
    }

    /// `maxOnHeapStorageMemory` / `maxOffHeapStorageMemory` (§1.10).
    #[inline]
    fn max_storage_bytes(&self) -> u64 {
        self.unified_bytes - self.execution_used_bytes
    }

    /// `StorageMemoryPool.releaseMemory` (§4.4): over-release warns and clamps `used` to 0.
    fn release_storage(&mut self, bytes: u64, sink: &Option<EventSink>) {
        if bytes > self.storage_used_bytes {
            emit(
                sink,
                MemoryEvent::StorageOverRelease {
                    mode: self.mode,
                    requested_bytes: bytes,
                    used_bytes: self.storage_used_bytes,
                },
            );
            self.storage_used_bytes = 0;
        } else {
            self.storage_used_bytes -= bytes;
        }
    }

    /// Ask the evictor to drop `space` bytes of this mode's blocks and account the drop.
    fn evict(
        &mut self,
        block: Option<&BlockId>,
        space: u64,
        evictor: Option<&dyn BlockEvictor>,
        sink: &Option<EventSink>,
    ) -> u64 {
        let Some(evictor) = evictor else { return 0 };
        let dropped = evictor.evict_blocks_to_free_space(block, space, self.mode);
        if dropped > 0 {
            // Spark's drop path calls releaseStorageMemory(size) for each dropped block.
            self.release_storage(dropped, sink);
        }
        dropped
    }

    /// `maybeGrowExecutionPool` (§3.4) with `StorageMemoryPool.freeSpaceToShrinkPool` (§4.2).
    fn maybe_grow_execution_pool(
        &mut self,
        extra_bytes: u64,
        evictor: Option<&dyn BlockEvictor>,
        sink: &Option<EventSink>,
    ) {
        let reclaimable = self.storage_free().max(
            self.storage_pool_bytes
                .saturating_sub(self.storage_region_bytes),
        );
        if reclaimable == 0 {
            return;
        }
        let space = extra_bytes.min(reclaimable);
        let from_free = space.min(self.storage_free());
        let rest = space - from_free;
        let mut shrink = from_free;
        if rest > 0 {
            shrink += self.evict(None, rest, evictor, sink);
            // A sane evictor cannot push this past `pool − used`; a misreporting one must not
            // break `decrementPoolSize`'s requirement `poolSize − d >= memoryUsed`.
            shrink = shrink.min(self.storage_free());
        }
        self.storage_pool_bytes -= shrink;
        self.execution_pool_bytes += shrink;
    }
}

/// Everything guarded by the manager's single lock (Spark synchronizes on the manager).
struct State {
    pools: [ModePools; 2],
    /// Threads blocked in the condvar. Only modified under the lock, so a releaser that sees 0
    /// can skip `notify_all` (a futex syscall) without losing a wake-up.
    waiters: usize,
    evictor: Option<std::sync::Arc<dyn BlockEvictor>>,
    sink: Option<EventSink>,
    /// Per-task fair-share wait statistics; touched only on the blocking path.
    wait_stats: Vec<(TaskAttemptId, WaitStats)>,
    /// The fast path is open: the fast words, not `tasks[..].held_bytes`, hold the truth.
    fast_open: bool,
    /// Releases that woke two or more blocked tasks at once: which of them takes the memory
    /// first is a matter of timing (free-running) or of the schedule's seed.
    contended_wakeups: u64,
}

impl State {
    /// Closes the fast path and folds each task's `held = limit − room` back into the map.
    fn freeze(&mut self, fast: &[FastTable; 2]) {
        if !self.fast_open {
            return;
        }
        self.fast_open = false;
        for (pools, table) in self.pools.iter_mut().zip(fast) {
            for ts in &mut pools.tasks {
                let Some(i) = ts.fast else { continue };
                let w = table.slots[i].word.fetch_and(!OPEN, AcqRel);
                debug_assert!(w & OPEN != 0, "TID {} fast slot {i} was not open", ts.task);
                let held = ts.limit_bytes - (w & ROOM_MAX);
                pools.execution_used_bytes = pools.execution_used_bytes - ts.held_bytes + held;
                ts.held_bytes = held;
            }
            pools.check_invariants();
        }
    }

    /// Opens the fast path, unless someone waits (releases must wake them) or a sink wants
    /// to see every grant. Rooms add up to at most the free memory of each pool.
    fn open(&mut self, fast: &[FastTable; 2]) {
        if self.fast_open || self.waiters > 0 || self.sink.is_some() {
            return;
        }
        for (pools, table) in self.pools.iter_mut().zip(fast) {
            let n = pools.tasks.len() as u64;
            if n == 0 {
                continue;
            }
            let max_per_task = pools.max_execution_pool_bytes() / n;
            let share = pools.execution_free() / n;
            for ts in &mut pools.tasks {
                let Some(i) = ts.fast else { continue };
                let room = max_per_task
                    .saturating_sub(ts.held_bytes)
                    .min(share)
                    .min(ROOM_MAX);
                ts.limit_bytes = ts.held_bytes + room;
                let slot = &table.slots[i];
                slot.limit.store(ts.limit_bytes, Relaxed);
                let generation = (slot.word.load(Relaxed) >> GEN_SHIFT).wrapping_add(1);
                slot.word
                    .store((generation << GEN_SHIFT) | OPEN | room, Release);
            }
        }
        self.fast_open = true;
    }
}

/// The manager's lock, with the fast path frozen while it is held and reopened on release.
struct Locked<'a> {
    guard: Option<MutexGuard<'a, State>>,
    fast: &'a [FastTable; 2],
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.guard.as_ref().expect("locked")
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_mut().expect("locked")
    }
}

impl Locked<'_> {
    /// `cond.wait` on the inner guard (the fast path stays closed: this thread is a waiter).
    fn wait(&mut self, cond: &Condvar) {
        let guard = self.guard.take().expect("locked");
        let guard = cond
            .wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.guard = Some(guard);
    }

    /// Reopens the fast path and unlocks (also what dropping does).
    fn unlock(mut self) {
        self.reopen();
    }

    fn reopen(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.open(self.fast);
        }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.reopen();
    }
}

/// Spark's `UnifiedMemoryManager`: execution and storage share a unified region per mode, with a
/// soft boundary at the storage region. See the [module docs](super) for the rules.
///
/// All methods take `&self`; share it with `Arc`.
pub struct UnifiedMemoryManager {
    sizes: PoolSizes,
    state: Mutex<State>,
    /// Tasks blocked below their 1/2N share wait here; every execution release, task arrival
    /// and task exit wakes them all (Spark's `lock.notifyAll()`).
    cond: Condvar,
    /// The lock-free fast path of each mode (indexed by `MemoryMode::index`).
    fast: [FastTable; 2],
}

impl std::fmt::Debug for UnifiedMemoryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnifiedMemoryManager")
            .field("sizes", &self.sizes)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl UnifiedMemoryManager {
    /// A manager with the given pool sizes and no evictor (nothing can be evicted until
    /// [`set_evictor`](Self::set_evictor) is called).
    ///
    /// # Panics
    /// If the sizes are inconsistent (see [`try_new`](Self::try_new)): that is a layout bug.
    pub fn new(sizes: PoolSizes) -> Self {
        match Self::try_new(sizes) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// A manager with the given pool sizes, or the reason they are inconsistent.
    pub fn try_new(sizes: PoolSizes) -> Result<Self, MemoryError> {
        for mode in MemoryMode::ALL {
            let (unified_bytes, storage_region_bytes) = sizes.of(mode);
            if storage_region_bytes > unified_bytes {
                return Err(MemoryError::StorageRegionExceedsUnified {
                    mode,
                    storage_region_bytes,
                    unified_bytes,
                });
            }
        }
        if sizes.on_heap_unified == sizes.on_heap_storage_region {
            return Err(MemoryError::NoOnHeapExecutionMemory {
                unified_bytes: sizes.on_heap_unified,
                storage_region_bytes: sizes.on_heap_storage_region,
            });
        }
        let pools = MemoryMode::ALL.map(|mode| {
            let (unified, region) = sizes.of(mode);
            ModePools::new(mode, unified, region)
        });
        Ok(UnifiedMemoryManager {
            sizes,
            state: Mutex::new(State {
                pools,
                waiters: 0,
                evictor: None,
                sink: None,
                wait_stats: Vec::new(),
                fast_open: false,
                contended_wakeups: 0,
            }),
            cond: Condvar::new(),
            fast: [FastTable::new(), FastTable::new()],
        })
    }

    /// The sizes this manager was built with.
    pub fn sizes(&self) -> PoolSizes {
        self.sizes
    }

    /// Takes the lock and freezes the fast path; dropping the result reopens it and unlocks.
    #[inline]
    fn lock(&self) -> Locked<'_> {
        // A panic under the lock (e.g. in an evictor or sink) leaves consistent pool numbers:
        // every mutation is a few arithmetic steps between calls out, so keep going.
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.freeze(&self.fast);
        Locked {
            guard: Some(guard),
            fast: &self.fast,
        }
    }

    /// Spark's `setMemoryStore`: install the block store that evicts cached blocks.
    pub fn set_evictor(&self, evictor: std::sync::Arc<dyn BlockEvictor>) {
        self.lock().evictor = Some(evictor);
    }

    /// Install a receiver for log lines and grant observations (see [`MemoryEvent`]).
    pub fn set_event_sink(&self, sink: EventSink) {
        self.lock().sink = Some(sink);
    }

    /// Spark's `acquireExecutionMemory` (§3.2–§3.4): try to acquire up to `num_bytes` of
    /// execution memory for `task`; return the bytes granted (possibly 0 or partial).
    ///
    /// Blocks while the grant would leave the task below `poolSize / 2N`. Never grants beyond
    /// `maxPoolSize / N`. Grows the pool by taking free storage memory and evicting cached
    /// blocks beyond the storage region, re-evaluated on every pass.
    ///
    /// `num_bytes == 0` (an assertion error in Spark) returns 0 at once, without registering
    /// the task, and emits [`MemoryEvent::InvalidExecutionRequest`].
    #[inline]
    pub fn acquire_execution_memory(
        &self,
        num_bytes: u64,
        task: TaskAttemptId,
        mode: MemoryMode,
    ) -> u64 {
        crate::interleave::turn();
        // Lock-free fast path (see "Fast path" above): the task's room covers the request.
        if num_bytes != 0 && self.fast[mode.index()].try_acquire(num_bytes, task) {
            return num_bytes;
        }
        self.acquire_execution_locked(num_bytes, task, mode)
    }

    /// [`acquire_execution_memory`](Self::acquire_execution_memory) under the lock.
    #[inline(never)]
    fn acquire_execution_locked(
        &self,
        num_bytes: u64,
        task: TaskAttemptId,
        mode: MemoryMode,
    ) -> u64 {
        let mut guard = self.lock();
        // Locked fast path, exactly equivalent to one pass of the general loop: the task is already
        // registered (so no wake-up is due), the request fits in free memory (so
        // `maybeGrowPool` is a no-op), and `cur + num_bytes <= maxPool / N`, tested as
        // `(cur + num_bytes) × N <= maxPool` without dividing: the whole request is granted.
        if num_bytes != 0 && guard.sink.is_none() {
            let pools = &mut guard.pools[mode.index()];
            if let Some(slot) = pools.find(task)
                && num_bytes <= pools.execution_free()
                && let Some(after) = pools.tasks[slot].held_bytes.checked_add(num_bytes)
                && after
                    .checked_mul(pools.tasks.len() as u64)
                    .is_some_and(|x| x <= pools.max_execution_pool_bytes())
            {
                debug_assert!(
                    after <= pools.max_execution_pool_bytes() / pools.tasks.len() as u64,
                    "TID {task} fast-path grant of {num_bytes} to hold {after} > 1/N"
                );
                pools.tasks[slot].held_bytes = after;
                pools.execution_used_bytes += num_bytes;
                return num_bytes;
            }
        }
        self.acquire_execution_slow(guard, num_bytes, task, mode)
    }

    /// The general loop of `ExecutionMemoryPool.acquireMemory`: registration, growing the pool,
    /// partial grants, blocking. Out of line so the fast path stays small.
    #[cold]
    #[inline(never)]
    fn acquire_execution_slow<'a>(
        &'a self,
        mut guard: Locked<'a>,
        num_bytes: u64,
        task: TaskAttemptId,
        mode: MemoryMode,
    ) -> u64 {
        if num_bytes == 0 {
            emit(
                &guard.sink,
                MemoryEvent::InvalidExecutionRequest { task, mode },
            );
            return 0;
        }
        let mut waited: Option<Duration> = None;
        loop {
            let st = &mut *guard;
            let pools = &mut st.pools[mode.index()];
            pools.check_invariants();
            // Registration runs on every pass: a release to 0 (or releaseAll from another
            // thread) may have removed the entry while this task waited.
            let slot = match pools.find(task) {
                Some(slot) => slot,
                None => {
                    let table = &self.fast[mode.index()];
                    let fast = (task != NO_TASK)
                        .then(|| {
                            table
                                .slots
                                .iter()
                                .position(|s| s.task.load(Relaxed) == NO_TASK)
                        })
                        .flatten();
                    if let Some(i) = fast {
                        // Frozen: the word is closed; it opens with a new generation.
                        table.slots[i].task.store(task, Relaxed);
                        table.used_slots.fetch_max(i + 1, Release);
                    }
                    pools.tasks.push(TaskSlot {
                        task,
                        held_bytes: 0,
                        fast,
                        limit_bytes: 0,
                    });
                    if st.waiters > 0 {
                        // N changed: waiters must recompute their 1/2N and 1/N.
                        crate::interleave::wake_blocked();
                        self.cond.notify_all();
                    }
                    pools.tasks.len() - 1
                }
            };
            let cur = pools.tasks[slot].held_bytes;
            let n = pools.tasks.len() as u64;

            // Whole request fits (same test as the fast path; here after registration or a
            // wake-up).
            if num_bytes <= pools.execution_free()
                && st.sink.is_none()
                && let Some(after) = cur.checked_add(num_bytes)
                && after
                    .checked_mul(n)
                    .is_some_and(|x| x <= pools.max_execution_pool_bytes())
            {
                debug_assert!(
                    after <= pools.max_execution_pool_bytes() / n,
                    "TID {task} fast-path grant of {num_bytes} to hold {after} > 1/N (N {n})"
                );
                pools.tasks[slot].held_bytes = after;
                pools.execution_used_bytes += num_bytes;
                if let Some(w) = waited {
                    record_wait(&mut st.wait_stats, task, w);
                }
                return num_bytes;
            }

            // (a) reclaim from storage on every pass: another task may have cached meanwhile.
            let free = pools.execution_free();
            if num_bytes > free {
                pools.maybe_grow_execution_pool(num_bytes - free, st.evictor.as_deref(), &st.sink);
            }
            // (b) `computeMaxPoolSize` after growing; min uses the *current* pool size.
            let max_pool = pools.max_execution_pool_bytes();
            let max_per_task = max_pool / n;
            let min_per_task = pools.execution_pool_bytes / (2 * n);
            // (c)
            let max_to_grant = num_bytes.min(max_per_task.saturating_sub(cur));
            let to_grant = max_to_grant.min(pools.execution_free());
            // (d)
            if to_grant < num_bytes && cur + to_grant < min_per_task {
                emit(&st.sink, MemoryEvent::ExecutionWaiting { task, mode });
                st.waiters += 1;
                let started = Instant::now();
                if crate::interleave::is_scheduled() {
                    // A deterministic schedule: give up the turn, holding no lock, until a
                    // release wakes this task and the seed chooses it again.
                    drop(guard);
                    crate::interleave::block();
                    guard = self.lock();
                } else {
                    guard.wait(&self.cond);
                }
                debug_assert!(!guard.fast_open, "fast path open while a task waits");
                guard.waiters -= 1;
                *waited.get_or_insert(Duration::ZERO) += started.elapsed();
                continue;
            }
            let held = cur + to_grant;
            pools.tasks[slot].held_bytes = held;
            pools.execution_used_bytes += to_grant;
            debug_assert!(
                to_grant == 0 || held <= max_per_task,
                "TID {task} granted {to_grant} to hold {held} > 1/N = {max_per_task} \
                 (max pool {max_pool}, N {n})"
            );
            pools.check_invariants();
            if st.sink.is_some() {
                let event = MemoryEvent::ExecutionGranted {
                    task,
                    mode,
                    requested_bytes: num_bytes,
                    granted_bytes: to_grant,
                    held_bytes: held,
                    active_tasks: pools.tasks.len(),
                    execution_pool_bytes: pools.execution_pool_bytes,
                    storage_used_bytes: pools.storage_used_bytes,
                    max_per_task_bytes: max_per_task,
                    min_per_task_bytes: min_per_task,
                };
                emit(&st.sink, event);
            }
            if let Some(w) = waited {
                record_wait(&mut st.wait_stats, task, w);
            }
            return to_grant;
        }
    }

    /// Spark's `releaseExecutionMemory` (§3.5): release `num_bytes` of `task`'s execution
    /// memory. More than held warns and releases the holding; a holding that reaches 0 removes
    /// the task from the pool (N drops). Wakes all waiters.
    #[inline]
    pub fn release_execution_memory(&self, num_bytes: u64, task: TaskAttemptId, mode: MemoryMode) {
        crate::interleave::turn();
        // Lock-free fast path: the task stays registered and nobody waits (the path is closed
        // while anyone does), so there is no one to wake.
        if self.fast[mode.index()].try_release(num_bytes, task) {
            return;
        }
        self.release_execution_locked(num_bytes, task, mode);
    }

    /// [`release_execution_memory`](Self::release_execution_memory) under the lock.
    #[inline(never)]
    fn release_execution_locked(&self, num_bytes: u64, task: TaskAttemptId, mode: MemoryMode) {
        let table = &self.fast[mode.index()];
        let mut guard = self.lock();
        let st = &mut *guard;
        let pools = &mut st.pools[mode.index()];
        match pools.find(task) {
            // Common case: a partial release that leaves the task registered.
            Some(slot) if pools.tasks[slot].held_bytes > num_bytes => {
                pools.tasks[slot].held_bytes -= num_bytes;
                pools.execution_used_bytes -= num_bytes;
            }
            _ => release_execution(pools, table, num_bytes, task, &st.sink),
        }
        let wake = wake_scheduled(st);
        guard.unlock();
        if wake {
            self.cond.notify_all();
        }
    }

    /// Spark's `releaseAllExecutionMemoryForTask`: release the task's whole holding in both
    /// modes, mark it inactive, wake waiters; return the bytes freed.
    pub fn release_all_execution_memory_for_task(&self, task: TaskAttemptId) -> u64 {
        crate::interleave::turn();
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut freed = 0;
        for (pools, table) in st.pools.iter_mut().zip(&self.fast) {
            let held = pools.find(task).map_or(0, |s| pools.tasks[s].held_bytes);
            release_execution(pools, table, held, task, &st.sink);
            freed += held;
        }
        let wake = wake_scheduled(st);
        guard.unlock();
        if wake {
            self.cond.notify_all();
        }
        freed
    }

    /// Spark's `acquireStorageMemory` (§4.1): reserve `num_bytes` of storage memory for
    /// `block`, borrowing free execution memory and evicting other blocks if needed.
    ///
    /// Refuses (false, [`MemoryEvent::WillNotStore`]) when `num_bytes` exceeds the max storage
    /// memory of the mode. Borrowed execution memory stays with storage even if the acquire
    /// then fails. Never evicts execution memory.
    pub fn acquire_storage_memory(
        &self,
        block: &BlockId,
        num_bytes: u64,
        mode: MemoryMode,
    ) -> bool {
        crate::interleave::turn();
        let mut guard = self.lock();
        Self::acquire_storage_locked(&mut guard, block, num_bytes, mode)
    }

    /// `MemoryStore`'s transfer at the end of a successful unroll: release `unroll_bytes` of
    /// unroll memory and acquire exactly `size` bytes of storage for `block`, atomically (Spark
    /// does both inside `memoryManager.synchronized`). Returns whether the acquire succeeded.
    pub fn transfer_unroll_to_storage(
        &self,
        block: &BlockId,
        unroll_bytes: u64,
        size: u64,
        mode: MemoryMode,
    ) -> bool {
        crate::interleave::turn();
        let mut guard = self.lock();
        let st = &mut *guard;
        st.pools[mode.index()].release_storage(unroll_bytes, &st.sink);
        // No wake-up: Spark notifies execution waiters only from the execution pool.
        Self::acquire_storage_locked(st, block, size, mode)
    }

    fn acquire_storage_locked(
        st: &mut State,
        block: &BlockId,
        num_bytes: u64,
        mode: MemoryMode,
    ) -> bool {
        let pools = &mut st.pools[mode.index()];
        pools.check_invariants();
        let limit = pools.max_storage_bytes();
        if num_bytes > limit {
            emit(
                &st.sink,
                MemoryEvent::WillNotStore {
                    block: block.clone(),
                    mode,
                    requested_bytes: num_bytes,
                    limit_bytes: limit,
                },
            );
            return false;
        }
        if num_bytes > pools.storage_free() {
            let borrow = pools.execution_free().min(num_bytes - pools.storage_free());
            pools.execution_pool_bytes -= borrow;
            pools.storage_pool_bytes += borrow;
        }
        // StorageMemoryPool.acquireMemory
        let to_free = num_bytes.saturating_sub(pools.storage_free());
        if to_free > 0 {
            pools.evict(Some(block), to_free, st.evictor.as_deref(), &st.sink);
        }
        let enough = num_bytes <= pools.storage_free();
        if enough {
            pools.storage_used_bytes += num_bytes;
        }
        pools.check_invariants();
        enough
    }

    /// Spark's `acquireUnrollMemory`: the same path as [`acquire_storage_memory`](Self::acquire_storage_memory).
    pub fn acquire_unroll_memory(&self, block: &BlockId, num_bytes: u64, mode: MemoryMode) -> bool {
        self.acquire_storage_memory(block, num_bytes, mode)
    }

    /// `memoryManager.synchronized { memoryManager.notifyAll() }` at the end of Spark's
    /// `Task.run` (docs/spark-model.md §6.5e): every task blocked for execution memory re-checks.
    pub fn notify_all_waiters(&self) {
        let mut guard = self.lock();
        let wake = wake_scheduled(&mut guard);
        guard.unlock();
        if wake {
            self.cond.notify_all();
        }
    }

    /// Spark's `releaseStorageMemory` (§4.4): more than used warns and sets used to 0.
    ///
    /// Wakes nobody, as in Spark (`StorageMemoryPool` never notifies the execution pool's
    /// waiters): a task blocked for its share re-checks, and may then grow its pool into the
    /// freed bytes, when an execution release or a task's arrival or exit wakes it.
    pub fn release_storage_memory(&self, num_bytes: u64, mode: MemoryMode) {
        crate::interleave::turn();
        let mut guard = self.lock();
        let st = &mut *guard;
        st.pools[mode.index()].release_storage(num_bytes, &st.sink);
    }

    /// Spark's `releaseUnrollMemory`: same as [`release_storage_memory`](Self::release_storage_memory).
    pub fn release_unroll_memory(&self, num_bytes: u64, mode: MemoryMode) {
        self.release_storage_memory(num_bytes, mode);
    }

    /// Spark's `releaseAllStorageMemory`: storage `used` = 0 in both modes (wakes nobody, as
    /// [`release_storage_memory`](Self::release_storage_memory)).
    pub fn release_all_storage_memory(&self) {
        crate::interleave::turn();
        let mut guard = self.lock();
        for pools in &mut guard.pools {
            pools.storage_used_bytes = 0;
        }
    }

    /// Spark's `maxOnHeapStorageMemory` (§1.10): `M − on-heap execution used`.
    pub fn max_on_heap_storage_memory(&self) -> u64 {
        self.lock().pools[MemoryMode::OnHeap.index()].max_storage_bytes()
    }

    /// Spark's `maxOffHeapStorageMemory` (§1.10): `O − off-heap execution used`.
    pub fn max_off_heap_storage_memory(&self) -> u64 {
        self.lock().pools[MemoryMode::OffHeap.index()].max_storage_bytes()
    }

    /// Spark's `executionMemoryUsed`: both modes.
    pub fn execution_memory_used(&self) -> u64 {
        self.lock()
            .pools
            .iter()
            .map(|p| p.execution_used_bytes)
            .sum()
    }

    /// Spark's `storageMemoryUsed`: both modes.
    pub fn storage_memory_used(&self) -> u64 {
        self.lock().pools.iter().map(|p| p.storage_used_bytes).sum()
    }

    /// Spark's `getExecutionMemoryUsageForTask`: the task's holding in both modes.
    pub fn execution_memory_used_by(&self, task: TaskAttemptId) -> u64 {
        let guard = self.lock();
        guard
            .pools
            .iter()
            .map(|p| p.find(task).map_or(0, |s| p.tasks[s].held_bytes))
            .sum()
    }

    /// The task's holding in one mode.
    pub fn execution_memory_used_by_in(&self, task: TaskAttemptId, mode: MemoryMode) -> u64 {
        let guard = self.lock();
        let p = &guard.pools[mode.index()];
        p.find(task).map_or(0, |s| p.tasks[s].held_bytes)
    }

    /// How often and how long `task`'s execution acquires blocked for their fair share.
    pub fn task_wait_stats(&self, task: TaskAttemptId) -> WaitStats {
        let guard = self.lock();
        guard
            .wait_stats
            .iter()
            .find(|(t, _)| *t == task)
            .map_or_else(WaitStats::default, |(_, s)| *s)
    }

    /// Releases so far that woke two or more tasks blocked for execution memory at once (the
    /// outcome can then depend on which of them runs first).
    pub fn contended_wakeups(&self) -> u64 {
        self.lock().contended_wakeups
    }

    /// Like [`task_wait_stats`](Self::task_wait_stats), and forget the task (call at task end).
    pub fn take_task_wait_stats(&self, task: TaskAttemptId) -> WaitStats {
        let mut guard = self.lock();
        match guard.wait_stats.iter().position(|(t, _)| *t == task) {
            Some(i) => guard.wait_stats.swap_remove(i).1,
            None => WaitStats::default(),
        }
    }

    /// All four pools and the task counts, read under one lock acquisition.
    pub fn snapshot(&self) -> MemorySnapshot {
        let guard = self.lock();
        let snap = |p: &ModePools| PoolSnapshot {
            execution_pool_bytes: p.execution_pool_bytes,
            execution_used_bytes: p.execution_used_bytes,
            storage_pool_bytes: p.storage_pool_bytes,
            storage_used_bytes: p.storage_used_bytes,
            active_tasks: p.tasks.len(),
        };
        MemorySnapshot {
            on_heap: snap(&guard.pools[0]),
            off_heap: snap(&guard.pools[1]),
            waiting_tasks: guard.waiters,
        }
    }
}

/// `ExecutionMemoryPool.releaseMemory` (§3.5), without the wake-up (the caller does it after
/// unlocking).
#[cold]
fn release_execution(
    pools: &mut ModePools,
    table: &FastTable,
    num_bytes: u64,
    task: TaskAttemptId,
    sink: &Option<EventSink>,
) {
    let slot = pools.find(task);
    let cur = slot.map_or(0, |s| pools.tasks[s].held_bytes);
    let to_free = if cur < num_bytes {
        emit(
            sink,
            MemoryEvent::ExecutionOverRelease {
                task,
                mode: pools.mode,
                requested_bytes: num_bytes,
                held_bytes: cur,
            },
        );
        cur
    } else {
        num_bytes
    };
    if let Some(s) = slot {
        let held = cur - to_free;
        pools.execution_used_bytes -= to_free;
        if held == 0 {
            if let Some(i) = pools.tasks[s].fast {
                // Frozen: the word is closed; the slot is free for the next task.
                table.slots[i].task.store(NO_TASK, Relaxed);
            }
            pools.tasks.swap_remove(s);
        } else {
            pools.tasks[s].held_bytes = held;
        }
    }
    pools.check_invariants();
}

/// Whether tasks wait for execution memory (the caller then wakes them); under a deterministic
/// schedule (`crate::interleave`) they are also made ready to be chosen again. Called under the
/// lock, by the thread that holds the schedule's turn.
fn wake_scheduled(st: &mut State) -> bool {
    if st.waiters > 0 {
        if st.waiters > 1 {
            st.contended_wakeups += 1;
        }
        crate::interleave::wake_blocked();
        return true;
    }
    false
}

fn record_wait(stats: &mut Vec<(TaskAttemptId, WaitStats)>, task: TaskAttemptId, waited: Duration) {
    let entry = match stats.iter().position(|(t, _)| *t == task) {
        Some(i) => &mut stats[i].1,
        None => {
            stats.push((task, WaitStats::default()));
            &mut stats.last_mut().expect("just pushed").1
        }
    };
    entry.waits += 1;
    entry.waited += waited;
}
