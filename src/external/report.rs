//! `report.json`'s `external` part: the overhead account, the container monitor's verdicts and
//! each worker's life (docs/report.md). Plain serializable data; the pool gathers it.

use serde::{Deserialize, Serialize};

use super::overhead::Peaks;
use super::pool::PoolConfig;
use super::{MonitorPolicy, WorkerKind};

/// One worker's life, for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub pid: u32,
    pub kind: WorkerKind,
    pub tasks: u64,
    /// `VmHWM` when the worker was retired.
    pub peak_rss_bytes: u64,
    /// `PYSPARK_EXECUTOR_MEMORY_MB` as the worker read it (-1: unset).
    pub memory_limit_mb: i64,
    pub rlimit_as_soft_bytes: Option<u64>,
    pub rlimit_set: bool,
    pub rlimit_warning: Option<String>,
    /// How it ended ("exit status: 0", "signal: 9 (SIGKILL)").
    pub exit: String,
    /// The error class that ended it, if a task failed in it.
    pub failed_with: Option<String>,
}

impl WorkerRecord {
    /// A worker just started, before its hello.
    pub(super) fn started(pid: u32, kind: WorkerKind) -> WorkerRecord {
        WorkerRecord {
            pid,
            kind,
            tasks: 0,
            peak_rss_bytes: 0,
            memory_limit_mb: -1,
            rlimit_as_soft_bytes: None,
            rlimit_set: false,
            rlimit_warning: None,
            exit: String::new(),
            failed_with: None,
        }
    }
}

/// The container kill, with its numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerKill {
    pub total_rss_bytes: u64,
    pub executor_rss_bytes: u64,
    pub workers_rss_bytes: u64,
    pub container_bytes: u64,
    pub exit_status: i32,
    /// Spark's message: "Container killed by YARN for exceeding physical memory limits. ..."
    pub message: String,
}

/// How a python stage chose its worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PythonStageInfo {
    pub stage_id: u32,
    pub worker: WorkerKind,
    pub reason: String,
}

/// The container monitor's part of the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerReport {
    pub policy: MonitorPolicy,
    pub limit_bytes: u64,
    pub peak_total_rss_bytes: u64,
    /// Times the total crossed the limit (each crossing counted once).
    pub times_exceeded: u64,
    pub killed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill: Option<ContainerKill>,
}

/// `report.json`'s `external`: the overhead account (docs/spark-model.md §11) and the workers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExternalReport {
    /// `spark.executor.memoryOverhead` (or its factor/minimum) in bytes.
    pub overhead_bytes: u64,
    /// `spark.executor.pyspark.memory` in bytes (0 when unset).
    pub pyspark_bytes: u64,
    /// What lives outside the heap may use: overhead + pyspark.
    pub overhead_budget_bytes: u64,
    pub container_bytes: u64,
    /// `PYSPARK_EXECUTOR_MEMORY_MB` each worker was given (absent: no RLIMIT_AS).
    pub pyspark_memory_mb_per_worker: Option<i64>,
    /// `spark.python.worker.memory` in MiB.
    pub python_worker_memory_mib: i64,
    /// The Python interpreter found, if any.
    pub python: Option<String>,
    pub python_stages: Vec<PythonStageInfo>,
    pub workers_started: u64,
    /// Workers that ended after a failure and were replaced by the next task.
    pub workers_failed: u64,
    pub workers: Vec<WorkerRecord>,
    pub peak_workers_rss_bytes: u64,
    pub peak_executor_rss_bytes: u64,
    /// The executor's resident memory beyond the heap pages it has touched (its own overhead).
    pub peak_executor_beyond_heap_bytes: u64,
    /// Peak of workers + executor-beyond-heap: what the overhead budget must cover.
    pub peak_overhead_used_bytes: u64,
    pub overhead_within_budget: bool,
    pub container_monitor: ContainerReport,
}

/// What the pool has gathered by the end of a run.
pub(super) struct Gathered {
    /// The interpreter, as "path (Python version)".
    pub python: Option<String>,
    pub python_stages: Vec<PythonStageInfo>,
    pub workers_started: u64,
    pub workers: Vec<WorkerRecord>,
    pub peaks: Peaks,
    pub kill: Option<ContainerKill>,
}

impl ExternalReport {
    /// The report of a pool configured by `cfg` that gathered `g`.
    pub(super) fn build(cfg: &PoolConfig, g: Gathered) -> ExternalReport {
        let budget = cfg.overhead_bytes + cfg.pyspark_bytes;
        ExternalReport {
            overhead_bytes: cfg.overhead_bytes,
            pyspark_bytes: cfg.pyspark_bytes,
            overhead_budget_bytes: budget,
            container_bytes: cfg.container_bytes,
            pyspark_memory_mb_per_worker: cfg.pyspark_memory_mb_per_worker,
            python_worker_memory_mib: cfg.python_worker_memory_mib,
            python: g.python,
            python_stages: g.python_stages,
            workers_started: g.workers_started,
            workers_failed: g.workers.iter().filter(|r| r.failed_with.is_some()).count() as u64,
            workers: g.workers,
            peak_workers_rss_bytes: g.peaks.workers_rss,
            peak_executor_rss_bytes: g.peaks.executor_rss,
            peak_executor_beyond_heap_bytes: g.peaks.executor_beyond_heap,
            peak_overhead_used_bytes: g.peaks.overhead_used(),
            overhead_within_budget: g.peaks.overhead_used() <= budget,
            container_monitor: ContainerReport {
                policy: cfg.policy,
                limit_bytes: cfg.container_bytes,
                peak_total_rss_bytes: g.peaks.total,
                times_exceeded: g.peaks.times_exceeded,
                killed: g.kill.is_some(),
                kill: g.kill,
            },
        }
    }
}
