//! `spillway run`: build the executor of a scenario, run its stages, sample the timeline, and
//! write the report (docs/report.md "report.json").

mod plot;
mod report;
pub mod stages;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::conf::{ConfError, ConfSource, SparkConf, format_mib, keys};
use crate::executor::{Executor, ExecutorError};
use crate::layout::Layout;
use crate::scenario::{Scenario, ScenarioError, StageSpec};
use crate::scheduler::{TaskFailure, TaskRun, run_stage};
use crate::spill::RecordDigest;
use crate::timeline::{Sample, Sampler};

pub use report::{
    FailureReport, GapReport, MemoryReport, RddReport, Report, StageReport, TaskReport,
    Verification, summary_table,
};
use stages::{CachedRdd, TaskError, TaskOutput};

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
    let conf = scenario_conf(scenario, opts)?;
    for w in conf.warnings() {
        crate::log::warn("SparkConf", &w);
    }
    let layout = Layout::from_conf(&conf, opts.system_memory)?;
    validate_sizes(scenario, &layout)?;
    let out_dir = match &opts.out_dir {
        Some(d) => d.clone(),
        None => default_out_dir(&scenario.name),
    };
    std::fs::create_dir_all(&out_dir).map_err(|source| RunError::Output {
        path: out_dir.clone(),
        source,
    })?;
    let interval_ms = conf
        .long(keys::TIMELINE_INTERVAL_MS)?
        .unwrap_or(20)
        .clamp(10, 1000) as u64;
    let exception_on_leak = conf.bool(keys::EXCEPTION_ON_MEMORY_LEAK)?.unwrap_or(false);

    let baseline_rss = crate::region::process_rss_bytes().unwrap_or(0);
    // What a run killed before it could clean up left in the local directories (crate::sweep).
    crate::sweep::sweep_local_dirs(&crate::storage::disk::DiskBlockManager::configured_roots(
        &conf,
    ));
    let executor = Executor::start(&layout, &conf)?;
    let start = Instant::now();
    let sampler = Sampler::new(&executor, Duration::from_millis(interval_ms), start);
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
    let mut ctx = RunState::new(scenario, &executor, exception_on_leak, opts.progress, &pool);

    let monitor_stop = std::sync::atomic::AtomicBool::new(false);
    let samples = std::thread::scope(|scope| {
        let handle = scope.spawn(|| sampler.run());
        let monitor = scope.spawn(|| {
            pool.monitor(&monitor_stop, Duration::from_millis(interval_ms), || {
                let s = crate::timeline::sample(&executor, None, start, -1);
                s.accounted() + s.pooled_free_pages
            })
        });
        for (i, stage) in scenario.stages.iter().enumerate() {
            // A container killed by the monitor is an executor lost, and a signal stops the
            // run (crate::interrupt): nothing more runs.
            if pool.is_killed() || crate::interrupt::interrupted().is_some() {
                break;
            }
            sampler
                .stage
                .store(i as u32, std::sync::atomic::Ordering::Relaxed);
            ctx.run_stage(i as u32, stage);
            sampler
                .stage
                .store(u32::MAX, std::sync::atomic::Ordering::Relaxed);
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
        scenario,
        conf: &conf,
        layout: &layout,
        executor: &executor,
        state: &ctx,
        samples: &samples,
        baseline_rss,
        wall,
        interval_ms,
        cgroup: sampler.cgroup(),
        external,
    });
    drop(ctx);
    drop(pool);
    drop(executor);
    report::write(&report, &samples, &out_dir).map_err(|source| RunError::Output {
        path: out_dir.clone(),
        source,
    })?;
    Ok((report, out_dir))
}

/// The largest record a stage may ask for: the largest default Tungsten page (64 MiB). Each
/// record is generated in a buffer outside the heap model, and a sorter needs it in one page.
pub const MAX_RECORD_BYTES: u64 = 64 << 20;

/// Checks every size a scenario will allocate or write against the layout before anything runs
/// (bad input, exit 2): records no larger than [`MAX_RECORD_BYTES`] nor the heap.
pub fn validate_sizes(scenario: &Scenario, layout: &Layout) -> Result<(), ScenarioError> {
    let limit = MAX_RECORD_BYTES.min(layout.system_memory.max(0) as u64);
    for (index, stage) in scenario.stages.iter().enumerate() {
        let record_bytes = match stage {
            StageSpec::Cache { record_bytes, .. }
            | StageSpec::Broadcast { record_bytes, .. }
            | StageSpec::Sort { record_bytes, .. }
            | StageSpec::Aggregate { record_bytes, .. } => *record_bytes,
            _ => continue,
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
    pub spec: StageSpec,
    pub runs: Vec<TaskRun<TaskOutput, TaskError>>,
    pub wall: Duration,
    pub storage_before: crate::storage::block_manager::StorageCounters,
    pub storage_after: crate::storage::block_manager::StorageCounters,
    pub user_peak_bytes: u64,
}

/// The run so far: stages done and RDDs cached.
pub(crate) struct RunState<'a> {
    pub scenario: &'a Scenario,
    pub executor: &'a Executor,
    pub exception_on_leak: bool,
    pub progress: bool,
    pub stages: Vec<StageRun>,
    pub rdds: BTreeMap<u32, CachedRdd>,
    /// Worker processes, the overhead account and the container monitor.
    pub external: &'a crate::external::WorkerPool,
}

impl<'a> RunState<'a> {
    fn new(
        scenario: &'a Scenario,
        executor: &'a Executor,
        exception_on_leak: bool,
        progress: bool,
        external: &'a crate::external::WorkerPool,
    ) -> Self {
        RunState {
            scenario,
            executor,
            exception_on_leak,
            progress,
            stages: Vec::new(),
            rdds: BTreeMap::new(),
            external,
        }
    }

    fn run_stage(&mut self, stage_id: u32, spec: &StageSpec) {
        let seed = self.scenario.seed;
        let executor = self.executor;
        let num_tasks = match spec {
            StageSpec::Cache { partitions, .. } => *partitions,
            StageSpec::Scan { rdd } => self.rdds.get(rdd).map_or(0, |r| r.partitions),
            StageSpec::Unpersist { .. } | StageSpec::Broadcast { .. } => 1,
            StageSpec::Sort { tasks, .. }
            | StageSpec::Aggregate { tasks, .. }
            | StageSpec::Udf { tasks, .. }
            | StageSpec::Python { tasks, .. } => *tasks,
        };
        let external = self.external;
        let worker_kind = match spec {
            StageSpec::Python { worker, .. } => Some(external.choose(stage_id, *worker)),
            _ => None,
        };
        let bar = self.progress_bar(stage_id, spec, num_tasks);
        let storage_before = executor.block_manager().counters();
        let started = Instant::now();
        if let StageSpec::Cache {
            rdd,
            name,
            partitions,
            partition_bytes,
            record_bytes,
            storage_level,
        } = spec
        {
            self.rdds.insert(
                *rdd,
                CachedRdd {
                    id: *rdd,
                    name: name.clone(),
                    level: *storage_level,
                    partitions: *partitions,
                    partition_bytes: *partition_bytes,
                    record_bytes: *record_bytes,
                    seed,
                    expected: HashMap::new(),
                },
            );
        }
        let rdds = &self.rdds;
        let user_peak = std::sync::atomic::AtomicU64::new(0);
        let task = |ctx: &crate::scheduler::TaskContext| -> Result<TaskOutput, TaskError> {
            let out = match spec {
                StageSpec::Cache { rdd, .. } => stages::cache_task(ctx, &rdds[rdd]),
                StageSpec::Scan { rdd } => stages::scan_task(ctx, &rdds[rdd]),
                StageSpec::Unpersist { rdd } => {
                    executor.block_manager().remove_rdd(*rdd);
                    Ok(TaskOutput {
                        verified: true,
                        ..TaskOutput::default()
                    })
                }
                StageSpec::Udf {
                    bytes_per_task,
                    object_bytes,
                    ..
                } => stages::udf_task(ctx, *bytes_per_task, *object_bytes, seed),
                StageSpec::Broadcast {
                    id,
                    bytes,
                    record_bytes,
                    storage_level,
                } => stages::broadcast_task(ctx, *id, *bytes, *record_bytes, *storage_level, seed),
                StageSpec::Python {
                    bytes_per_task,
                    records_per_task,
                    distinct_keys,
                    ..
                } => match &worker_kind {
                    Some(Ok(kind)) => crate::external::stage::python_task(
                        ctx,
                        external,
                        &crate::external::stage::PythonTask {
                            kind: *kind,
                            bytes_per_task: *bytes_per_task,
                            records_per_task: *records_per_task,
                            distinct_keys: *distinct_keys,
                            seed,
                        },
                    ),
                    Some(Err(e)) => Err(e.clone().into()),
                    None => unreachable!("a python stage has a worker kind"),
                },
                StageSpec::Sort {
                    records_per_task,
                    record_bytes,
                    ..
                } => crate::tasks::sort::run_sort_task(
                    ctx,
                    &crate::tasks::sort::SortSpec {
                        records_per_task: *records_per_task,
                        record_bytes: *record_bytes as usize,
                        seed,
                    },
                )
                .map(TaskOutput::from)
                .map_err(TaskError::from),
                StageSpec::Aggregate {
                    records_per_task,
                    record_bytes,
                    distinct_keys,
                    ..
                } => crate::tasks::aggregate::run_aggregate_task(
                    ctx,
                    &crate::tasks::aggregate::AggregateSpec {
                        records_per_task: *records_per_task,
                        record_bytes: *record_bytes as usize,
                        seed,
                        distinct_keys: *distinct_keys,
                    },
                )
                .map(TaskOutput::from)
                .map_err(TaskError::from),
            };
            if let Ok(o) = &out {
                user_peak.fetch_max(o.user_bytes, std::sync::atomic::Ordering::Relaxed);
            }
            out
        };
        let runs = run_stage(
            executor,
            stage_id,
            num_tasks,
            self.exception_on_leak,
            task,
            |run| {
                if let Some(b) = &bar {
                    b.inc(1);
                    let (_, spilled) = crate::metrics::spills();
                    b.set_message(format!("spilled {} MiB", format_mib(spilled)));
                    if run.result.is_err() {
                        b.println(format!("task {} failed", run.task_attempt_id));
                    }
                }
            },
        );
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        executor.trim_page_pools();
        // A cache stage's digests are what its scans must read back.
        if let StageSpec::Cache { rdd, .. } = spec
            && let Some(cached) = self.rdds.get_mut(rdd)
        {
            for r in &runs {
                if let Ok(o) = &r.result {
                    cached.expected.insert(r.partition, o.digest_in);
                }
            }
        }
        if let StageSpec::Unpersist { rdd } = spec {
            self.rdds.remove(rdd);
        }
        self.stages.push(StageRun {
            stage_id,
            spec: spec.clone(),
            runs,
            wall: started.elapsed(),
            storage_before,
            storage_after: executor.block_manager().counters(),
            user_peak_bytes: user_peak.into_inner(),
        });
    }

    fn progress_bar(&self, stage_id: u32, spec: &StageSpec, tasks: u32) -> Option<ProgressBar> {
        if !self.progress {
            return None;
        }
        let bar = ProgressBar::new(tasks as u64);
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
            self.scenario.stages.len(),
            spec.kind()
        ));
        bar.enable_steady_tick(Duration::from_millis(100));
        Some(bar)
    }
}

/// Whether a task failed, and its error class and message.
pub(crate) fn failure_of(run: &TaskRun<TaskOutput, TaskError>) -> Option<(String, String)> {
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
pub(crate) fn stage_digests(
    runs: &[TaskRun<TaskOutput, TaskError>],
) -> (RecordDigest, RecordDigest) {
    runs.iter().filter_map(|r| r.result.as_ref().ok()).fold(
        (RecordDigest::default(), RecordDigest::default()),
        |(a, b), o| (a.combine(o.digest_in), b.combine(o.digest_out)),
    )
}

/// The samples' peak of a field.
pub(crate) fn peak(samples: &[Sample], f: impl Fn(&Sample) -> u64) -> u64 {
    samples.iter().map(f).max().unwrap_or(0)
}
