//! Memory outside the heap: PySpark-style worker processes, their `RLIMIT_AS`
//! (`spark.executor.pyspark.memory`) and spill threshold (`spark.python.worker.memory`), the
//! overhead account, and a YARN-style container monitor (docs/spark-model.md §11, §13).
//!
//! | Spark concept | here |
//! |---|---|
//! | `PythonWorkerFactory` (idle workers, reuse: `spark.python.worker.reuse`) | [`WorkerPool`]: one worker per running task, started lazily, reused |
//! | `worker.py` (`PYSPARK_EXECUTOR_MEMORY_MB` → `RLIMIT_AS`) | `python_worker.py` (run by `python3`) and [`worker::worker_main`] (`spillway worker`) |
//! | `shuffle.ExternalMerger` (RSS checks, 59 hash partitions, `<local>/python/<pid>`) | both workers' `ExternalMerger` |
//! | `PythonRunner` reading `END_OF_STREAM` | [`protocol`]: length-prefixed JSON frames |
//! | YARN `ContainersMonitorImpl` pmem check, exit −104 | [`WorkerPool::check_container`], `spillway.container.monitor` |
//!
//! [`pool`] starts, checks out and retires the workers; [`overhead`] keeps the overhead account
//! and judges the container limit on the numbers the pool measures; [`report`] is what goes
//! into `report.json`.
//!
//! Workers are real child processes. Each is owned by a [`pool::Worker`] guard whose drop
//! closes its stdin, waits a moment, kills it if needed and reaps it: on success, on a task's
//! failure, on a container kill and when a task panics. Their spill files live under
//! spillway's private local directories, which the executor removes at the end.

pub mod agg;
pub mod overhead;
pub mod pool;
pub mod protocol;
pub mod report;
pub mod task;
pub mod worker;

pub use pool::{PoolConfig, WorkerPool};
pub use report::{ContainerKill, ContainerReport, ExternalReport, PythonStageInfo, WorkerRecord};

/// Which program a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerKind {
    /// `python3 python_worker.py`: a real CPython worker.
    Python3,
    /// `spillway worker`: the same protocol and rules in Rust.
    Spillway,
}

impl WorkerKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkerKind::Python3 => "python3",
            WorkerKind::Spillway => "spillway",
        }
    }
}

/// A stage's `worker` key: a kind, or `auto` (python3 when present, else spillway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerChoice {
    Auto,
    Kind(WorkerKind),
}

/// `spillway.container.monitor`: what to do when the executor and its workers together hold
/// more resident memory than the container (`Layout::container_bytes`).
///
/// The default is `warn`. YARN's own default (`yarn.nodemanager.pmem-check-enabled=true`) kills,
/// but spillway's process is not a JVM: its RSS lacks the metaspace, code cache and GC
/// structures a real executor carries and includes the harness's own buffers, so the number it
/// would kill on is not YARN's. Warning shows the overrun with YARN's message without failing
/// runs that real Spark might finish; `kill` reproduces the YARN kill on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitorPolicy {
    #[default]
    Off,
    Warn,
    Kill,
}

impl MonitorPolicy {
    pub fn parse(s: &str) -> Option<MonitorPolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "false" => Some(MonitorPolicy::Off),
            "warn" => Some(MonitorPolicy::Warn),
            "kill" => Some(MonitorPolicy::Kill),
            _ => None,
        }
    }
}

/// A failure of a task that ran in a worker, or of the worker itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExternalError {
    /// An exception inside the worker (`MemoryError` past `RLIMIT_AS`): the task fails, the
    /// worker exits and is replaced.
    #[error(
        "{exception} in Python worker (pid {pid}, {context})\nAn exception was thrown from the \
         Python worker. Please see the stack trace below.\n{traceback}"
    )]
    PythonException {
        pid: u32,
        exception: String,
        context: String,
        traceback: String,
    },
    /// The worker died without an answer.
    #[error(
        "Python worker exited unexpectedly (crashed): pid {pid} {exit} during {during}; last \
         stderr: {stderr_tail}"
    )]
    WorkerCrashed {
        pid: u32,
        exit: String,
        during: String,
        stderr_tail: String,
    },
    #[error("cannot start a {kind} worker: {reason}")]
    WorkerStart { kind: &'static str, reason: String },
    #[error("protocol error from worker pid {pid}: {reason}; the worker was killed")]
    Protocol { pid: u32, reason: String },
    /// The container was killed (`spillway.container.monitor=kill`): every task still running
    /// fails as Spark's do when their executor is lost.
    #[error(
        "ExecutorLostFailure (executor exited caused by one of the running tasks) Reason: {reason}"
    )]
    ExecutorLost { reason: String },
    #[error("verification failed: {detail}")]
    Verification { detail: String },
}

impl ExternalError {
    /// The Spark error class the report names.
    pub fn error_class(&self) -> &'static str {
        match self {
            ExternalError::PythonException { .. } => "PythonException",
            ExternalError::WorkerCrashed { .. }
            | ExternalError::WorkerStart { .. }
            | ExternalError::Protocol { .. } => "SparkException",
            ExternalError::ExecutorLost { .. } => "ExecutorLostFailure",
            ExternalError::Verification { .. } => "VERIFICATION_FAILED",
        }
    }
}

/// Resident bytes of process `pid` from `/proc/<pid>/statm` (0 if it is gone).
pub fn pid_rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * crate::region::os_page_size())
}

/// `VmHWM` (peak resident) of process `pid` in bytes (0 if it is gone).
pub fn pid_peak_rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("VmHWM:"))?;
            line[6..].split_whitespace().next()?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// YARN's `TraditionalBinaryPrefix.long2String(n, "B", 1)`: "1.4 GB", "700 MB".
pub fn yarn_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TB", 1 << 40),
        ("GB", 1 << 30),
        ("MB", 1 << 20),
        ("KB", 1 << 10),
    ];
    for (name, unit) in UNITS {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.1} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yarn_sizes() {
        assert_eq!(yarn_size(1408 << 20), "1.4 GB");
        assert_eq!(yarn_size(2 << 30), "2 GB");
        assert_eq!(yarn_size(700 << 20), "700 MB");
        assert_eq!(yarn_size(5), "5 B");
    }

    #[test]
    fn policies() {
        assert_eq!(MonitorPolicy::parse("KILL"), Some(MonitorPolicy::Kill));
        assert_eq!(MonitorPolicy::parse("nope"), None);
    }
}
