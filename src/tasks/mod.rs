//! The spilling task kinds — an external sort and a hash aggregation — with their metrics and errors.
//!
//! | Spark class | here | spec |
//! |---|---|---|
//! | `UnsafeExternalSorter`, `UnsafeInMemorySorter`, `RadixSort` | [`sort::ExternalSorter`] | §9 |
//! | `ExternalAppendOnlyMap`, `Spillable` | [`aggregate::SpillableAggregator`] | §8 |
//! | `TaskMetrics` | [`TaskMetrics`] | §8.5 |
//!
//! Both task kinds take their memory as Tungsten pages through a [`crate::memory::Consumer`],
//! spill sorted runs in the checksummed format of [`crate::spill`] into the executor's local
//! directories, merge them back with [`crate::spill::SortedMerge`] and **verify** what comes
//! out against what went in (an order-independent [`RecordDigest`] for the sort; an
//! independent recomputation of every aggregate for the aggregation). A task never leaves a
//! spill file behind: each run is owned by a [`RunFile`] that deletes it on drop, so an error
//! anywhere (writing, reading, verification, an UNABLE_TO_ACQUIRE_MEMORY) removes them.
//!
//! # Sharing the consumer's state with its spill callback
//!
//! The task memory manager calls a consumer's [`crate::memory::MemoryConsumer::spill`] on the
//! task's own thread, from inside an allocation (its own or another consumer's of the task),
//! while it holds none of its locks. Each task kind therefore keeps its state in an
//! `Arc<Mutex<_>>` shared by the owner and the callback, and the owner **never holds that lock
//! across a call into its `Consumer` handle**: it fills the current page under the lock, drops
//! the lock, asks for a page or an array (which may re-enter through the callback and spill),
//! then takes the lock again and re-reads the state (the records may be gone). The lock is
//! uncontended (one thread per task); the sorter takes it once per page, the aggregation once per
//! record. The callback uses
//! `try_lock`: if the state is busy (the owner is merging), it releases nothing, as Spark's
//! sorters return 0 when they cannot spill at that moment.

pub mod aggregate;
pub mod sort;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::memory::TaskMemoryError;
use crate::spill::{RecordDigest, SpillError};

/// What a task reports, with Spark's `TaskMetrics` names (camelCase in JSON) and spillway's own
/// spill timings and verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskMetrics {
    /// In-memory bytes released by spills (Spark: pages freed for the sorter, the collection's
    /// estimated size for the aggregation, docs/spark-model.md §8.5).
    pub memory_bytes_spilled: u64,
    /// Bytes of spill files written (whole files: header, frames, footer), as on disk: after
    /// compression when `spark.shuffle.spill.compress` is true (docs/spark-model.md §8.5, §19.4).
    pub disk_bytes_spilled: u64,
    /// Peak execution memory of the task, from its task memory manager.
    pub peak_execution_memory: u64,
    /// Wall time of the task body in milliseconds (`executorRunTime`).
    pub executor_run_time: u64,
    /// Spills written (sorted runs or aggregation spills).
    pub spill_count: u64,
    /// Of those, spills asked for by another consumer of the task.
    pub spills_for_others: u64,
    /// Nanoseconds sorting and writing spills (sort + gather + write calls).
    pub spill_write_ns: u64,
    /// Nanoseconds of the final merge: reading and verifying runs, merging, checking output.
    pub spill_read_ns: u64,
    /// Nanoseconds sorting pointer arrays (in-memory sorts, spilled or final).
    pub sort_ns: u64,
    /// Nanoseconds generating and inserting records (page and array growth included).
    pub insert_ns: u64,
    /// Records generated and inserted.
    pub records_in: u64,
    /// Records out of the merge (sort) or distinct keys out (aggregation).
    pub records_out: u64,
    /// What was checked, with both sides' numbers.
    pub verification: Verification,
}

/// The check of a task's output against its input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Records and hash sum of the generated input (sort) or of the expected aggregates.
    pub input_records: u64,
    pub input_digest: u64,
    /// The same over the task's output.
    pub output_records: u64,
    pub output_digest: u64,
    /// Output keys non-decreasing (sort) / every key's count and sum equal (aggregation).
    pub ordered: bool,
    pub ok: bool,
}

impl Verification {
    pub(crate) fn new(input: RecordDigest, output: RecordDigest, ordered: bool) -> Verification {
        Verification {
            input_records: input.records,
            input_digest: input.hash_sum,
            output_records: output.records,
            output_digest: output.hash_sum,
            ordered,
            ok: ordered && input == output,
        }
    }
}

/// Why a sort or aggregation task failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// UNABLE_TO_ACQUIRE_MEMORY, SPILL_OUT_OF_MEMORY, a too-large page, a full page table.
    #[error(transparent)]
    Memory(#[from] TaskMemoryError),
    /// Writing or reading back a spill file (the file is deleted).
    #[error(transparent)]
    Spill(#[from] SpillError),
    /// No spill file could be created in the local directories.
    #[error("cannot create a spill file in the local directories: {0}")]
    TempFile(#[source] std::io::Error),
    /// A heap object the memory manager does not account (a `groupByKey` group) found no room:
    /// `java.lang.OutOfMemoryError: Java heap space`.
    #[error(transparent)]
    OutOfHeap(#[from] crate::region::UserMemoryError),
    /// Writing or reading a map output (names the file or block).
    #[error("shuffle: {0}")]
    Shuffle(String),
    /// A reduce task could not read a shuffle block (`FetchFailedException`): damaged,
    /// truncated or unreadable, named with the map output file in `detail` and the executor
    /// that holds it.
    #[error("fetch failed: block {block} on executor {executor}: {detail}")]
    FetchFailed {
        block: String,
        executor: u32,
        detail: String,
    },
    /// The output does not match the input.
    #[error("verification failed: {0}")]
    Verification(String),
    /// A spec that cannot run.
    #[error("invalid task spec: {0}")]
    InvalidSpec(String),
    /// The process received a signal: the task stopped between two records.
    #[error(transparent)]
    Interrupted(#[from] crate::interrupt::Interrupted),
}

impl TaskError {
    /// Spark's error class, where Spark has one (for `report.json`'s `failures[].error`).
    pub fn error_class(&self) -> Option<&'static str> {
        match self {
            TaskError::Memory(TaskMemoryError::UnableToAcquire { .. }) => {
                Some("UNABLE_TO_ACQUIRE_MEMORY")
            }
            TaskError::Memory(TaskMemoryError::SpillFailed { .. }) => Some("SPILL_OUT_OF_MEMORY"),
            // A spill the sorter starts on its own (its pointer array too large for a page)
            // is not wrapped by the task memory manager: Spark throws the IOException itself.
            TaskError::Spill(_) | TaskError::TempFile(_) | TaskError::Shuffle(_) => {
                Some("IOException")
            }
            TaskError::FetchFailed { .. } => Some("FetchFailedException"),
            _ => None,
        }
    }
}

/// A finished spill file owned by the task: deleted when dropped (after it is merged, or on any
/// error path).
#[derive(Debug)]
pub struct RunFile {
    path: PathBuf,
}

impl RunFile {
    fn new(path: PathBuf) -> RunFile {
        RunFile { path }
    }

    /// Where the run is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A task's state, shared between its owner and its spill callback (the `MemoryConsumer` the
/// task memory manager holds). The owner never holds it across a call into its `Consumer`.
pub(crate) struct SharedState<S> {
    state: std::sync::Mutex<S>,
}

impl<S> SharedState<S> {
    pub(crate) fn new(state: S) -> Self {
        SharedState {
            state: std::sync::Mutex::new(state),
        }
    }

    /// The owner's access. A panic while spilling leaves the task failed; what is left is still
    /// freed on drop, so a poisoned lock is taken as it is.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spill callback's access: `None` while the owner holds the state (e.g. merging), when
    /// nothing can be released.
    pub(crate) fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, S>> {
        match self.state.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}
