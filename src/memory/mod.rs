//! Spark's unified memory manager: execution and storage pools, fair share, task memory.
//!
//! This module mirrors `org.apache.spark.memory` (Spark 4.x): `MemoryPool`,
//! `ExecutionMemoryPool`, `StorageMemoryPool`, `MemoryManager` and `UnifiedMemoryManager`,
//! merged into one type, [`UnifiedMemoryManager`]. It only does accounting: it never touches a
//! raw pointer and never allocates the bytes it grants.
//!
//! # Pools
//!
//! Each [`MemoryMode`] has a unified region (`M` on-heap, `O` off-heap) split into an
//! execution pool and a storage pool, initially `unified − storage_region` and
//! `storage_region` ([`PoolSizes`]). The boundary moves; `execution pool + storage pool ==
//! unified` always holds (checked by `debug_assert!`s that print the numbers), as does
//! `used <= pool size` for every pool. The two modes never borrow from each other.
//!
//! * **Execution borrows from storage** (`maybeGrowPool`, docs/spark-model.md §3.4): when a request does not
//!   fit in free execution memory, execution takes free storage memory and evicts cached
//!   blocks that storage holds *beyond* its storage region. Eviction drops whole blocks, so
//!   the storage pool can end below the region. Execution cannot evict below the region.
//! * **Storage borrows from execution** (§4.1): only free execution memory, never execution's
//!   used bytes; the borrow is kept even if the acquire then fails. To make room, storage may
//!   evict any other cached block of the same mode (LRU, never the requesting block's RDD).
//!   A request larger than `unified − execution used` is refused outright ("Will not store").
//!
//! # Fairness (execution pool, docs/spark-model.md §3.2)
//!
//! Tasks with an entry in a mode's execution map are *active*; `N` is their count, including
//! tasks at 0 bytes (a task registers on its first acquire and leaves when its holding
//! returns to 0). On every pass of an acquire, with integer division:
//!
//! * `maxPerTask = maxPoolSize / N`, where `maxPoolSize = unified − min(storage used,
//!   storage region)` is the size the pool could reach by evicting;
//! * `minPerTask = poolSize / (2N)`, with the pool's *current* size;
//! * the task gets `min(request, maxPerTask − held, free)` (never below 0), so a task at its
//!   1/N share gets 0 at once (its caller spills), and no grant ever lifts a task above 1/N;
//! * if that is less than the request **and** would leave the task below 1/2N, the task
//!   **blocks** until something changes, then recomputes everything (including growing the
//!   pool, since storage may have cached in between).
//!
//! There is no queue and no FIFO order: like Spark's `wait()`/`notifyAll()`, every waiter is
//! woken and re-evaluates, and whoever gets the lock first may take the memory. Waiters are
//! woken by every execution release, every task arrival (N grew, so 1/2N shrank) and every task
//! exit (holding back to 0), as in Spark; a storage release wakes nobody (Spark's storage pool
//! never notifies), so a waiter sees storage's freed bytes at its next wake-up.
//!
//! # Implementation
//!
//! One `Mutex` guards all four pools (Spark synchronizes everything on the manager) and one
//! `Condvar` holds the blocked tasks. The number of blocked threads is kept under the lock, so
//! a release that sees none skips `notify_all` (a futex syscall) without risk of a lost
//! wake-up. The per-task map is a small vector scanned linearly. A request that fits in free
//! memory and within `maxPoolSize / N` is granted without dividing (`(held + n) × N <=
//! maxPoolSize` is the same test). Before the lock, a lock-free fast path grants a registered
//! task a request that fits in its *room* (`min(maxPoolSize / N − held, free / N)`, set under
//! the lock whenever it is released with nobody waiting and no event sink) and takes back a
//! partial release, each one CAS on the task's own cache line; every lock acquisition freezes
//! it first, so everything under the lock sees exact numbers (see `manager.rs`, "Fast path",
//! and the loom models). The evictor and the event sink are called with the lock
//! held, as Spark calls the `MemoryStore` and its logger; neither may call back in.
//!
//! # Testing
//!
//! Unit tests sit beside the code; `tests/memory_*.rs` port Spark's `UnifiedMemoryManagerSuite`
//! and `MemoryManagerSuite`, hammer fair share with real threads, and check seeded random
//! sequences against a reference model. A loom model of blocking and waking runs with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --lib memory::
//! ```
//!
//! ([`sync`] swaps `std::sync` for `loom::sync` under that flag.)

mod event;
mod manager;
pub(crate) mod sync;
mod task;
pub mod testing;
mod types;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

pub use event::{EventSink, MemoryEvent};
pub use manager::{BlockEvictor, MemoryError, UnifiedMemoryManager};
pub use task::{
    Consumer, ConsumerId, ConsumerSpillError, ConsumerUsage, MAXIMUM_PAGE_SIZE_BYTES,
    MemoryConsumer, PAGE_TABLE_SIZE, Page, TaskMemoryError, TaskMemoryManager, Unspillable,
    decode_offset, decode_page_number, encode_address,
};
pub use types::{MemoryMode, MemorySnapshot, PoolSizes, PoolSnapshot, TaskAttemptId, WaitStats};
