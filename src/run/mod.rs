//! `spillway run`: build the executor of a scenario, run its stages, sample the timeline, and
//! write the report (docs/report.md "report.json").

mod explore;
mod plot;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::conf::{ConfError, ConfSource, SparkConf, format_mib, keys};
use crate::executor::{Executor, ExecutorError};
use crate::layout::Layout;
use crate::scenario::{Expect, Scenario, ScenarioError, ScenarioStage};
use crate::scheduler::{TaskFailure, run_stage_scheduled};
use crate::spill::RecordDigest;
use crate::stage::{RunContext, StageTaskRun};
use crate::timeline::{Sample, Sampler};

pub use explore::{
    Exploration, Outcome, RunOutcome, StageTiming, ValueCount, Varying, explore, explore_table,
    outcome_numbers, schedule_conf_args, summarize,
};
pub use report::{
    FailureReport, GapReport, MemoryReport, RddReport, Report, ScenarioInfo, ScheduleReport,
    StageReport, TaskReport, TimingReport, Verification, summary_table, unexpected_outcomes,
    write_report,
};

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `--properties-file`, lowest precedence.
    pub properties_file: Option<PathBuf>,
    /// `--conf KEY=VALUE` flags, highest precedence.
    pub conf_args: Vec<String>,
    /// `--system-memory`.
    pub system_memory: Option<i64>,
    /// Where report.json, timeline.csv and the plots go; `None`: a new folder under
    /// `./spillway-runs/`.
    pub out_dir: Option<PathBuf>,
    /// Draw progress bars (only on a terminal).
    pub progress: bool,
}

/// What stops a run before it produces a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    #[error("cannot write the report to {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    /// Whether the run failed on bad input (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            RunError::Scenario(_)
                | RunError::Conf(_)
                | RunError::Executor(ExecutorError::Conf(_))
                | RunError::Executor(ExecutorError::LocalDirs(_))
        )
    }
}

/// Builds the configuration of a scenario run: properties file, then the scenario's `[conf]`,
/// then `--conf` flags.
pub fn scenario_conf(scenario: &Scenario, opts: &RunOptions) -> Result<SparkConf, ConfError> {
    let mut conf = SparkConf::new();
    if let Some(p) = &opts.properties_file {
        conf.load_properties_file(p)?;
    }
    let origin = scenario
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("built-in:{}", scenario.name)));
    for (k, v) in &scenario.conf {
        conf.set_from(k, v, ConfSource::Scenario(origin.clone()));
    }
    for arg in &opts.conf_args {
        conf.apply_conf_arg(arg)?;
    }
    Ok(conf)
}

/// Runs a scenario and writes its report; returns the report (also when tasks failed: a
/// reproduced failure is a result).
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<(Report, PathBuf), RunError> {
    // The report counts this run's warnings, not the process's (a library user may run several).
    let warnings_before = crate::log::warnings_logged();
    let conf = scenario_conf(scenario, opts)?;
    for w in conf.warnings() {
        crate::log::warn("SparkConf", &w);
    }
    let layout = Layout::from_conf(&conf, opts.system_memory)?;
    validate_sizes(scenario, &layout)?;
    // The shuffle keys (codec names included) are input too: checked before anything runs.
    crate::shuffle::writer::WriteParams::from_conf(&conf)?;
    crate::shuffle::fetch::FetchParams::from_conf(&conf)?;
    // Layout::from_conf validated every key against its limits (10..=1000 ms here).
    let interval_ms = conf.get_long(keys::TIMELINE_INTERVAL_MS)? as u64;
    let exception_on_leak = conf.get_bool(keys::EXCEPTION_ON_MEMORY_LEAK)?;

    // Read before the run loads the machine, so the load average is the machine's own.
    let machine = crate::machine::MachineInfo::detect();
    let baseline_rss = crate::region::process_rss_bytes().unwrap_or(0);
    // What a run killed before it could clean up left in the local directories (crate::sweep).
    crate::sweep::sweep_local_dirs(&crate::storage::disk::DiskBlockManager::configured_roots(
        &conf,
    ));
    let executor = Executor::start(&layout, &conf)?;
    let start = Instant::now();
    let pool = crate::external::WorkerPool::new(crate::external::PoolConfig::from_conf(
        &conf,
        &layout,
        executor
            .local_dirs()
            .dirs()
            .iter()
            .map(|d| d.to_path_buf())
            .collect(),
    )?);
    // Only once all input is known good: bad input (exit 2) writes nothing.
    let out_dir = match &opts.out_dir {
        Some(d) => d.clone(),
        None => default_out_dir(&scenario.name),
    };
    std::fs::create_dir_all(&out_dir).map_err(|source| RunError::Output {
        path: out_dir.clone(),
        source,
    })?;
    let sampler =
        Sampler::new(&executor, Duration::from_millis(interval_ms), start).with_workers(&pool);
    let mut ctx = RunContext {
        executor: &executor,
        workers: &pool,
        conf: &conf,
        seed: scenario.seed,
        rdds: BTreeMap::new(),
        shuffles: BTreeMap::new(),
    };
    let mut done: Vec<StageRun> = Vec::new();
    let planned: u64 = scenario
        .stages
        .iter()
        .map(|s| s.stage.input_bytes(&ctx))
        .fold(0, u64::saturating_add);
    if planned >= LONG_RUN_BYTES {
        eprintln!(
            "spillway: this run generates about {:.1} GiB of records (more if it spills or \
             recomputes); Ctrl-C stops it cleanly, removing its files, workers and cgroup",
            planned as f64 / (1u64 << 30) as f64
        );
    }

    let monitor_stop = std::sync::atomic::AtomicBool::new(false);
    let samples = std::thread::scope(|scope| {
        let handle = scope.spawn(|| sampler.run());
        let monitor = scope.spawn(|| {
            pool.monitor(&monitor_stop, Duration::from_millis(interval_ms), || {
                let s = crate::timeline::sample(&executor, None, None, start, -1);
                s.accounted() + s.pooled_free_pages
            })
        });
        for (i, stage) in scenario.stages.iter().enumerate() {
            // A container killed by the monitor is an executor lost, and a signal stops the
            // run (crate::interrupt): nothing more runs.
            if pool.is_killed() || crate::interrupt::interrupted().is_some() {
                break;
            }
            sampler.stage.store(i as u32, Ordering::Relaxed);
            let progress = opts
                .progress
                .then(|| progress_bar(i as u32, scenario.stages.len(), stage));
            done.push(run_one_stage(
                &mut ctx,
                i as u32,
                stage,
                exception_on_leak,
                progress.as_ref(),
            ));
            sampler.stage.store(u32::MAX, Ordering::Relaxed);
        }
        pool.shutdown();
        monitor_stop.store(true, std::sync::atomic::Ordering::Release);
        monitor.thread().unpark();
        let _ = monitor.join();
        sampler.stop();
        handle.thread().unpark();
        handle.join().unwrap_or_default()
    });
    let wall = start.elapsed();
    let external = pool.report();

    let report = report::build(report::Inputs {
        warnings_logged: crate::log::warnings_logged().saturating_sub(warnings_before),
        machine,
        scenario,
        conf: &conf,
        layout: &layout,
        executor: &executor,
        stages: &done,
        rdds: &ctx.rdds,
        samples: &samples,
        baseline_rss,
        wall,
        interval_ms,
        cgroup: sampler.cgroup(),
        external,
        plots: &plot::FILES,
    });
    drop(ctx);
    drop(pool);
    drop(executor);
    let output = |source| RunError::Output {
        path: out_dir.clone(),
        source,
    };
    report::write(&report, &samples, &out_dir).map_err(output)?;
    // The plots are drawn from the written report, as a step after it. If they cannot be, the
    // report is rewritten without them, so it never names a file that is not there.
    if let Err(e) = plot::draw_all(&report, &samples, &out_dir) {
        let mut report = report;
        report.plots.clear();
        report::write_report(&report, &out_dir).map_err(output)?;
        return Err(output(std::io::Error::other(format!(
            "drawing the plots: {e}"
        ))));
    }
    Ok((report, out_dir))
}

/// Runs one stage: sets it up against the run so far, runs its tasks on the executor's
/// threads, and lets it record what later stages need.
fn run_one_stage(
    ctx: &mut RunContext,
    stage_id: u32,
    stage: &ScenarioStage,
    exception_on_leak: bool,
    progress: Option<&Progress>,
) -> StageRun {
    let executor = ctx.executor;
    let storage_before = executor.block_manager().counters();
    let wakeups_before = executor.memory_manager().contended_wakeups();
    let started = Instant::now();
    let input_bytes = stage.stage.input_bytes(ctx);
    let tasks = stage.stage.start(ctx, stage_id);
    if let Some(p) = progress {
        p.start(tasks.count, input_bytes);
    }
    let (runs, schedule) = {
        let shared: &RunContext = ctx;
        run_stage_scheduled(
            executor,
            stage_id,
            tasks.count,
            exception_on_leak,
            |task_ctx| (tasks.body)(shared, task_ctx),
            |run| {
                if let Some(p) = progress {
                    p.task_done(run, executor);
                }
            },
        )
    };
    drop(tasks);
    if let Some(p) = progress {
        p.finish();
    }
    executor.trim_page_pools();
    stage.stage.finish(ctx, &runs);
    let kind_fields = stage.stage.report_fields(&runs);
    StageRun {
        stage_id,
        kind: stage.kind.name,
        label: stage.stage.label(),
        expect: stage.expect,
        params: stage.params.clone(),
        runs,
        wall: started.elapsed(),
        storage_before,
        storage_after: executor.block_manager().counters(),
        kind_fields,
        schedule,
        contended_wakeups: executor.memory_manager().contended_wakeups() - wakeups_before,
    }
}

/// A stage's progress bar: tasks done, and the bytes those tasks generated.
struct Progress {
    bar: ProgressBar,
    bytes_per_task: AtomicU64,
    bytes_done: AtomicU64,
}

fn progress_bar(stage_id: u32, stages: usize, stage: &ScenarioStage) -> Progress {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>22} [{bar:30}] {pos}/{len} tasks {elapsed:>4} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!(
        "stage {}/{} {}",
        stage_id + 1,
        stages,
        stage.kind.name
    ));
    Progress {
        bar,
        bytes_per_task: AtomicU64::new(0),
        bytes_done: AtomicU64::new(0),
    }
}

impl Progress {
    fn start(&self, tasks: u32, input_bytes: u64) {
        self.bar.set_length(tasks as u64);
        self.bytes_per_task
            .store(input_bytes / u64::from(tasks.max(1)), Ordering::Relaxed);
        self.bar.enable_steady_tick(Duration::from_millis(100));
    }

    fn task_done(&self, run: &StageTaskRun, executor: &Executor) {
        self.bar.inc(1);
        let done = self.bytes_done.fetch_add(
            self.bytes_per_task.load(Ordering::Relaxed),
            Ordering::Relaxed,
        ) + self.bytes_per_task.load(Ordering::Relaxed);
        let total = self.bytes_per_task.load(Ordering::Relaxed) * self.bar.length().unwrap_or(0);
        let (_, spilled) = executor.metrics().spills();
        self.bar.set_message(format!(
            "{}/{} MiB, spilled {} MiB",
            format_mib(done),
            format_mib(total),
            format_mib(spilled)
        ));
        if run.result.is_err() {
            self.bar
                .println(format!("task {} failed", run.task_attempt_id));
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// From this many generated bytes on, a run says before it starts that it will take a while.
pub const LONG_RUN_BYTES: u64 = 4 << 30;

/// The largest record a stage may ask for: the largest default Tungsten page (64 MiB). Each
/// record is generated in a buffer outside the heap model, and a sorter needs it in one page.
pub const MAX_RECORD_BYTES: u64 = 64 << 20;

/// Checks every size a scenario will allocate or write against the layout before anything runs
/// (bad input, exit 2): records no larger than [`MAX_RECORD_BYTES`] nor the heap.
pub fn validate_sizes(scenario: &Scenario, layout: &Layout) -> Result<(), ScenarioError> {
    let limit = MAX_RECORD_BYTES.min(layout.system_memory.max(0) as u64);
    for (index, stage) in scenario.stages.iter().enumerate() {
        let Some(record_bytes) = stage.stage.record_bytes() else {
            continue;
        };
        if record_bytes > limit {
            return Err(ScenarioError::BadValue {
                origin: scenario.name.clone(),
                index,
                key: "record_bytes".into(),
                value: record_bytes.to_string(),
                reason: format!(
                    "a record may be at most {limit} bytes (the largest Tungsten page, and no \
                     more than the heap)"
                ),
            });
        }
    }
    Ok(())
}

/// A new folder under `./spillway-runs/` named after the time and the scenario.
pub fn default_out_dir(name: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, mo, d, h, mi, s) = civil_from_unix(secs);
    let base = Path::new("spillway-runs");
    let stem = format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{name}");
    let mut dir = base.join(&stem);
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = base.join(format!("{stem}-{n}"));
    }
    dir
}

/// UTC calendar time of a Unix timestamp (Howard Hinnant's days-from-civil, inverted).
fn civil_from_unix(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// One finished stage: its tasks and their outputs.
pub(crate) struct StageRun {
    pub stage_id: u32,
    pub kind: &'static str,
    pub label: String,
    pub expect: Expect,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub runs: Vec<StageTaskRun>,
    pub wall: Duration,
    pub storage_before: crate::storage::block_manager::StorageCounters,
    pub storage_after: crate::storage::block_manager::StorageCounters,
    /// The kind's own report numbers.
    pub kind_fields: serde_json::Map<String, serde_json::Value>,
    /// The stage's deterministic schedule (`None` free-running).
    pub schedule: Option<crate::scheduler::StageSchedule>,
    /// Releases during the stage that woke two or more tasks blocked for execution memory.
    pub contended_wakeups: u64,
}

/// Whether a task failed, and its error class and message.
pub(crate) fn failure_of(run: &StageTaskRun) -> Option<(String, String)> {
    match &run.result {
        Ok(_) => None,
        Err(TaskFailure::Task(e)) => Some((e.class.clone(), e.message.clone())),
        Err(TaskFailure::Leak(e)) => Some(("MEMORY_LEAK".into(), e.to_string())),
        Err(TaskFailure::Panicked(m)) => Some(("PANIC".into(), m.clone())),
        Err(f @ (TaskFailure::Interrupted(_) | TaskFailure::NotLaunched(_))) => {
            Some(("TaskKilled".into(), f.to_string()))
        }
    }
}

/// Digest of all successful outputs of a stage.
pub(crate) fn stage_digests(runs: &[StageTaskRun]) -> (RecordDigest, RecordDigest) {
    runs.iter().filter_map(|r| r.result.as_ref().ok()).fold(
        (RecordDigest::default(), RecordDigest::default()),
        |(a, b), o| (a.combine(o.digest_in), b.combine(o.digest_out)),
    )
}

/// The samples' peak of a field.
pub(crate) fn peak(samples: &[Sample], f: impl Fn(&Sample) -> u64) -> u64 {
    samples.iter().map(f).max().unwrap_or(0)
}

impl crate::exit::Exit for RunError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        if self.is_bad_input() {
            crate::exit::ExitStatus::BadInput
        } else {
            crate::exit::ExitStatus::Failure
        }
    }
}
