//! `spillway run --cgroup[=SIZE]`: the supervisor. It stays outside the limit, creates a fresh
//! child memory cgroup whose limit is the container size (`Layout::container_bytes`, docs/spark-model.md §11)
//! or SIZE, re-executes the spillway binary inside it (placed there between fork and exec, so
//! every byte the executor touches is charged to it), samples the cgroup while it waits, and
//! tells a normal exit from a kernel OOM kill (SIGKILL **and** `oom_kill` rose) from a kill of
//! unknown cause. The cgroup is always removed (docs/reliability.md, "Reproducing an OOM kill").
//!
//! [`run`] is the whole of `spillway run --cgroup` short of parsing and printing: validate the
//! input (bad input exits 2 and creates no cgroup), prepare the report directory, supervise the
//! child and finish its report; the binary prints what it returns and exits with
//! [`CgroupRun::exit_status`].
//!
//! The YARN / Kubernetes counterpart is the NodeManager or kubelet: it launches the executor in
//! a container of `heap + overhead + off-heap + pyspark` MiB and reports exit 137 / `OOMKilled`
//! (docs/spark-model.md §11.4) when the kernel kills it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::conf::{ByteUnit, ConfError, byte_string_as, format_mib};
use crate::exit::Exit;
use crate::layout::{Layout, LayoutJson};
pub use crate::pressure::report::{CgroupReport, ChildOutcome};
use crate::pressure::{CgroupError, CgroupStats, ChildCgroup, OwnCgroup, Psi};
use crate::run::{FailureReport, Report, RunOptions, ScenarioInfo, write_report};
use crate::scenario::{Scenario, ScenarioError};

/// The result of a supervised child.
#[derive(Debug, Clone)]
pub struct Supervised {
    pub outcome: ChildOutcome,
    pub report: CgroupReport,
}

/// What stops a cgroup run. The first three are bad input (exit 2), found before any cgroup
/// exists; the rest are failures of the machine (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CgroupRunError {
    /// The scenario cannot be read or parsed, or its records do not fit the layout.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The configuration (properties file, scenario `[conf]`, `--conf`, `--cgroup=SIZE`).
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// `--cgroup=SIZE` parsed, but to nothing a limit can be.
    #[error("--cgroup={value}: a memory limit must be positive")]
    BadLimit { value: String },
    /// The report directory could not be created.
    #[error("cannot create {path}: {source}", path = path.display())]
    OutDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path of this executable, to run it again as the child, is unknown.
    #[error("current_exe: {0}")]
    CurrentExe(#[source] std::io::Error),
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

impl Exit for CgroupRunError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        use crate::exit::ExitStatus as S;
        match self {
            CgroupRunError::Scenario(e) => e.exit_status(),
            CgroupRunError::Conf(e) => e.exit_status(),
            CgroupRunError::BadLimit { .. } => S::BadInput,
            CgroupRunError::Cgroup(e) => e.exit_status(),
            CgroupRunError::OutDir { .. }
            | CgroupRunError::CurrentExe(_)
            | CgroupRunError::Spawn { .. }
            | CgroupRunError::Wait(_)
            | CgroupRunError::Output { .. } => S::Failure,
        }
    }
}

/// The parsed command line of `spillway run SCENARIO --cgroup[=SIZE]`.
#[derive(Debug, Clone, Default)]
pub struct CgroupRunArgs {
    /// A built-in scenario name or the path of a TOML scenario.
    pub scenario: String,
    /// `--properties-file`.
    pub properties_file: Option<PathBuf>,
    /// `--conf KEY=VALUE`, in order.
    pub conf_args: Vec<String>,
    /// `--system-memory`, in bytes.
    pub system_memory: Option<i64>,
    /// `--out`; `None`: a new directory under `./spillway-runs/`, passed on to the child.
    pub out_dir: Option<PathBuf>,
    /// `--cgroup=SIZE` (a Spark byte string); `None`: the layout's container size.
    pub limit: Option<String>,
    /// The supervisor's own arguments (after the program name): the child runs the same command
    /// with `--cgroup-child` added (see [`child_args`]).
    pub own_args: Vec<OsString>,
}

/// What the supervisor found of the child's report.json once the child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildReport {
    /// The child wrote its report; the supervisor extended it.
    Written,
    /// There was no report.json: the child ended before writing one.
    Missing,
    /// report.json was there but not a report (cut short, not JSON, not readable); `reason`
    /// says why. The supervisor wrote a stand-in over it.
    Malformed { reason: String },
}

impl ChildReport {
    /// Whether the report written is a stand-in rather than the child's own.
    pub fn is_stand_in(&self) -> bool {
        !matches!(self, ChildReport::Written)
    }
}

/// A finished `run --cgroup`: how the child ended and the report written.
#[derive(Debug, Clone)]
pub struct CgroupRun {
    pub supervised: Supervised,
    /// report.json as written in `out_dir`.
    pub report: Report,
    /// Whether the child left its own report (a child that exited without one is a failure).
    pub child_report: ChildReport,
    pub out_dir: PathBuf,
}

impl CgroupRun {
    /// The supervisor's exit status: the child's own when it exited and left its report (its
    /// codes are the same table; one outside it is a failure), 1 when it exited without a
    /// readable report (whatever its code: the run's result is lost), 3 for a kernel OOM
    /// kill, 1 for a kill of unknown cause.
    pub fn exit_status(&self) -> crate::exit::ExitStatus {
        use crate::exit::ExitStatus as S;
        match self.supervised.outcome {
            ChildOutcome::Exited { .. } if self.child_report.is_stand_in() => S::Failure,
            ChildOutcome::Exited { code } => S::from_code(code).unwrap_or(S::Failure),
            ChildOutcome::OomKilled => S::ContainerOomKilled,
            ChildOutcome::Killed { .. } => S::Failure,
        }
    }

    /// The one line printed after the child's own summary when it exited by itself.
    pub fn summary_line(&self) -> Option<String> {
        let r = &self.supervised.report;
        matches!(self.supervised.outcome, ChildOutcome::Exited { .. }).then(|| {
            format!(
                "cgroup {:?} {}: limit {} MiB ({}), peak {} MiB, oom_kill {}, PSI some {} µs full {} µs",
                r.version,
                r.path,
                format_mib(r.limit_bytes),
                r.limit_source,
                format_mib(r.peak_usage_bytes),
                r.oom_kill,
                r.psi_some_total_us,
                r.psi_full_total_us
            )
        })
    }

    /// The error lines (for stderr) when the child was killed, or exited without a readable
    /// report: the error class, the explanation with its numbers, and where the report is.
    pub fn failure_text(&self) -> Option<String> {
        let (class, explanation) = match self.supervised.outcome {
            ChildOutcome::Exited { code } if self.child_report.is_stand_in() => (
                REPORT_MISSING,
                missing_report_message(code, &self.child_report),
            ),
            ChildOutcome::Exited { .. } => return None,
            ChildOutcome::OomKilled => ("CONTAINER_OOM_KILLED", explain(&self.supervised.report)),
            ChildOutcome::Killed { .. } => ("EXECUTOR_LOST", explain(&self.supervised.report)),
        };
        Some(format!(
            "error: [{class}] {explanation}\nreport: {}\n",
            self.out_dir.join("report.json").display()
        ))
    }
}

/// `spillway run --cgroup[=SIZE]`, start to end. Everything the user gave is validated before a
/// cgroup exists: bad input creates nothing. Call it from the main thread (see [`supervise`]).
pub fn run(args: &CgroupRunArgs) -> Result<CgroupRun, CgroupRunError> {
    let scenario = Scenario::load(&args.scenario)?;
    let opts = RunOptions {
        properties_file: args.properties_file.clone(),
        conf_args: args.conf_args.clone(),
        system_memory: args.system_memory,
        out_dir: args.out_dir.clone(),
        progress: false,
    };
    let conf = crate::run::scenario_conf(&scenario, &opts)?;
    let layout = Layout::from_conf(&conf, args.system_memory)?;
    crate::run::validate_sizes(&scenario, &layout)?;
    // The child's executor reads the codec at start; a bad one is bad input here, before a
    // cgroup exists, as it is there.
    crate::codec::Compression::from_conf(&conf)?;
    let (limit_bytes, limit_source) = match &args.limit {
        Some(size) => {
            let v =
                byte_string_as(size, ByteUnit::Byte).map_err(|source| ConfError::ByteString {
                    key: "--cgroup".into(),
                    value: size.clone(),
                    source,
                })?;
            if v <= 0 {
                return Err(CgroupRunError::BadLimit {
                    value: size.clone(),
                });
            }
            (v as u64, format!("--cgroup={size}"))
        }
        None => (layout.container_bytes() as u64, "container".to_string()),
    };
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| crate::run::default_out_dir(&scenario.name));
    std::fs::create_dir_all(&out_dir).map_err(|source| CgroupRunError::OutDir {
        path: out_dir.clone(),
        source,
    })?;
    // A report left by an earlier run must not be taken for this child's.
    let _ = std::fs::remove_file(out_dir.join("report.json"));

    let own = OwnCgroup::discover().ok_or(CgroupError::NoCgroup)?;
    // The machine as the run found it: detected after the child, its load would be the run's.
    let machine = crate::machine::MachineInfo::detect();
    let exe = std::env::current_exe().map_err(CgroupRunError::CurrentExe)?;
    let child_args = child_args(
        &args.own_args,
        args.out_dir.is_none().then_some(out_dir.as_path()),
    );
    let supervised = supervise(
        &own,
        limit_bytes,
        &limit_source,
        &exe,
        &child_args,
        Duration::from_millis(50),
    )?;

    let ctx = ReportContext {
        out_dir: &out_dir,
        scenario: &scenario,
        layout: layout.to_json(),
        machine,
    };
    let (report, child_report) = finish_report(&ctx, &supervised)?;
    Ok(CgroupRun {
        supervised,
        report,
        child_report,
        out_dir,
    })
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
    crate::proc_ctl::confine_child(&mut cmd, cgroup.open_procs_files()?, 1000);
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
            let _ = crate::proc_ctl::send_signal(child_pid, signal.number());
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
            if sig == crate::proc_ctl::SIGKILL && oom_kill_after > oom_kill_before =>
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

/// The `failures[]` error of a child that exited by itself without a readable report.
pub const REPORT_MISSING: &str = "REPORT_MISSING";

/// What the caller of [`finish_report`] needs for a report the child could not write.
pub struct ReportContext<'a> {
    pub out_dir: &'a Path,
    pub scenario: &'a Scenario,
    pub layout: LayoutJson,
    /// Detected before the child started, so its load is the machine's, not the run's.
    pub machine: crate::machine::MachineInfo,
}

/// Reads the child's report.json, telling a missing one from one that is not a report.
fn read_child_report(path: &Path) -> (Option<Report>, ChildReport) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, ChildReport::Missing),
        Err(e) => {
            return (
                None,
                ChildReport::Malformed {
                    reason: format!("cannot read it: {e}"),
                },
            );
        }
    };
    match serde_json::from_slice::<Report>(&bytes) {
        Ok(r) => (Some(r), ChildReport::Written),
        Err(e) => (
            None,
            ChildReport::Malformed {
                reason: format!("not a report: {e}"),
            },
        ),
    }
}

/// The message of a `REPORT_MISSING` failure.
fn missing_report_message(code: i32, child_report: &ChildReport) -> String {
    match child_report {
        ChildReport::Malformed { reason } => format!(
            "the executor exited with code {code} and left a report.json that cannot be used ({reason}); this report is the supervisor's stand-in"
        ),
        _ => format!(
            "the executor exited with code {code} without writing report.json; this report is the supervisor's stand-in"
        ),
    }
}

/// Adds the `cgroup` section to the child's report.json, or, when the child ended without a
/// readable one, writes an incomplete stand-in itself (a malformed one is logged and replaced).
/// A killed child adds a `failures[]` entry (`CONTAINER_OOM_KILLED` or `EXECUTOR_LOST`, no
/// stage or task: the executor died) carrying the numbers; a child that exited by itself
/// without a readable report adds `REPORT_MISSING` with its exit status. The report is the
/// run's one typed `Report`, written by the same atomic writer.
pub fn finish_report(
    ctx: &ReportContext,
    sup: &Supervised,
) -> Result<(Report, ChildReport), CgroupRunError> {
    let path = ctx.out_dir.join("report.json");
    let (child, child_report) = read_child_report(&path);
    if let ChildReport::Malformed { reason } = &child_report {
        crate::log::warn(
            "cgroup",
            &format!(
                "the executor's {} is unusable ({reason}); writing a stand-in report",
                path.display()
            ),
        );
    }
    let mut report = child.unwrap_or_else(|| Report {
        spillway_version: env!("CARGO_PKG_VERSION").into(),
        machine: ctx.machine.clone(),
        scenario: ScenarioInfo::of(ctx.scenario),
        complete: false,
        interrupted: crate::interrupt::interrupted().map(|s| s.name().to_string()),
        layout: ctx.layout.clone(),
        ..Report::default()
    });
    report.cgroup = Some(sup.report.clone());
    let failure = match sup.outcome {
        ChildOutcome::Exited { code } if child_report.is_stand_in() => Some(FailureReport {
            stage_id: None,
            task_id: None,
            error: REPORT_MISSING.into(),
            message: missing_report_message(code, &child_report),
            limit_bytes: None,
            peak_usage_bytes: None,
            oom_kill: None,
            exit_status: Some(sup.report.exit_status),
        }),
        ChildOutcome::Exited { .. } => None,
        ChildOutcome::OomKilled | ChildOutcome::Killed { .. } => Some(FailureReport {
            // Not a task's failure: the whole executor died (Spark: ExecutorLostFailure).
            stage_id: None,
            task_id: None,
            error: if sup.outcome == ChildOutcome::OomKilled {
                "CONTAINER_OOM_KILLED"
            } else {
                "EXECUTOR_LOST"
            }
            .into(),
            message: explain(&sup.report),
            limit_bytes: Some(sup.report.limit_bytes),
            peak_usage_bytes: Some(sup.report.peak_usage_bytes),
            oom_kill: Some(sup.report.oom_kill),
            exit_status: Some(sup.report.exit_status),
        }),
    };
    if let Some(failure) = failure {
        report.complete = false;
        report.failures.push(failure);
    }
    write_report(&report, ctx.out_dir).map_err(|source| CgroupRunError::Output { path, source })?;
    Ok((report, child_report))
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

    fn supervised(outcome: ChildOutcome) -> Supervised {
        Supervised {
            outcome,
            report: CgroupReport {
                version: crate::pressure::CgroupVersion::V2,
                path: "/sys/fs/cgroup/test/spillway-1-1".into(),
                pressure_path: None,
                limit_bytes: 400 << 20,
                limit_source: "container".into(),
                peak_usage_bytes: 300 << 20,
                sampled_peak_usage_bytes: 290 << 20,
                oom_kill: u64::from(outcome == ChildOutcome::OomKilled),
                psi_some_total_us: 0,
                psi_full_total_us: 0,
                events: Default::default(),
                stat: Default::default(),
                samples: 3,
                child_pid: 12345,
                outcome,
                exit_status: outcome.shell_status(),
            },
        }
    }

    /// Runs `finish_report` over `out_dir` as `run` would, returning the `CgroupRun`.
    fn finish(out_dir: &Path, outcome: ChildOutcome) -> CgroupRun {
        let scenario = Scenario::load("default").expect("the built-in default scenario");
        let machine = crate::machine::MachineInfo {
            cpu_arch: "detected before the child".into(),
            ..Default::default()
        };
        let ctx = ReportContext {
            out_dir,
            scenario: &scenario,
            layout: LayoutJson::default(),
            machine,
        };
        let supervised = supervised(outcome);
        let (report, child_report) = finish_report(&ctx, &supervised).expect("report written");
        let written: Report =
            serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap())
                .expect("the written report parses");
        assert_eq!(written.failures.len(), report.failures.len());
        assert_eq!(written.machine, report.machine);
        CgroupRun {
            supervised,
            report,
            child_report,
            out_dir: out_dir.to_path_buf(),
        }
    }

    #[test]
    fn a_child_that_exits_without_a_report_is_a_failure_with_a_stand_in() {
        let dir = tempfile::tempdir().unwrap();
        let run = finish(dir.path(), ChildOutcome::Exited { code: 0 });
        assert_eq!(run.child_report, ChildReport::Missing);
        assert!(!run.report.complete);
        assert_eq!(run.report.machine.cpu_arch, "detected before the child");
        assert_eq!(run.report.scenario.name, "default");
        let [f] = run.report.failures.as_slice() else {
            panic!("one failure: {:?}", run.report.failures);
        };
        assert_eq!(f.error, REPORT_MISSING);
        assert_eq!((f.stage_id, f.task_id), (None, None));
        assert_eq!(f.exit_status, Some(0));
        assert!(
            f.message
                .contains("exited with code 0 without writing report.json"),
            "{}",
            f.message
        );
        assert!(run.report.cgroup.is_some());
        // Exit 0 from the child is not the supervisor's: the run's result is lost.
        assert_eq!(run.exit_status(), crate::exit::ExitStatus::Failure);
        let text = run.failure_text().expect("an error line");
        assert!(text.starts_with("error: [REPORT_MISSING]"), "{text}");
    }

    #[test]
    fn a_malformed_child_report_is_logged_and_replaced() {
        crate::log::init();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("report.json"), b"{\"complete\": tr").unwrap();
        let before = crate::log::warnings_logged();
        let run = finish(dir.path(), ChildOutcome::Exited { code: 4 });
        let ChildReport::Malformed { reason } = &run.child_report else {
            panic!("malformed, got {:?}", run.child_report);
        };
        assert!(reason.starts_with("not a report:"), "{reason}");
        assert!(
            crate::log::warnings_logged() > before,
            "a warning was logged"
        );
        assert_eq!(run.report.failures.len(), 1);
        assert_eq!(run.report.failures[0].error, REPORT_MISSING);
        assert!(
            run.report.failures[0].message.contains("cannot be used"),
            "{}",
            run.report.failures[0].message
        );
        assert_eq!(run.exit_status(), crate::exit::ExitStatus::Failure);
    }

    #[test]
    fn the_childs_own_report_is_extended_and_its_exit_kept() {
        let dir = tempfile::tempdir().unwrap();
        let own = Report {
            spillway_version: "child".into(),
            complete: true,
            stages_finished: vec![0, 1],
            ..Report::default()
        };
        write_report(&own, dir.path()).unwrap();
        let run = finish(dir.path(), ChildOutcome::Exited { code: 4 });
        assert_eq!(run.child_report, ChildReport::Written);
        assert_eq!(run.report.spillway_version, "child");
        assert!(run.report.complete);
        assert_eq!(run.report.stages_finished, [0, 1]);
        assert!(run.report.failures.is_empty());
        assert_eq!(
            run.report.cgroup.as_ref().map(|c| c.limit_bytes),
            Some(400 << 20)
        );
        assert_eq!(
            run.exit_status(),
            crate::exit::ExitStatus::UndeclaredTaskFailures
        );
        assert!(run.failure_text().is_none());
    }

    #[test]
    fn a_killed_child_without_a_report_is_its_kill_not_a_missing_report() {
        let dir = tempfile::tempdir().unwrap();
        let run = finish(dir.path(), ChildOutcome::OomKilled);
        assert_eq!(run.child_report, ChildReport::Missing);
        let errors: Vec<&str> = run
            .report
            .failures
            .iter()
            .map(|f| f.error.as_str())
            .collect();
        assert_eq!(errors, ["CONTAINER_OOM_KILLED"]);
        assert_eq!(run.report.failures[0].oom_kill, Some(1));
        assert_eq!(
            run.exit_status(),
            crate::exit::ExitStatus::ContainerOomKilled
        );
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
