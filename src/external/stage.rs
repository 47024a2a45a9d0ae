//! The `python` stage kind: each task runs in a worker process — a UDF whose working set is
//! `bytes_per_task`, and/or a `reduceByKey` of `records_per_task` records — and the executor
//! checks the answer against its own computation.

use super::agg::{expected_aggregate, expected_udf_checksum};
use super::protocol::{Reply, Request};
use super::{ExternalError, WorkerKind, WorkerPool};
use crate::data::stream_seed;
use crate::run::stages::{TaskError, TaskOutput};
use crate::scheduler::TaskContext;
use crate::spill::RecordDigest;

impl From<ExternalError> for TaskError {
    fn from(e: ExternalError) -> Self {
        TaskError {
            class: e.error_class().into(),
            message: e.to_string(),
        }
    }
}

/// What a python task does.
#[derive(Debug, Clone, Copy)]
pub struct PythonTask {
    pub kind: WorkerKind,
    pub bytes_per_task: u64,
    pub records_per_task: u64,
    pub distinct_keys: u64,
    pub seed: u64,
}

/// Runs one python task on `pool`.
pub fn python_task(
    ctx: &TaskContext,
    pool: &WorkerPool,
    t: &PythonTask,
) -> Result<TaskOutput, TaskError> {
    let mut out = TaskOutput {
        verified: true,
        ..TaskOutput::default()
    };
    crate::interrupt::check()?;
    if t.bytes_per_task > 0 {
        let seed = stream_seed(t.seed, ctx.stage_id as u64, ctx.partition as u64);
        let what = format!("udf of {} bytes", t.bytes_per_task);
        let r = pool.run(
            t.kind,
            &Request::Udf {
                task: ctx.task_attempt_id,
                bytes: t.bytes_per_task,
                seed,
            },
            &what,
        )?;
        let Reply::UdfDone {
            bytes, checksum, ..
        } = r.reply
        else {
            unreachable!("run returns only done replies");
        };
        let expected = expected_udf_checksum(seed, t.bytes_per_task);
        if bytes != t.bytes_per_task || checksum != expected {
            return Err(ExternalError::Verification {
                detail: format!(
                    "worker pid {} returned {bytes} bytes with checksum {checksum:#x}, expected \
                     {} bytes with {expected:#x}",
                    r.pid, t.bytes_per_task
                ),
            }
            .into());
        }
        out.records_in += 1;
        out.records_out += 1;
        let d = RecordDigest {
            records: 1,
            hash_sum: checksum,
        };
        out.digest_in = out.digest_in.combine(d);
        out.digest_out = out.digest_out.combine(d);
    }
    crate::interrupt::check()?;
    if t.records_per_task > 0 {
        let seed = stream_seed(
            t.seed,
            (1 << 32) | ctx.stage_id as u64,
            ctx.partition as u64,
        );
        let what = format!(
            "aggregation of {} records over {} keys",
            t.records_per_task, t.distinct_keys
        );
        let r = pool.run(
            t.kind,
            &Request::Aggregate {
                task: ctx.task_attempt_id,
                records: t.records_per_task,
                distinct_keys: t.distinct_keys,
                seed,
                memory_limit_mib: pool.config().python_worker_memory_mib.max(0) as u64,
            },
            &what,
        )?;
        let Reply::AggregateDone {
            records,
            keys,
            value_sum,
            digest,
            spills,
            memory_bytes_spilled,
            disk_bytes_spilled,
            ..
        } = r.reply
        else {
            unreachable!("run returns only done replies");
        };
        // The executor's own computation, streaming (no map): records, keys, sums, digest.
        let e = expected_aggregate(seed, t.records_per_task, t.distinct_keys);
        let got = (records, keys, value_sum, digest);
        if got != (e.records, e.keys, e.value_sum, e.digest) {
            return Err(ExternalError::Verification {
                detail: format!(
                    "worker pid {} aggregated (records, keys, value sum, digest) = {got:?}, \
                     expected {:?}",
                    r.pid,
                    (e.records, e.keys, e.value_sum, e.digest)
                ),
            }
            .into());
        }
        out.records_in += records;
        out.records_out += keys;
        out.digest_in = out.digest_in.combine(RecordDigest {
            records: e.records,
            hash_sum: e.digest,
        });
        out.digest_out = out.digest_out.combine(RecordDigest {
            records,
            hash_sum: digest,
        });
        out.spill_count += spills;
        out.memory_bytes_spilled += memory_bytes_spilled;
        out.disk_bytes_spilled += disk_bytes_spilled;
        if spills > 0 {
            crate::metrics::record_spill(disk_bytes_spilled);
        }
    }
    Ok(out)
}
