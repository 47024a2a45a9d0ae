//! The reduce side's operations over the records a reduce task fetched (docs/spark-model.md
//! §20.8), each checked against an independent computation.
//!
//! | operation | Spark | here |
//! |---|---|---|
//! | `partitionBy` + `count` | records stream through | counted and digested |
//! | `reduceByKey` | `combineCombinersByKey` → `ExternalAppendOnlyMap` | `SpillableAggregator` merging `(count, sum)` combiners |
//! | `sortByKey` | `ExternalSorter` with a key ordering | the external sorter (`UnsafeExternalSorter` rules, spilling sorted runs) |
//! | `groupByKey` | `combineValuesByKey` → `ExternalAppendOnlyMap` of `CompactBuffer`s | the external sorter by key, then each key's values held together in user memory |
//!
//! All of them take their execution memory through the task's memory manager, so they spill
//! under the same fair share as every other consumer.
//!
//! **groupByKey and the heap.** Whatever spills, Spark must hold each key's whole group at
//! once to hand it on: the merged `CompactBuffer` is a heap object the memory manager does not
//! account, so a group larger than the heap has room for is `java.lang.OutOfMemoryError: Java
//! heap space`. spillway holds the group's values in pages of the user range (growing the
//! buffer by doubling, as an `ArrayBuffer` grows): a group the user range cannot hold is that
//! error, in the task that meets it. The values are held as their bytes, not as JVM objects
//! (no object headers), and the grouping is by sort, not by hash; the counts, sums and the one
//! group in memory at a time are Spark's.
//!
//! **Verification.** `partitionBy`, `sortByKey` and `groupByKey` check the digest of the records
//! read against the map tasks' digests of the records they generated for this partition
//! (`MapStatus::expected`); `sortByKey` also checks keys non-decreasing; `reduceByKey` and
//! `groupByKey` check every key's count and sum against the aggregate digest the map tasks took
//! of the records as they generated them (`super::aggregate_digest`: linear, so the map tasks'
//! digests add up to the partition's, and any wrong count or sum changes it), which shares no
//! code with the writers, the fetch or the aggregation; and each key must come out once.

use std::time::Instant;

use super::{MapStatus, Operation, ShuffleSpec, aggregate_digest};
use crate::region::{MemoryBlock, UserMemoryError};
use crate::scheduler::TaskContext;
use crate::spill::RecordDigest;
use crate::tasks::aggregate::SpillableAggregator;
use crate::tasks::aggregate::key_hash;
use crate::tasks::sort::ExternalSorter;
use crate::tasks::{TaskError, TaskMetrics, Verification};

/// What a reduce partition must come out as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Per reduce partition: digest of the generated records that belong to it.
    pub records: Vec<RecordDigest>,
    /// Per reduce partition: the aggregate digest of its `(key, count, sum)` totals
    /// (`super::aggregate_digest`), for the aggregating operations.
    pub aggregates: Option<Vec<RecordDigest>>,
}

/// The expectations of every reduce partition of a shuffle whose map side is done: the sums of
/// the map tasks' digests of what they generated for it.
pub fn expected(spec: &ShuffleSpec, statuses: &[MapStatus]) -> Result<Expected, TaskError> {
    let n = spec.reduce_partitions as usize;
    let mut records = vec![RecordDigest::default(); n];
    let mut aggregates = vec![RecordDigest::default(); n];
    for s in statuses {
        for r in 0..n {
            records[r] = records[r].combine(s.expected[r]);
            aggregates[r] = aggregates[r].combine(s.expected_aggregate[r]);
        }
    }
    let aggregates = match spec.operation {
        Operation::ReduceByKey | Operation::GroupByKey => Some(aggregates),
        Operation::PartitionBy | Operation::SortByKey => None,
    };
    Ok(Expected {
        records,
        aggregates,
    })
}

/// What a reduce task did besides fetching.
#[derive(Debug, Clone, Default)]
pub struct ReduceResult {
    pub metrics: TaskMetrics,
    /// Keys out of an aggregating operation.
    pub keys_out: u64,
    /// Records of the largest group (`groupByKey`), and its values' bytes.
    pub largest_group_records: u64,
    pub largest_group_bytes: u64,
}

/// Feeds a reduce task's records to `f`; returns the fetch's own result (its metrics).
pub type Feed<'f, R> =
    dyn FnOnce(&mut dyn FnMut(&[u8]) -> Result<(), TaskError>) -> Result<R, TaskError> + 'f;

/// Runs the reduce side of `spec.operation` for partition `ctx.partition` over the records
/// `feed` delivers, and verifies the result.
pub fn run_reduce_task<R>(
    ctx: &TaskContext,
    spec: &ShuffleSpec,
    expected: &Expected,
    feed: Box<Feed<'_, R>>,
) -> Result<(R, ReduceResult), TaskError> {
    let started = Instant::now();
    let r = ctx.partition as usize;
    let want_records = expected.records[r];
    let mut read = RecordDigest::default();
    let mut result = ReduceResult::default();
    let (fetched, mut m, out_digest, ordered) = match spec.operation {
        Operation::PartitionBy => {
            let fetched = feed(&mut |rec| {
                read.add(rec);
                Ok(())
            })?;
            (fetched, TaskMetrics::default(), read, true)
        }
        Operation::SortByKey => {
            let mut sorter = ExternalSorter::new(ctx, spec.record_bytes as usize)?;
            let fetched = feed(&mut |rec| {
                read.add(rec);
                sorter.insert_record(rec)
            })?;
            let out = sorter.finish()?;
            (fetched, out.metrics, out.digest, out.ordered)
        }
        Operation::ReduceByKey => {
            let mut agg = SpillableAggregator::new(ctx);
            let fetched = feed(&mut |rec| {
                read.add(rec);
                let word = |at: usize| u64::from_le_bytes(rec[at..at + 8].try_into().expect("8"));
                agg.insert_combined(word(0), word(8), word(16))
            })?;
            let mut out = RecordDigest::default();
            let mut keys = 0u64;
            let mut last: Option<(u64, u64)> = None;
            let mut ordered = true;
            let m = agg.finish(|k, c, s| {
                out = out.combine(aggregate_digest(k, c, s));
                keys += 1;
                // Each key once: the map's output is in strict (hash, key) order.
                let at = (key_hash(k), k);
                ordered &= last.is_none_or(|l| l < at);
                last = Some(at);
            })?;
            result.keys_out = keys;
            (fetched, m, out, ordered)
        }
        Operation::GroupByKey => {
            let mut sorter = ExternalSorter::new(ctx, spec.record_bytes as usize)?;
            let fetched = feed(&mut |rec| {
                read.add(rec);
                sorter.insert_record(rec)
            })?;
            let mut group = GroupBuffer::new(ctx);
            let mut out = RecordDigest::default();
            let mut keys = 0u64;
            let mut current: Option<(u64, u64, u64)> = None;
            let mut failed: Option<UserMemoryError> = None;
            let sorted = sorter.finish_each(|rec| {
                if failed.is_some() {
                    return;
                }
                let key = crate::data::record_key(rec);
                let value = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
                match current.as_mut() {
                    Some((k, c, s)) if *k == key => {
                        *c += 1;
                        *s += value;
                    }
                    _ => {
                        if let Some((k, c, s)) = current.replace((key, 1, value)) {
                            out = out.combine(aggregate_digest(k, c, s));
                            keys += 1;
                        }
                        group.clear();
                    }
                }
                if let Err(e) = group.push(&rec[8..]) {
                    failed = Some(e);
                }
            })?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            if let Some((k, c, s)) = current {
                out = out.combine(aggregate_digest(k, c, s));
                keys += 1;
            }
            result.keys_out = keys;
            result.largest_group_records = group.largest_records;
            result.largest_group_bytes = group.largest_bytes;
            // The records themselves must be the ones generated, in key order.
            if sorted.digest != want_records || !sorted.ordered {
                return Err(TaskError::Verification(format!(
                    "groupByKey partition {r}: {} records read (digest {:#x}, ordered {}), \
                     expected {} (digest {:#x})",
                    sorted.digest.records,
                    sorted.digest.hash_sum,
                    sorted.ordered,
                    want_records.records,
                    want_records.hash_sum
                )));
            }
            (fetched, sorted.metrics, out, true)
        }
    };
    let want_out = match (&expected.aggregates, spec.operation) {
        (Some(a), Operation::ReduceByKey | Operation::GroupByKey) => a[r],
        _ => want_records,
    };
    m.records_in = read.records;
    m.records_out = match spec.operation {
        Operation::ReduceByKey | Operation::GroupByKey => result.keys_out,
        Operation::PartitionBy | Operation::SortByKey => out_digest.records,
    };
    m.verification = Verification::new(want_out, out_digest, ordered);
    m.peak_execution_memory = ctx.memory.peak_execution_memory();
    m.executor_run_time = started.elapsed().as_millis() as u64;
    if !m.verification.ok {
        return Err(TaskError::Verification(format!(
            "{} partition {r}: {} out (digest {:#x}, ordered {ordered}), expected {} (digest {:#x})",
            spec.operation.name(),
            out_digest.records,
            out_digest.hash_sum,
            want_out.records,
            want_out.hash_sum
        )));
    }
    result.metrics = m;
    Ok((fetched, result))
}

/// One key's values, in a buffer of the user range grown by doubling.
struct GroupBuffer<'a> {
    ctx: &'a TaskContext<'a>,
    block: Option<MemoryBlock>,
    len: usize,
    records: u64,
    largest_records: u64,
    largest_bytes: u64,
}

/// The first buffer of a group.
const GROUP_INITIAL_BYTES: u64 = 64 * 1024;

impl<'a> GroupBuffer<'a> {
    fn new(ctx: &'a TaskContext<'a>) -> GroupBuffer<'a> {
        GroupBuffer {
            ctx,
            block: None,
            len: 0,
            records: 0,
            largest_records: 0,
            largest_bytes: 0,
        }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.records = 0;
    }

    fn push(&mut self, value: &[u8]) -> Result<(), UserMemoryError> {
        let need = self.len + value.len();
        let cap = self.block.as_ref().map_or(0, |b| b.len() as usize);
        if need > cap {
            let new_cap = (cap as u64 * 2).max(GROUP_INITIAL_BYTES).max(need as u64);
            let alloc = self.ctx.executor.user_allocator();
            let mut grown =
                alloc
                    .allocate(new_cap)
                    .map_err(|e| UserMemoryError::OutOfUserMemory {
                        requested: new_cap,
                        task_used: cap as u64,
                        range_free: e.free_bytes,
                        range_len: e.range_len,
                    })?;
            if let Some(old) = self.block.take() {
                grown.as_mut_slice()[..self.len].copy_from_slice(&old.as_slice()[..self.len]);
            }
            self.block = Some(grown);
        }
        let block = self.block.as_mut().expect("ensured above");
        block.as_mut_slice()[self.len..need].copy_from_slice(value);
        self.len = need;
        self.records += 1;
        if self.len as u64 > self.largest_bytes {
            self.largest_bytes = self.len as u64;
            self.largest_records = self.records;
        }
        Ok(())
    }
}
