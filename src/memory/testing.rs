//! Test doubles for the memory manager: a fake LRU block store that evicts, and an event recorder.
//!
//! Public (not `cfg(test)`) so integration tests and other modules' tests can use them.

use std::sync::{Arc, Mutex, PoisonError};

use super::event::{EventSink, MemoryEvent};
use super::manager::{BlockEvictor, UnifiedMemoryManager};
use super::types::MemoryMode;
use crate::ids::BlockId;

/// One cached block in the fake store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeBlock {
    /// Block id.
    pub id: BlockId,
    /// Size accounted in the storage pool.
    pub size_bytes: u64,
    /// Pool it is accounted in.
    pub mode: MemoryMode,
    /// A reader holds it: eviction skips it (Spark skips blocks whose write lock is taken).
    pub pinned: bool,
}

#[derive(Debug, Default)]
struct FakeState {
    /// Least recently used first.
    lru: Vec<FakeBlock>,
    /// Every block dropped by eviction, in order.
    evicted: Vec<BlockId>,
    /// Every eviction request: (exclude, space, mode, bytes returned).
    requests: Vec<(Option<BlockId>, u64, MemoryMode, u64)>,
}

/// A `MemoryStore` stand-in: an access-ordered list of `(block, size, mode)` that evicts as
/// docs/spark-model.md §6.3 says (LRU first, same mode, not the requesting block's RDD, not pinned,
/// all-or-nothing).
///
/// Lock order: the manager calls [`BlockEvictor::evict_blocks_to_free_space`] with its lock
/// held, which then takes this store's lock; the helpers here take the manager's lock first
/// and this store's lock after it returns, never the other way round.
#[derive(Debug, Default)]
pub struct FakeBlockStore {
    state: Mutex<FakeState>,
}

impl FakeBlockStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Acquire storage memory for `block` from `mm` and, on success, insert it as most recently
    /// used. Returns whether it was cached.
    pub fn cache(
        &self,
        mm: &UnifiedMemoryManager,
        block: BlockId,
        size_bytes: u64,
        mode: MemoryMode,
    ) -> bool {
        if !mm.acquire_storage_memory(&block, size_bytes, mode) {
            return false;
        }
        self.insert(block, size_bytes, mode);
        true
    }

    /// Insert a block whose memory the caller already acquired.
    pub fn insert(&self, id: BlockId, size_bytes: u64, mode: MemoryMode) {
        self.lock().lru.push(FakeBlock {
            id,
            size_bytes,
            mode,
            pinned: false,
        });
    }

    /// Remove a block (not by eviction) and release its memory in `mm`; returns its size.
    pub fn remove(&self, mm: &UnifiedMemoryManager, id: &BlockId) -> Option<u64> {
        let block = {
            let mut st = self.lock();
            let i = st.lru.iter().position(|b| &b.id == id)?;
            st.lru.remove(i)
        };
        mm.release_storage_memory(block.size_bytes, block.mode);
        Some(block.size_bytes)
    }

    /// A read: move the block to most recently used.
    pub fn touch(&self, id: &BlockId) {
        let mut st = self.lock();
        if let Some(i) = st.lru.iter().position(|b| &b.id == id) {
            let b = st.lru.remove(i);
            st.lru.push(b);
        }
    }

    /// Pin or unpin a block (a pinned block is being read and cannot be evicted).
    pub fn set_pinned(&self, id: &BlockId, pinned: bool) {
        if let Some(b) = self.lock().lru.iter_mut().find(|b| &b.id == id) {
            b.pinned = pinned;
        }
    }

    /// Cached blocks, least recently used first.
    pub fn blocks(&self) -> Vec<FakeBlock> {
        self.lock().lru.clone()
    }

    /// Whether `id` is cached.
    pub fn contains(&self, id: &BlockId) -> bool {
        self.lock().lru.iter().any(|b| &b.id == id)
    }

    /// Bytes cached in `mode`.
    pub fn bytes(&self, mode: MemoryMode) -> u64 {
        self.lock()
            .lru
            .iter()
            .filter(|b| b.mode == mode)
            .map(|b| b.size_bytes)
            .sum()
    }

    /// Blocks dropped by eviction so far, in order.
    pub fn evicted(&self) -> Vec<BlockId> {
        self.lock().evicted.clone()
    }

    /// Eviction requests so far: `(exclude, space, mode, bytes dropped)`.
    pub fn eviction_requests(&self) -> Vec<(Option<BlockId>, u64, MemoryMode, u64)> {
        self.lock().requests.clone()
    }
}

impl BlockEvictor for FakeBlockStore {
    fn evict_blocks_to_free_space(
        &self,
        block: Option<&BlockId>,
        space: u64,
        mode: MemoryMode,
    ) -> u64 {
        let mut st = self.lock();
        let rdd_to_add = block.and_then(BlockId::rdd_id);
        let mut selected = Vec::new();
        let mut freed = 0u64;
        for (i, b) in st.lru.iter().enumerate() {
            if freed >= space {
                break;
            }
            let evictable = b.mode == mode
                && !b.pinned
                && (rdd_to_add.is_none() || rdd_to_add != b.id.rdd_id());
            if evictable {
                selected.push(i);
                freed += b.size_bytes;
            }
        }
        let dropped = if freed >= space {
            // Remove back to front so earlier indices stay valid; record in LRU order.
            let mut dropped_ids: Vec<BlockId> = selected
                .iter()
                .rev()
                .map(|&i| st.lru.remove(i).id)
                .collect();
            dropped_ids.reverse();
            st.evicted.extend(dropped_ids);
            freed
        } else {
            0
        };
        st.requests.push((block.cloned(), space, mode, dropped));
        dropped
    }
}

/// Records every [`MemoryEvent`] the manager emits.
#[derive(Debug, Default, Clone)]
pub struct EventLog {
    events: Arc<Mutex<Vec<MemoryEvent>>>,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink appending to this log, for [`UnifiedMemoryManager::set_event_sink`].
    pub fn sink(&self) -> EventSink {
        let events = Arc::clone(&self.events);
        Arc::new(move |e: &MemoryEvent| {
            events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(e.clone());
        })
    }

    /// Install this log as `mm`'s sink and return it.
    pub fn attach(mm: &UnifiedMemoryManager) -> Self {
        let log = Self::new();
        mm.set_event_sink(log.sink());
        log
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<MemoryEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The `Display` text of the warnings recorded so far.
    pub fn warnings(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e.is_warning())
            .map(ToString::to_string)
            .collect()
    }

    /// The `Display` text of every event except grants.
    pub fn messages(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| !matches!(e, MemoryEvent::ExecutionGranted { .. }))
            .map(ToString::to_string)
            .collect()
    }
}
