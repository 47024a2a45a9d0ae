//! The worker pool (PySpark's `PythonWorkerFactory` with `spark.python.worker.reuse=true`):
//! starting, checking out and retiring worker processes. The numbers it measures are judged by
//! [`super::overhead`] and reported through [`super::report`].
//!
//! A task checks out an idle worker of its kind or starts one; at most one worker per running
//! task, so at most `spark.executor.cores` per kind. After a good task the worker goes back to
//! the idle list; after a failure it exits (as PySpark's does) and the next task starts a new
//! one. The pool tracks every live worker's pid so that the monitor can read its RSS and, on a
//! container kill, kill it while a task thread is blocked reading from it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use super::overhead::EXIT_KILLED_EXCEEDED_PMEM;
use super::overhead::OverheadMonitor;
use super::protocol::{Reply, Request, read_frame, write_frame};
use super::report::{ContainerKill, ExternalReport, Gathered, PythonStageInfo, WorkerRecord};
use super::{
    ExternalError, MonitorPolicy, WorkerChoice, WorkerKind, pid_peak_rss_bytes, pid_rss_bytes,
};
use crate::conf::{ConfError, SparkConf, keys};
use crate::layout::Layout;

/// The embedded Python worker, written to the private local directory at first use.
const PYTHON_WORKER_SCRIPT: &str = include_str!("python_worker.py");
/// Lines of a worker's stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 40;

/// What the pool needs from the configuration and the executor.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// `PYSPARK_EXECUTOR_MEMORY_MB` = `spark.executor.pyspark.memory` MiB / cores, only when set.
    pub pyspark_memory_mb_per_worker: Option<i64>,
    /// `spark.python.worker.memory` in MiB (the ExternalMerger's spill threshold).
    pub python_worker_memory_mib: i64,
    /// `SPARK_LOCAL_DIRS` for the workers: spillway's private local directories.
    pub local_dirs: Vec<PathBuf>,
    /// The spillway binary (`spillway worker`): `SPILLWAY_BIN`, else this executable.
    pub spillway_exe: PathBuf,
    /// `spark.pyspark.python` / `PYSPARK_PYTHON`, else `python3`.
    pub python: String,
    pub policy: MonitorPolicy,
    pub container_bytes: u64,
    pub overhead_bytes: u64,
    pub pyspark_bytes: u64,
    /// `spark.executor.cores`: workers per kind at most.
    pub cores: i64,
}

impl PoolConfig {
    /// Reads the keys of docs/spark-model.md §11 and §13 and `spillway.container.monitor`.
    pub fn from_conf(
        conf: &SparkConf,
        layout: &Layout,
        local_dirs: Vec<PathBuf>,
    ) -> Result<PoolConfig, ConfError> {
        let pyspark_mib = conf.size(keys::PYSPARK_EXECUTOR_MEMORY)?;
        let cores = layout.cores.max(1) as i64;
        let monitor = conf.get_str(keys::CONTAINER_MONITOR);
        let policy = MonitorPolicy::parse(monitor).ok_or_else(|| ConfError::CheckFailed {
            key: keys::CONTAINER_MONITOR.into(),
            value: monitor.into(),
            message: "spillway.container.monitor must be one of off, warn, kill",
        })?;
        let python = conf
            .get(keys::PYSPARK_PYTHON)
            .map(str::to_string)
            .or_else(|| std::env::var("PYSPARK_PYTHON").ok())
            .unwrap_or_else(|| "python3".into());
        Ok(PoolConfig {
            pyspark_memory_mb_per_worker: pyspark_mib.map(|m| m / cores),
            python_worker_memory_mib: conf.get_python_memory_mib(keys::PYTHON_WORKER_MEMORY)?,
            local_dirs,
            spillway_exe: std::env::var_os("SPILLWAY_BIN")
                .map(PathBuf::from)
                .or_else(|| std::env::current_exe().ok())
                .unwrap_or_else(|| PathBuf::from("spillway")),
            python,
            policy,
            container_bytes: layout.container_bytes().max(0) as u64,
            overhead_bytes: (layout.overhead_mib << 20).max(0) as u64,
            pyspark_bytes: (layout.pyspark_mib << 20).max(0) as u64,
            cores,
        })
    }
}

/// A resolved Python interpreter.
#[derive(Debug, Clone)]
struct PythonExe {
    path: PathBuf,
    version: String,
}

/// The live part of a worker that the monitor may kill while a task reads from it.
struct WorkerHandle {
    pid: u32,
    child: Mutex<Child>,
    /// A second SIGINT/SIGTERM/SIGHUP kills the worker before the process exits.
    _cleanup: crate::interrupt::Registration,
}

/// One worker process (a guard: dropping it reaps the process).
pub struct Worker {
    handle: Arc<WorkerHandle>,
    kind: WorkerKind,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
    record: WorkerRecord,
}

/// What the pool shares with its workers' guards.
struct Shared {
    live: Mutex<Vec<Arc<WorkerHandle>>>,
    records: Mutex<Vec<WorkerRecord>>,
}

/// The pool of workers of one run, with its overhead account and container monitor.
pub struct WorkerPool {
    cfg: PoolConfig,
    idle: Mutex<Vec<Worker>>,
    shared: Arc<Shared>,
    python: OnceLock<Option<PythonExe>>,
    script: OnceLock<Result<PathBuf, String>>,
    monitor: OverheadMonitor,
    started: AtomicU64,
    stages: Mutex<Vec<PythonStageInfo>>,
}

/// What a task got back from a worker.
#[derive(Debug, Clone)]
pub struct TaskResult {
    pub reply: Reply,
    pub pid: u32,
    /// The worker's RSS while it still held the task's output.
    pub worker_rss_bytes: u64,
}

impl WorkerPool {
    pub fn new(cfg: PoolConfig) -> WorkerPool {
        WorkerPool {
            monitor: OverheadMonitor::new(cfg.policy, cfg.container_bytes),
            cfg,
            idle: Mutex::new(Vec::new()),
            shared: Arc::new(Shared {
                live: Mutex::new(Vec::new()),
                records: Mutex::new(Vec::new()),
            }),
            python: OnceLock::new(),
            script: OnceLock::new(),
            started: AtomicU64::new(0),
            stages: Mutex::new(Vec::new()),
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    fn python(&self) -> Option<&PythonExe> {
        self.python
            .get_or_init(|| {
                let out = Command::new(&self.cfg.python)
                    .args([
                        "-c",
                        "import sys; print(sys.executable); print(sys.version.split()[0])",
                    ])
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .ok()?;
                if !out.status.success() {
                    return None;
                }
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let mut lines = text.lines();
                let path = PathBuf::from(lines.next()?.trim());
                let version = lines.next().unwrap_or("").trim().to_string();
                path.is_file().then_some(PythonExe { path, version })
            })
            .as_ref()
    }

    /// Decides a stage's worker kind (python3 when asked for and present; `auto` falls back to
    /// spillway) and records the choice for the report.
    pub fn choose(&self, stage_id: u32, choice: WorkerChoice) -> Result<WorkerKind, ExternalError> {
        let (kind, reason) = match (choice, self.python()) {
            (WorkerChoice::Kind(WorkerKind::Spillway), _) => {
                (WorkerKind::Spillway, "worker = \"spillway\"".to_string())
            }
            (WorkerChoice::Kind(WorkerKind::Python3), Some(p)) => (
                WorkerKind::Python3,
                format!(
                    "worker = \"python3\": {} (Python {})",
                    p.path.display(),
                    p.version
                ),
            ),
            (WorkerChoice::Kind(WorkerKind::Python3), None) => {
                return Err(ExternalError::WorkerStart {
                    kind: "python3",
                    reason: format!("no working interpreter '{}'", self.cfg.python),
                });
            }
            (WorkerChoice::Auto, Some(p)) => (
                WorkerKind::Python3,
                format!("auto: found {} (Python {})", p.path.display(), p.version),
            ),
            (WorkerChoice::Auto, None) => (
                WorkerKind::Spillway,
                format!(
                    "auto: no working '{}', using spillway worker",
                    self.cfg.python
                ),
            ),
        };
        lock(&self.stages).push(PythonStageInfo {
            stage_id,
            worker: kind,
            reason,
        });
        Ok(kind)
    }

    fn script_path(&self) -> Result<&Path, ExternalError> {
        self.script
            .get_or_init(|| {
                let dir = self
                    .cfg
                    .local_dirs
                    .first()
                    .ok_or("no local directory")?
                    .join("python");
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let path = dir.join("spillway_worker.py");
                std::fs::write(&path, PYTHON_WORKER_SCRIPT).map_err(|e| e.to_string())?;
                Ok(path)
            })
            .as_deref()
            .map_err(|reason| ExternalError::WorkerStart {
                kind: "python3",
                reason: reason.clone(),
            })
    }

    /// The kill, if the container was killed.
    pub fn container_kill(&self) -> Option<ContainerKill> {
        self.monitor.kill()
    }

    fn lost(&self) -> ExternalError {
        ExternalError::ExecutorLost {
            reason: self
                .container_kill()
                .map_or_else(|| "executor lost".into(), |k| k.message),
        }
    }

    fn spawn(&self, kind: WorkerKind) -> Result<Worker, ExternalError> {
        let start_err = |reason: String| ExternalError::WorkerStart {
            kind: kind.name(),
            reason,
        };
        let mut cmd = match kind {
            WorkerKind::Spillway => {
                let mut c = Command::new(&self.cfg.spillway_exe);
                c.arg("worker");
                c
            }
            WorkerKind::Python3 => {
                let py = self
                    .python()
                    .ok_or_else(|| start_err(format!("no '{}'", self.cfg.python)))?;
                let mut c = Command::new(&py.path);
                c.arg(self.script_path()?);
                c
            }
        };
        let dirs: Vec<String> = self
            .cfg
            .local_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        // Its own process group: a Ctrl-C at the terminal reaches the executor only, which
        // ends its workers itself (crate::interrupt) instead of finding them dead mid-task.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("SPARK_LOCAL_DIRS", dirs.join(","))
            .env("SPARK_REUSE_WORKER", "1")
            .env_remove("PYSPARK_EXECUTOR_MEMORY_MB");
        // PythonRunner sets it only when spark.executor.pyspark.memory is set (docs/spark-model.md §13.1).
        if let Some(mb) = self.cfg.pyspark_memory_mb_per_worker {
            cmd.env("PYSPARK_EXECUTOR_MEMORY_MB", mb.to_string());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| start_err(format!("{}: {e}", cmd.get_program().to_string_lossy())))?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        let component = format!("PythonWorker[{pid}]");
        let stderr_thread = std::thread::Builder::new()
            .name(format!("worker-stderr-{pid}"))
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    crate::log::info(&component, &line);
                    let mut t = lock(&tail);
                    if t.len() == STDERR_TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            })
            .ok();
        let handle = Arc::new(WorkerHandle {
            pid,
            child: Mutex::new(child),
            _cleanup: crate::interrupt::register_child(pid, false),
        });
        lock(&self.shared.live).push(Arc::clone(&handle));
        self.started.fetch_add(1, Ordering::Relaxed);
        let mut worker = Worker {
            handle,
            kind,
            stdin,
            stdout: BufReader::new(stdout),
            stderr_tail,
            stderr_thread,
            shared: Arc::clone(&self.shared),
            record: WorkerRecord::started(pid, kind),
        };
        match read_frame::<Reply>(&mut worker.stdout) {
            Ok(Reply::Hello {
                pid: hello_pid,
                kind: hello_kind,
                memory_limit_mb,
                rlimit_as_soft,
                rlimit_set,
                warning,
                ..
            }) if hello_pid == pid && hello_kind == kind.name() => {
                worker.record.memory_limit_mb = memory_limit_mb;
                worker.record.rlimit_as_soft_bytes = rlimit_as_soft;
                worker.record.rlimit_set = rlimit_set;
                if let Some(w) = &warning {
                    crate::log::warn(&format!("PythonWorker[{pid}]"), w);
                }
                worker.record.rlimit_warning = warning;
                Ok(worker)
            }
            Ok(other) => {
                worker.record.failed_with = Some("protocol".into());
                Err(ExternalError::Protocol {
                    pid,
                    reason: format!(
                        "expected hello from {} pid {pid}, got {other:?}",
                        kind.name()
                    ),
                })
            }
            Err(e) => {
                worker.record.failed_with = Some("start".into());
                let tail = worker.finish();
                Err(start_err(format!(
                    "worker pid {pid} {} before hello ({e}): {tail}",
                    worker.record.exit
                )))
            }
        }
    }

    fn checkout(&self, kind: WorkerKind) -> Result<Worker, ExternalError> {
        if self.monitor.is_killed() {
            return Err(self.lost());
        }
        let idle = {
            let mut idle = lock(&self.idle);
            idle.iter()
                .position(|w| w.kind == kind)
                .map(|i| idle.swap_remove(i))
        };
        match idle {
            Some(w) => Ok(w),
            None => self.spawn(kind),
        }
    }

    /// Runs one request on a worker of `kind`, as `PythonRunner` does: send, read the result,
    /// measure the worker (and check the container) while it still holds the task's memory,
    /// then `END_OF_STREAM` and back to the idle list.
    pub fn run(
        &self,
        kind: WorkerKind,
        request: &Request,
        what: &str,
    ) -> Result<TaskResult, ExternalError> {
        let task = match request {
            Request::Udf { task, .. } | Request::Aggregate { task, .. } => *task,
            Request::EndOfStream => 0,
        };
        let mut w = self.checkout(kind)?;
        let pid = w.handle.pid;
        let sent = w
            .stdin
            .as_mut()
            .ok_or(super::protocol::ProtocolError::Eof)
            .and_then(|s| write_frame(s, request));
        let reply = sent.and_then(|()| read_frame::<Reply>(&mut w.stdout));
        match reply {
            Ok(reply @ (Reply::UdfDone { task: t, .. } | Reply::AggregateDone { task: t, .. }))
                if t == task =>
            {
                let worker_rss_bytes = pid_rss_bytes(pid);
                w.record.peak_rss_bytes = w.record.peak_rss_bytes.max(pid_peak_rss_bytes(pid));
                // The NodeManager's pmem check sees the worker at its largest here.
                self.check_container();
                let eos = w
                    .stdin
                    .as_mut()
                    .ok_or(super::protocol::ProtocolError::Eof)
                    .and_then(|s| write_frame(s, &Request::EndOfStream))
                    .and_then(|()| read_frame::<Reply>(&mut w.stdout));
                match eos {
                    Ok(Reply::EndOfStream) => {
                        w.record.tasks += 1;
                        lock(&self.idle).push(w);
                        Ok(TaskResult {
                            reply,
                            pid,
                            worker_rss_bytes,
                        })
                    }
                    other => Err(self.broken(w, what, other.err().map(|e| e.to_string()))),
                }
            }
            Ok(Reply::Error {
                class,
                message,
                traceback,
                ..
            }) => {
                w.record.failed_with = Some(class.clone());
                let mut context = if message.is_empty() {
                    what.to_string()
                } else {
                    format!("{what}: {message}")
                };
                match w.record.rlimit_as_soft_bytes {
                    Some(limit) if w.record.memory_limit_mb > 0 => context.push_str(&format!(
                        "; RLIMIT_AS {limit} bytes from PYSPARK_EXECUTOR_MEMORY_MB={} \
                         (spark.executor.pyspark.memory {} MiB / {} cores)",
                        w.record.memory_limit_mb,
                        self.cfg.pyspark_bytes >> 20,
                        self.cfg.cores
                    )),
                    Some(limit) => context.push_str(&format!("; RLIMIT_AS {limit} bytes")),
                    None => context.push_str("; RLIMIT_AS unlimited"),
                }
                drop(w);
                Err(ExternalError::PythonException {
                    pid,
                    exception: class,
                    context,
                    traceback,
                })
            }
            Ok(other) => {
                w.record.failed_with = Some("protocol".into());
                drop(w);
                Err(ExternalError::Protocol {
                    pid,
                    reason: format!("unexpected reply to task {task}: {other:?}"),
                })
            }
            Err(e) => Err(self.broken(w, what, Some(e.to_string()))),
        }
    }

    fn broken(&self, mut w: Worker, what: &str, detail: Option<String>) -> ExternalError {
        let pid = w.handle.pid;
        w.record.failed_with = Some("crashed".into());
        let tail = w.finish();
        if self.monitor.is_killed() {
            return self.lost();
        }
        ExternalError::WorkerCrashed {
            pid,
            exit: w.record.exit.clone(),
            during: format!("{what} ({})", detail.unwrap_or_default()),
            stderr_tail: tail,
        }
    }

    /// Sum of the live workers' resident memory.
    pub fn workers_rss(&self) -> u64 {
        let pids: Vec<u32> = lock(&self.shared.live).iter().map(|h| h.pid).collect();
        pids.into_iter().map(pid_rss_bytes).sum()
    }

    /// One pmem check (YARN's `ContainersMonitorImpl`): the executor's and its workers'
    /// resident memory against the container; then what `spillway.container.monitor` says.
    pub fn check_container(&self) {
        self.check_container_with(None);
    }

    /// A check that also accounts the executor's memory beyond its touched heap pages.
    pub fn check_container_with(&self, heap_touched_bytes: Option<u64>) {
        let executor = crate::region::process_rss_bytes_fast().unwrap_or(0);
        let workers = self.workers_rss();
        if self.monitor.observe(executor, workers, heap_touched_bytes) {
            self.kill_all();
        }
    }

    /// The workers' resident memory at the last container check (for the timeline).
    pub fn last_workers_rss(&self) -> u64 {
        self.monitor.last_workers_rss()
    }

    /// SIGKILLs every live worker (the container's process tree); their guards reap them.
    fn kill_all(&self) {
        let live: Vec<Arc<WorkerHandle>> = lock(&self.shared.live).clone();
        for h in live {
            let _ = lock(&h.child).kill();
        }
        // Idle workers have no task to notice: reap them now.
        let idle = std::mem::take(&mut *lock(&self.idle));
        drop(idle);
    }

    /// Samples until `stop` is set (the thread is unparked to stop promptly).
    /// After a signal ([`crate::interrupt`]) it kills the live workers once, so that a task
    /// blocked on a worker's reply stops at once (it fails, and is reported as killed).
    pub fn monitor(&self, stop: &AtomicBool, interval: Duration, heap_touched: impl Fn() -> u64) {
        let mut interrupt_seen = false;
        while !stop.load(Ordering::Acquire) {
            if !interrupt_seen && crate::interrupt::interrupted().is_some() {
                interrupt_seen = true;
                self.kill_all();
            }
            self.check_container_with(Some(heap_touched()));
            std::thread::park_timeout(interval);
        }
    }

    /// Whether the container was killed.
    pub fn is_killed(&self) -> bool {
        self.monitor.is_killed()
    }

    /// Ends every idle worker (EOF on stdin, then reap).
    pub fn shutdown(&self) {
        let idle = std::mem::take(&mut *lock(&self.idle));
        drop(idle);
    }

    /// The pids of workers still alive (for tests and clean-up checks).
    pub fn live_pids(&self) -> Vec<u32> {
        lock(&self.shared.live).iter().map(|h| h.pid).collect()
    }

    /// The overhead account and the workers' lives.
    pub fn report(&self) -> ExternalReport {
        ExternalReport::build(
            &self.cfg,
            Gathered {
                python: self
                    .python
                    .get()
                    .and_then(|p| p.as_ref())
                    .map(|p| format!("{} (Python {})", p.path.display(), p.version)),
                python_stages: lock(&self.stages).clone(),
                workers_started: self.started.load(Ordering::Relaxed),
                workers: lock(&self.shared.records).clone(),
                peaks: self.monitor.peaks(),
                kill: self.monitor.kill(),
            },
        )
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shutdown();
        // Workers still checked out belong to task guards, which reap them; anything left in
        // `live` here is killed so that no process outlives the run.
        let live: Vec<Arc<WorkerHandle>> = lock(&self.shared.live).clone();
        for h in live {
            let mut c = lock(&h.child);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Worker {
    /// Closes stdin, waits up to ~1 s for the worker to exit, kills it otherwise, reaps it,
    /// and returns the tail of its stderr. Idempotent.
    fn finish(&mut self) -> String {
        if !self.record.exit.is_empty() {
            return self.tail();
        }
        let pid = self.handle.pid;
        self.record.peak_rss_bytes = self.record.peak_rss_bytes.max(pid_peak_rss_bytes(pid));
        self.stdin = None;
        let status = {
            let mut child = lock(&self.handle.child);
            let mut status = None;
            for _ in 0..100 {
                match child.try_wait() {
                    Ok(Some(s)) => {
                        status = Some(s);
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    Err(_) => break,
                }
            }
            match status {
                Some(s) => Some(s),
                None => {
                    let _ = child.kill();
                    child.wait().ok()
                }
            }
        };
        self.record.exit = match status {
            Some(s) => exit_text(s),
            None => "unknown".into(),
        };
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        lock(&self.shared.live).retain(|h| h.pid != pid);
        self.tail()
    }

    fn tail(&self) -> String {
        lock(&self.stderr_tail)
            .iter()
            .rev()
            .take(5)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.finish();
        lock(&self.shared.records).push(self.record.clone());
    }
}

fn exit_text(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status: {c}"),
        (None, Some(9)) => "signal: 9 (SIGKILL)".into(),
        (None, Some(6)) => "signal: 6 (SIGABRT)".into(),
        (None, Some(sig)) => format!("signal: {sig}"),
        _ => s.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
