//! Log lines and debug observations of the memory manager, as values rather than a logging crate.
//!
//! Spark logs these through log4j; here they go to an [`EventSink`] if one is installed
//! (tests record them), else warnings are printed to stderr and info events are dropped.
//! The sink is called with the manager's lock held: it must be quick and must not call back
//! into the manager.

use std::fmt;
use std::sync::Arc;

use super::types::{MemoryMode, TaskAttemptId};
use crate::ids::BlockId;

/// Receives every [`MemoryEvent`]; installed with
/// [`UnifiedMemoryManager::set_event_sink`](super::UnifiedMemoryManager::set_event_sink).
pub type EventSink = Arc<dyn Fn(&MemoryEvent) + Send + Sync>;

/// Something the manager reports. `Display` gives Spark's log message (numbers included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryEvent {
    /// Spark's `assert(numBytes > 0)` in `ExecutionMemoryPool.acquireMemory`; here the request
    /// returns 0 and this warning is emitted instead of failing the task.
    InvalidExecutionRequest {
        /// Requesting task.
        task: TaskAttemptId,
        /// Pool requested from.
        mode: MemoryMode,
    },
    /// Info: `TID <task> waiting for at least 1/2N of <pool> pool to be free` (about to block).
    ExecutionWaiting {
        /// Blocked task.
        task: TaskAttemptId,
        /// Pool it waits on.
        mode: MemoryMode,
    },
    /// Warning: execution release larger than the task's holding; clamped to the holding.
    ExecutionOverRelease {
        /// Releasing task.
        task: TaskAttemptId,
        /// Pool released to.
        mode: MemoryMode,
        /// Bytes the caller asked to release.
        requested_bytes: u64,
        /// Bytes the task actually held (what is released).
        held_bytes: u64,
    },
    /// Warning: storage release larger than storage `used`; `used` is set to 0.
    StorageOverRelease {
        /// Pool released to.
        mode: MemoryMode,
        /// Bytes the caller asked to release.
        requested_bytes: u64,
        /// Bytes storage had in use.
        used_bytes: u64,
    },
    /// Info: a storage/unroll request larger than the mode's max storage memory is refused.
    WillNotStore {
        /// The block that will not be stored.
        block: BlockId,
        /// Pool requested from.
        mode: MemoryMode,
        /// Bytes requested.
        requested_bytes: u64,
        /// `maxOnHeapStorageMemory` / `maxOffHeapStorageMemory` at the time.
        limit_bytes: u64,
    },
    /// Debug: an execution grant, with the inputs of the fair-share rule at the moment of the
    /// grant. Emitted only when a sink is installed.
    ExecutionGranted {
        /// Task granted to.
        task: TaskAttemptId,
        /// Pool granted from.
        mode: MemoryMode,
        /// Bytes requested.
        requested_bytes: u64,
        /// Bytes granted (0 ≤ granted ≤ requested).
        granted_bytes: u64,
        /// The task's holding after the grant.
        held_bytes: u64,
        /// `N`, the number of tasks in the pool's map.
        active_tasks: usize,
        /// Execution pool size at the grant.
        execution_pool_bytes: u64,
        /// Storage `used` at the grant (feeds `computeMaxPoolSize`).
        storage_used_bytes: u64,
        /// `computeMaxPoolSize() / N`.
        max_per_task_bytes: u64,
        /// `poolSize / (2N)`.
        min_per_task_bytes: u64,
    },
}

impl MemoryEvent {
    /// Whether Spark logs this at WARN level.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            MemoryEvent::InvalidExecutionRequest { .. }
                | MemoryEvent::ExecutionOverRelease { .. }
                | MemoryEvent::StorageOverRelease { .. }
        )
    }
}

impl fmt::Display for MemoryEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryEvent::InvalidExecutionRequest { task, mode } => write!(
                f,
                "invalid number of bytes requested: 0 (TID {task}, {} execution pool)",
                mode.pool_prefix()
            ),
            MemoryEvent::ExecutionWaiting { task, mode } => write!(
                f,
                "TID {task} waiting for at least 1/2N of {} execution pool to be free",
                mode.pool_prefix()
            ),
            MemoryEvent::ExecutionOverRelease {
                task,
                mode,
                requested_bytes,
                held_bytes,
            } => write!(
                f,
                "Internal error: release called on {requested_bytes} bytes but task only has \
                 {held_bytes} bytes of memory from the {} execution pool (TID {task})",
                mode.pool_prefix()
            ),
            MemoryEvent::StorageOverRelease {
                mode,
                requested_bytes,
                used_bytes,
            } => write!(
                f,
                "Attempted to release {requested_bytes} bytes of storage memory when we only \
                 have {used_bytes} bytes ({} storage pool)",
                mode.pool_prefix()
            ),
            MemoryEvent::WillNotStore {
                block,
                requested_bytes,
                limit_bytes,
                ..
            } => write!(
                f,
                "Will not store {block} as the required space ({requested_bytes} bytes) exceeds \
                 our memory limit ({limit_bytes} bytes)"
            ),
            MemoryEvent::ExecutionGranted {
                task,
                mode,
                requested_bytes,
                granted_bytes,
                held_bytes,
                active_tasks,
                max_per_task_bytes,
                min_per_task_bytes,
                ..
            } => write!(
                f,
                "TID {task} granted {granted_bytes} of {requested_bytes} bytes from the {} \
                 execution pool, now holds {held_bytes} (N = {active_tasks}, \
                 1/N = {max_per_task_bytes}, 1/2N = {min_per_task_bytes})",
                mode.pool_prefix()
            ),
        }
    }
}

/// Deliver an event: to the sink if installed, else warnings to stderr.
pub(crate) fn emit(sink: &Option<EventSink>, event: MemoryEvent) {
    match sink {
        Some(sink) => sink(&event),
        None if event.is_warning() => crate::log::warn("MemoryManager", &event.to_string()),
        None => {}
    }
}
