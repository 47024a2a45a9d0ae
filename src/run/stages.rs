//! The stage kinds a scenario runs: what each task does, and how it is verified.

use std::collections::HashMap;

use crate::data::{PartitionData, RecordSource, stream_seed};
use crate::memory::TaskMemoryError;
use crate::region::UserMemoryError;
use crate::scheduler::TaskContext;
use crate::spill::RecordDigest;
use crate::storage::block_manager::{ReadFrom, StorageError};
use crate::storage::{BlockId, StorageLevel};

/// A task's failure: a Spark-style error class and a message with the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    pub class: String,
    pub message: String,
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl From<TaskMemoryError> for TaskError {
    fn from(e: TaskMemoryError) -> Self {
        TaskError {
            class: memory_error_class(&e).into(),
            message: e.to_string(),
        }
    }
}

impl From<StorageError> for TaskError {
    fn from(e: StorageError) -> Self {
        let class = match &e {
            StorageError::Spill(_) => "IOException",
            StorageError::Mismatch { .. } => "VERIFICATION_FAILED",
            StorageError::Interrupted(_) => "TaskKilled",
        };
        TaskError {
            class: class.into(),
            message: e.to_string(),
        }
    }
}

impl From<crate::interrupt::Interrupted> for TaskError {
    fn from(e: crate::interrupt::Interrupted) -> Self {
        TaskError {
            class: "TaskKilled".into(),
            message: e.to_string(),
        }
    }
}

impl From<UserMemoryError> for TaskError {
    fn from(e: UserMemoryError) -> Self {
        TaskError {
            class: "java.lang.OutOfMemoryError".into(),
            message: e.to_string(),
        }
    }
}

/// What one task did, in the units the report uses.
#[derive(Debug, Clone, Default)]
pub struct TaskOutput {
    pub memory_bytes_spilled: u64,
    pub disk_bytes_spilled: u64,
    pub spill_count: u64,
    pub spill_write_ns: u64,
    pub spill_read_ns: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub digest_in: RecordDigest,
    pub digest_out: RecordDigest,
    pub verified: bool,
    /// Where a scan found its partition.
    pub read_from: Option<ReadFrom>,
    /// User-memory bytes a UDF task held.
    pub user_bytes: u64,
}

impl From<crate::tasks::TaskError> for TaskError {
    fn from(e: crate::tasks::TaskError) -> Self {
        use crate::tasks::TaskError as E;
        let class = match &e {
            E::Memory(m) => memory_error_class(m),
            E::Spill(_) | E::TempFile(_) => "IOException",
            E::Verification(_) => "VERIFICATION_FAILED",
            E::InvalidSpec(_) => "INVALID_SPEC",
            E::Interrupted(_) => "TaskKilled",
        };
        TaskError {
            class: class.into(),
            message: e.to_string(),
        }
    }
}

fn memory_error_class(e: &TaskMemoryError) -> &'static str {
    match e {
        TaskMemoryError::UnableToAcquire { .. } => "UNABLE_TO_ACQUIRE_MEMORY",
        TaskMemoryError::SpillFailed { .. } => "SPILL_OUT_OF_MEMORY",
        TaskMemoryError::TooLargePage(_) => "TooLargePageException",
        TaskMemoryError::PageTableFull => "IllegalStateException",
        TaskMemoryError::Leak { .. } => "MEMORY_LEAK",
    }
}

impl From<crate::tasks::TaskMetrics> for TaskOutput {
    fn from(m: crate::tasks::TaskMetrics) -> Self {
        let v = &m.verification;
        TaskOutput {
            memory_bytes_spilled: m.memory_bytes_spilled,
            disk_bytes_spilled: m.disk_bytes_spilled,
            spill_count: m.spill_count,
            spill_write_ns: m.spill_write_ns,
            spill_read_ns: m.spill_read_ns,
            records_in: m.records_in,
            records_out: m.records_out,
            digest_in: RecordDigest {
                records: v.input_records,
                hash_sum: v.input_digest,
            },
            digest_out: RecordDigest {
                records: v.output_records,
                hash_sum: v.output_digest,
            },
            verified: v.ok,
            ..TaskOutput::default()
        }
    }
}

/// An RDD cached by a scenario, kept so that a scan can recompute and verify it.
#[derive(Debug, Clone)]
pub struct CachedRdd {
    pub id: u32,
    pub name: String,
    pub level: StorageLevel,
    pub partitions: u32,
    pub partition_bytes: u64,
    pub record_bytes: u64,
    pub seed: u64,
    /// The digest of each partition's generated records.
    pub expected: HashMap<u32, RecordDigest>,
}

impl CachedRdd {
    /// The generator of a partition.
    pub fn data(&self, partition: u32) -> PartitionData {
        PartitionData::new(
            stream_seed(self.seed, self.id as u64, partition as u64),
            self.partition_bytes,
            self.record_bytes,
        )
    }

    /// The block of a partition.
    pub fn block(&self, partition: u32) -> BlockId {
        BlockId::Rdd {
            rdd_id: self.id,
            split_index: partition,
        }
    }
}

/// `rdd.persist(level); rdd.count()`: each task computes and caches one partition.
pub fn cache_task(ctx: &TaskContext, rdd: &CachedRdd) -> Result<TaskOutput, TaskError> {
    let data = rdd.data(ctx.partition);
    put_block(ctx, &rdd.block(ctx.partition), rdd.level, &data)
}

/// Puts generated data as a block; verified when every generated record went into the put.
fn put_block(
    ctx: &TaskContext,
    block: &BlockId,
    level: StorageLevel,
    data: &PartitionData,
) -> Result<TaskOutput, TaskError> {
    let report =
        ctx.executor
            .block_manager()
            .put_partition(block, level, ctx.task_attempt_id, data)?;
    Ok(TaskOutput {
        records_in: report.digest.records,
        records_out: report.digest.records,
        digest_in: report.digest,
        digest_out: report.digest,
        verified: report.digest.records == data.records(),
        ..TaskOutput::default()
    })
}

/// `rdd.count()` over a cached RDD: read each partition from memory or disk, or recompute it;
/// every record is checked against what was generated.
pub fn scan_task(ctx: &TaskContext, rdd: &CachedRdd) -> Result<TaskOutput, TaskError> {
    let data = rdd.data(ctx.partition);
    let mut records = 0u64;
    let (from, digest) = ctx.executor.block_manager().get_or_compute(
        &rdd.block(ctx.partition),
        rdd.level,
        ctx.task_attempt_id,
        &data,
        &mut |_| records += 1,
    )?;
    let expected = rdd
        .expected
        .get(&ctx.partition)
        .copied()
        .unwrap_or_else(|| {
            let mut d = RecordDigest::default();
            let mut it = data.iter();
            while let Some(r) = it.next_record() {
                d.add(r);
            }
            d
        });
    if digest != expected {
        return Err(StorageError::Mismatch {
            block: rdd.block(ctx.partition),
            from: match from {
                ReadFrom::Memory => "memory",
                ReadFrom::Disk => "disk",
                ReadFrom::Recomputed => "recomputation",
            },
            detail: format!(
                "{} records with hash sum {:#x}, expected {} with {:#x}",
                digest.records, digest.hash_sum, expected.records, expected.hash_sum
            ),
        }
        .into());
    }
    Ok(TaskOutput {
        records_in: records,
        records_out: records,
        digest_in: expected,
        digest_out: digest,
        verified: true,
        read_from: Some(from),
        ..TaskOutput::default()
    })
}

/// A UDF that builds `bytes` of objects of `object_bytes` in user memory (outside the unified
/// manager, as Spark's user memory is), writes and re-reads them; past the user region it
/// fails with the task's `java.lang.OutOfMemoryError: Java heap space`.
pub fn udf_task(
    ctx: &TaskContext,
    bytes: u64,
    object_bytes: u64,
    seed: u64,
) -> Result<TaskOutput, TaskError> {
    let arena = ctx.executor.user_arena();
    let mut objects: Vec<&mut [u8]> = Vec::new();
    let mut allocated = 0u64;
    let mut digest = RecordDigest::default();
    let mut state = stream_seed(seed, ctx.stage_id as u64, ctx.partition as u64);
    while allocated < bytes {
        if digest.records.is_multiple_of(crate::interrupt::CHECK_EVERY) {
            crate::interrupt::check()?;
        }
        let n = object_bytes.min(bytes - allocated) as usize;
        let obj = arena.alloc_bytes(n)?;
        for w in obj.chunks_mut(8) {
            let v = crate::data::splitmix64(&mut state).to_le_bytes();
            w.copy_from_slice(&v[..w.len()]);
        }
        digest.add(obj);
        allocated += n as u64;
        objects.push(obj);
    }
    let mut check = RecordDigest::default();
    for o in &objects {
        check.add(o);
    }
    Ok(TaskOutput {
        records_in: digest.records,
        records_out: check.records,
        digest_in: digest,
        digest_out: check,
        verified: digest == check,
        user_bytes: arena.allocated_bytes(),
        ..TaskOutput::default()
    })
}

/// Stores a broadcast variable's block at its level, as an executor does when it first reads
/// the broadcast.
pub fn broadcast_task(
    ctx: &TaskContext,
    id: u64,
    bytes: u64,
    record_bytes: u64,
    level: StorageLevel,
    seed: u64,
) -> Result<TaskOutput, TaskError> {
    let data = PartitionData::new(stream_seed(seed, u64::MAX - id, 0), bytes, record_bytes);
    put_block(ctx, &BlockId::Broadcast { broadcast_id: id }, level, &data)
}
