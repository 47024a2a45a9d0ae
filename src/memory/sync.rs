//! The one place that names the memory manager's synchronisation primitives, so loom can swap them.
//!
//! Under `cfg(loom)` these are `loom::sync` types, otherwise `std::sync`. Every lock and
//! condition variable in [`crate::memory`] comes from here, and so do the atomics of the
//! execution pool's lock-free fast path (see `manager.rs`, "Fast path").
//!
//! The trait-object handles the manager stores ([`super::BlockEvictor`], [`super::EventSink`])
//! are plain `std::sync::Arc`: they are immutable once installed and take no part in the
//! interleavings loom explores.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

/// `Arc` for sharing a manager between (loom) threads in tests.
#[cfg(all(test, loom))]
pub(crate) use loom::sync::Arc;
