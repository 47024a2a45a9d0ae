//! `spillway run --cgroup[=SIZE]`: the supervisor. It stays outside the limit, creates a fresh
//! child memory cgroup whose limit is the container size (`Layout::container_bytes`, docs/spark-model.md §11)
//! or SIZE, re-executes the spillway binary inside it (placed there between fork and exec, so
//! every byte the executor touches is charged to it), samples the cgroup while it waits, and
//! tells a normal exit from a kernel OOM kill (SIGKILL **and** `oom_kill` rose) from a kill of
//! unknown cause. The cgroup is always removed (docs/reliability.md, "Reproducing an OOM kill").
//!
//! The YARN / Kubernetes counterpart is the NodeManager or kubelet: it launches the executor in
//! a container of `heap + overhead + off-heap + pyspark` MiB and reports exit 137 / `OOMKilled`
//! (docs/spark-model.md §11.4) when the kernel kills it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::conf::format_mib;
use crate::pressure::{CgroupError, CgroupStats, CgroupVersion, ChildCgroup, OwnCgroup, Psi};

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ChildOutcome {
    /// It exited by itself with this code.
    Exited { code: i32 },
    /// SIGKILL while the cgroup's `oom_kill` counter rose: the kernel's memory cgroup OOM killer.
    OomKilled,
    /// Killed by a signal, with no OOM kill counted: cause unknown (an operator, another tool).
    Killed { signal: i32 },
}

impl ChildOutcome {
    /// The shell's exit status of the child (137 = 128 + SIGKILL).
    pub fn shell_status(&self) -> i32 {
        match *self {
            ChildOutcome::Exited { code } => code,
            ChildOutcome::OomKilled => 128 + crate::region::sys::SIGKILL,
            ChildOutcome::Killed { signal } => 128 + signal,
        }
    }
}

/// The `cgroup` object of report.json.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupReport {
    pub version: CgroupVersion,
    /// The memory cgroup directory the executor ran in (removed since).
    pub path: String,
    /// Its `memory.pressure` (the cgroup2 tree on a hybrid host), if any.
    pub pressure_path: Option<String>,
    pub limit_bytes: u64,
    /// Where the limit came from: `container` (the layout) or `--cgroup=SIZE`.
    pub limit_source: String,
    /// The kernel's peak (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`), else the sampled
    /// maximum.
    pub peak_usage_bytes: u64,
    pub sampled_peak_usage_bytes: u64,
    pub oom_kill: u64,
    /// PSI totals of the executor's cgroup (µs stalled; the cgroup was new, so since start).
    pub psi_some_total_us: u64,
    pub psi_full_total_us: u64,
    pub events: std::collections::BTreeMap<String, u64>,
    pub stat: std::collections::BTreeMap<String, u64>,
    pub samples: u64,
    pub child_pid: u32,
    pub outcome: ChildOutcome,
    /// The shell's view of the child's exit (137 for SIGKILL).
    pub exit_status: i32,
}

/// The result of a supervised child.
#[derive(Debug, Clone)]
pub struct Supervised {
    pub outcome: ChildOutcome,
    pub report: CgroupReport,
}

/// What stops a cgroup run.
#[derive(Debug, thiserror::Error)]
pub enum CgroupRunError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("cannot start the executor child {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for the executor child: {0}")]
    Wait(#[source] std::io::Error),
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A spawned child that is killed and reaped if the supervisor returns early (an error or a
/// panic), before the cgroup guard removes the cgroup.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `exe args` inside a new child memory cgroup of `own` limited to `limit_bytes`, samples
/// it every `interval` until the child ends, and classifies the end. Call it from a thread
/// that lives until it returns: the child's `PR_SET_PDEATHSIG` fires when the spawning thread
/// exits. The cgroup is removed before this returns, whatever happens.
pub fn supervise(
    own: &OwnCgroup,
    limit_bytes: u64,
    limit_source: &str,
    exe: &Path,
    args: &[OsString],
    interval: Duration,
) -> Result<Supervised, CgroupRunError> {
    crate::pressure::panic_on_oom()?;
    let cgroup = ChildCgroup::create(own)?;
    let limit = cgroup.set_limit(limit_bytes)?;
    let before = cgroup.stats();

    // A second signal (crate::interrupt) removes the cgroup (and its PSI twin) after the child.
    let _cgroup_cleanup: Vec<crate::interrupt::Registration> =
        std::iter::once(cgroup.memory_dir().to_path_buf())
            .chain(cgroup.unified_dir().map(Path::to_path_buf))
            .map(|d| crate::interrupt::register_cgroup(&d))
            .collect();

    let mut cmd = Command::new(exe);
    cmd.args(args);
    // Its own process group: a Ctrl-C at the terminal reaches the supervisor only, which
    // forwards it once; the child would otherwise see it twice and exit at once.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    crate::region::sys::confine_child(&mut cmd, cgroup.open_procs_files()?, 1000);
    let child = cmd.spawn().map_err(|source| CgroupRunError::Spawn {
        exe: exe.to_path_buf(),
        source,
    })?;
    let child_pid = child.id();
    let mut guard = ChildGuard(Some(child));
    // A second signal forwards itself to the child (which then cleans up and exits at once),
    // and kills it after a grace period.
    let _child_cleanup = crate::interrupt::register_child(child_pid, true);
    let mut forwarded = false;

    let mut samples = 0u64;
    let mut sampled_peak = 0u64;
    let mut last_psi: Option<Psi> = None;
    let status: ExitStatus = loop {
        let c = guard.0.as_mut().expect("the child is held until reaped");
        if let Some(st) = c.try_wait().map_err(CgroupRunError::Wait)? {
            break st;
        }
        // The first SIGINT/SIGTERM/SIGHUP goes to the child, which stops its run, writes its
        // report and exits 128 + n; the supervisor keeps sampling until then.
        if !forwarded && let Some(signal) = crate::interrupt::interrupted() {
            forwarded = true;
            let _ = crate::region::sys::send_signal(child_pid, signal.number());
        }
        let s = cgroup.stats();
        samples += 1;
        sampled_peak = sampled_peak.max(s.usage_bytes);
        if s.psi.is_some() {
            last_psi = s.psi;
        }
        let next = Instant::now() + interval;
        // A short sleep, not a blocking wait: the counters are sampled while the child runs.
        while Instant::now() < next {
            std::thread::sleep(Duration::from_millis(5).min(interval));
            if c.try_wait().map_err(CgroupRunError::Wait)?.is_some() {
                break;
            }
        }
    };
    guard.0 = None; // reaped
    // Read the leaf's counters before it is removed (the parent keeps only hierarchical sums).
    let after: CgroupStats = cgroup.stats();
    let outcome = classify(status, before.oom_kill, after.oom_kill);
    let psi = after.psi.or(last_psi).unwrap_or_default();
    let report = CgroupReport {
        version: cgroup.version(),
        path: cgroup.memory_dir().display().to_string(),
        pressure_path: cgroup
            .as_own()
            .pressure_file
            .map(|p| p.display().to_string()),
        limit_bytes: limit,
        limit_source: limit_source.to_string(),
        peak_usage_bytes: after.peak_bytes.unwrap_or(sampled_peak).max(sampled_peak),
        sampled_peak_usage_bytes: sampled_peak,
        oom_kill: after.oom_kill,
        psi_some_total_us: psi.some_total_us,
        psi_full_total_us: psi.full_total_us,
        events: after.events,
        stat: after.stat,
        samples,
        child_pid,
        outcome,
        exit_status: outcome.shell_status(),
    };
    cgroup.remove()?;
    Ok(Supervised { outcome, report })
}

/// SIGKILL + a rise of `oom_kill` is the kernel's OOM killer; SIGKILL alone is not proof.
pub fn classify(status: ExitStatus, oom_kill_before: u64, oom_kill_after: u64) -> ChildOutcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ChildOutcome::Exited { code },
        (None, Some(sig))
            if sig == crate::region::sys::SIGKILL && oom_kill_after > oom_kill_before =>
        {
            ChildOutcome::OomKilled
        }
        (None, Some(signal)) => ChildOutcome::Killed { signal },
        (None, None) => ChildOutcome::Killed { signal: 0 },
    }
}

/// The one-line explanation of a container's end, with its numbers.
pub fn explain(r: &CgroupReport) -> String {
    match r.outcome {
        ChildOutcome::OomKilled => format!(
            "container killed by the kernel OOM killer: memory cgroup limit {} bytes ({} MiB), peak {} bytes ({} MiB); exit 137; consider boosting spark.executor.memoryOverhead (or lowering what the executor holds outside its heap)",
            r.limit_bytes,
            format_mib(r.limit_bytes),
            r.peak_usage_bytes,
            format_mib(r.peak_usage_bytes)
        ),
        ChildOutcome::Killed { signal } => format!(
            "container killed by signal {signal} of unknown cause (the cgroup's oom_kill counter did not rise, so not the OOM killer): memory cgroup limit {} bytes, peak {} bytes; exit {}",
            r.limit_bytes, r.peak_usage_bytes, r.exit_status
        ),
        ChildOutcome::Exited { code } => format!(
            "container exited with code {code}: memory cgroup limit {} bytes ({} MiB), peak {} bytes ({} MiB), oom_kill {}",
            r.limit_bytes,
            format_mib(r.limit_bytes),
            r.peak_usage_bytes,
            format_mib(r.peak_usage_bytes),
            r.oom_kill
        ),
    }
}

/// What the caller of [`finish_report`] needs for a report the child could not write.
pub struct ReportContext<'a> {
    pub out_dir: &'a Path,
    pub scenario_name: &'a str,
    pub scenario_description: &'a str,
    pub scenario_source: String,
    pub seed: u64,
    pub layout: Value,
}

/// Adds the `cgroup` object to the child's report.json, or, when the child was killed, writes a
/// report.json itself (the child's may be missing) with a `failures[]` entry
/// (`CONTAINER_OOM_KILLED` or `EXECUTOR_LOST`) carrying the numbers. Returns the report written.
pub fn finish_report(ctx: &ReportContext, sup: &Supervised) -> Result<Value, CgroupRunError> {
    let path = ctx.out_dir.join("report.json");
    let existing: Option<Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut report = match (existing, sup.outcome) {
        (Some(v @ Value::Object(_)), _) => v,
        (_, _) => json!({
            "spillway_version": env!("CARGO_PKG_VERSION"),
            "scenario": {
                "name": ctx.scenario_name,
                "description": ctx.scenario_description,
                "source": ctx.scenario_source,
                "seed": ctx.seed,
            },
            "complete": false,
            "layout": ctx.layout,
            "stages": [],
            "tasks": [],
            "failures": [],
        }),
    };
    let cgroup = serde_json::to_value(&sup.report).expect("the cgroup report serializes");
    let obj = report.as_object_mut().expect("an object");
    obj.insert("cgroup".into(), cgroup);
    let error = match sup.outcome {
        ChildOutcome::Exited { .. } => None,
        ChildOutcome::OomKilled => Some("CONTAINER_OOM_KILLED"),
        ChildOutcome::Killed { .. } => Some("EXECUTOR_LOST"),
    };
    if let Some(error) = error {
        let entry = json!({
            // Not a task's failure: the whole executor died (Spark: ExecutorLostFailure).
            "stageId": Value::Null,
            "taskId": Value::Null,
            "error": error,
            "message": explain(&sup.report),
            "limitBytes": sup.report.limit_bytes,
            "peakUsageBytes": sup.report.peak_usage_bytes,
            "oomKill": sup.report.oom_kill,
            "exitStatus": sup.report.exit_status,
        });
        match obj.get_mut("failures") {
            Some(Value::Array(a)) => a.push(entry),
            _ => {
                obj.insert("failures".into(), Value::Array(vec![entry]));
            }
        }
    }
    let bytes = serde_json::to_vec_pretty(&report).expect("a JSON value serializes");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| CgroupRunError::Output {
            path: path.clone(),
            source,
        })?;
    Ok(report)
}

/// The child's command line: the supervisor's own arguments with the hidden `--cgroup-child`
/// flag (and `--out DIR` when the supervisor chose the directory) inserted right after the
/// `run` subcommand, so a trailing `--` or positional cannot swallow them.
pub fn child_args(own_args: &[OsString], out_dir: Option<&Path>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(own_args.len() + 3);
    let mut inserted = false;
    for a in own_args {
        out.push(a.clone());
        if !inserted && a == "run" {
            out.push("--cgroup-child".into());
            if let Some(d) = out_dir {
                out.push("--out".into());
                out.push(d.as_os_str().to_owned());
            }
            inserted = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn sigkill_is_an_oom_kill_only_when_the_counter_rose() {
        let killed = ExitStatus::from_raw(9);
        assert_eq!(classify(killed, 0, 1), ChildOutcome::OomKilled);
        assert_eq!(classify(killed, 1, 1), ChildOutcome::Killed { signal: 9 });
        assert_eq!(
            classify(ExitStatus::from_raw(6), 0, 1),
            ChildOutcome::Killed { signal: 6 }
        );
        assert_eq!(
            classify(ExitStatus::from_raw(2 << 8), 0, 1),
            ChildOutcome::Exited { code: 2 }
        );
        assert_eq!(ChildOutcome::OomKilled.shell_status(), 137);
    }

    #[test]
    fn child_args_go_after_the_subcommand() {
        let a: Vec<OsString> = ["run", "x.toml", "--cgroup=1g", "--", "y"]
            .iter()
            .map(OsString::from)
            .collect();
        let c = child_args(&a, Some(Path::new("/o")));
        assert_eq!(
            c,
            [
                "run",
                "--cgroup-child",
                "--out",
                "/o",
                "x.toml",
                "--cgroup=1g",
                "--",
                "y"
            ]
            .map(OsString::from)
        );
    }
}
