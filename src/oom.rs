//! The OOM catalog: each way a Spark executor fails for memory, reproduced on purpose and
//! deterministically on a real executor, and explained — which region, which numbers, which
//! setting would have avoided it (`spillway oom --list`, `spillway oom CASE`).
//!
//! A case *succeeds* when the failure it reproduces happened as expected; an unexpected outcome
//! (no failure, or a different one) is reported as such, and [`Outcome::check`] turns it into
//! [`OomError::NotReproduced`]. So `spillway oom CASE` exits 0 when the OOM happened — for
//! `container --cgroup` that is the kernel's OOM kill, which `run --cgroup` itself reports with
//! exit status 3 — and 1 when it did not. Bad input (an unknown case, a bad `--conf`) exits 2; a
//! failure of the machine (an executor that cannot map its heap, a temporary directory, the
//! `spillway` binary that cannot be started) exits 1: see [`OomError`] and `src/exit.rs`.

use std::sync::Arc;

use serde::Serialize;

use std::path::PathBuf;

use crate::conf::{ConfError, SparkConf, format_mib};
use crate::data::{PartitionData, stream_seed};
use crate::executor::{Executor, ExecutorError};
use crate::exit::{Exit, ExitStatus};
use crate::layout::Layout;
use crate::memory::{MemoryMode, TaskMemoryError, Unspillable};
use crate::scheduler::{TaskFailure, run_stage};
use crate::storage::{BlockId, StorageLevel};

/// Why a case could not be run, or did not reproduce. Bad input and failures of the machine
/// are separate variants, so that the binary exits 2 only for what the user can fix in the
/// command line.
#[derive(Debug, thiserror::Error)]
pub enum OomError {
    /// No case has this name (bad input).
    #[error("unknown OOM case '{name}' (cases: {cases})")]
    UnknownCase { name: String, cases: String },
    /// `--cgroup` given to a case that does not run a container (bad input).
    #[error("--cgroup applies only to the container and shuffle-fetch cases, not to '{case}'")]
    CgroupNotApplicable { case: String },
    /// A `--conf` the case cannot take, or a configuration it makes invalid (bad input).
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// The case's executor could not start: bad input for its configuration and local
    /// directories, a failure of the machine for its memory mapping.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    /// A scenario case's run failed before it could observe anything.
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    /// A case's own scenario text does not parse: a bug of the catalog, not the user's input.
    #[error("the case's built-in scenario is invalid: {0}")]
    BuiltInScenario(#[source] crate::scenario::ScenarioError),
    /// No temporary directory for the case's report or scenario.
    #[error("cannot create a temporary directory for the case: {0}")]
    TempDir(#[source] std::io::Error),
    /// The case's scenario file could not be written.
    #[error("cannot write {path}: {source}", path = path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The spillway binary (`SPILLWAY_BIN`, else this executable) could not be started.
    #[error("cannot start {exe} run --cgroup: {source}", exe = exe.display())]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The `spillway run --cgroup` child refused the case's input (it exited 2).
    #[error("spillway run --cgroup refused the case's input: {stderr}")]
    ChildBadInput { stderr: String },
    /// The `spillway run --cgroup` child failed without writing a report.
    #[error("spillway run --cgroup failed ({status}) without a report: {stderr}")]
    ChildFailed {
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// The case ran, and the failure it reproduces did not happen (or another did).
    #[error("case {case} did not fail as expected")]
    NotReproduced { case: String },
}

impl Exit for OomError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            OomError::UnknownCase { .. }
            | OomError::CgroupNotApplicable { .. }
            | OomError::Conf(_)
            | OomError::ChildBadInput { .. } => ExitStatus::BadInput,
            OomError::Executor(e) => e.exit_status(),
            OomError::Run(e) => e.exit_status(),
            OomError::BuiltInScenario(_)
            | OomError::TempDir(_)
            | OomError::Write { .. }
            | OomError::Spawn { .. }
            | OomError::ChildFailed { .. }
            | OomError::NotReproduced { .. } => ExitStatus::Failure,
        }
    }
}

/// One catalog entry.
pub struct Case {
    pub name: &'static str,
    pub summary: &'static str,
    run: fn(&CaseOptions) -> Result<Outcome, OomError>,
}

/// Options every case accepts.
#[derive(Debug, Clone, Default)]
pub struct CaseOptions {
    /// Extra `--conf KEY=VALUE` applied after the case's own settings.
    pub conf_args: Vec<String>,
    /// `container` only: let the kernel enforce the container in a memory cgroup (`--cgroup`)
    /// instead of the YARN-style monitor.
    pub cgroup: bool,
}

/// What a case produced.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub case: &'static str,
    /// Whether the expected failure happened.
    pub reproduced: bool,
    /// The error class observed (Spark's where Spark has one).
    pub error: String,
    /// The error message, with its numbers.
    pub message: String,
    /// Which region ran out.
    pub region: String,
    /// The numbers that explain it: bytes, or counts for names ending in `_count`.
    pub numbers: Vec<(String, u64)>,
    /// What would have avoided it.
    pub advice: String,
}

/// Every case, in the order `--list` prints them.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "system-memory",
            summary: "heap below 450 MiB: INVALID_EXECUTOR_MEMORY before anything runs",
            run: system_memory,
        },
        Case {
            name: "execution",
            summary: "a task cannot get a page even after spilling: UNABLE_TO_ACQUIRE_MEMORY",
            run: execution,
        },
        Case {
            name: "user-memory",
            summary: "UDF objects past the user region: java.lang.OutOfMemoryError: Java heap space",
            run: user_memory,
        },
        Case {
            name: "cache-unroll",
            summary: "a partition larger than storage can hold: \"Not enough space to cache\", not cached",
            run: cache_unroll,
        },
        Case {
            name: "off-heap",
            summary: "the off-heap Tungsten arena exhausted: UNABLE_TO_ACQUIRE_MEMORY in OFF_HEAP mode",
            run: off_heap,
        },
        Case {
            name: "container",
            summary: "Python workers push the process tree past the container: YARN's kill (--cgroup: the kernel's OOM kill, exit 137)",
            run: container,
        },
        Case {
            name: "pyspark",
            summary: "a Python UDF past RLIMIT_AS = spark.executor.pyspark.memory / cores: MemoryError",
            run: pyspark,
        },
        Case {
            name: "shuffle-fetch",
            summary: "a reduce task's in-flight fetch buffers (native memory) push the executor past a small overhead: YARN's kill (--cgroup: the kernel's OOM kill, exit 137)",
            run: shuffle_fetch,
        },
        Case {
            name: "group-skew",
            summary: "groupByKey with one hot key: its group does not fit the heap: java.lang.OutOfMemoryError: Java heap space",
            run: group_skew,
        },
        Case {
            name: "spill-disk-full",
            summary: "a sort spills into a local dir too small for the run: SPILL_OUT_OF_MEMORY, partial file removed",
            run: spill_disk_full,
        },
    ]
}

/// The cases that run under `--cgroup` (a container the kernel enforces).
const CGROUP_CASES: &[&str] = &["container", "shuffle-fetch"];

/// Runs the case named `name`.
pub fn run_case(name: &str, opts: &CaseOptions) -> Result<Outcome, OomError> {
    let all = cases();
    let case = all
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| OomError::UnknownCase {
            name: name.to_string(),
            cases: all.iter().map(|c| c.name).collect::<Vec<_>>().join(", "),
        })?;
    if opts.cgroup && !CGROUP_CASES.contains(&case.name) {
        return Err(OomError::CgroupNotApplicable {
            case: case.name.to_string(),
        });
    }
    (case.run)(opts)
}

fn conf_with(pairs: &[(&str, &str)], opts: &CaseOptions) -> Result<SparkConf, OomError> {
    let mut conf = SparkConf::new();
    for (k, v) in pairs {
        conf.set(k, v);
    }
    for a in &opts.conf_args {
        conf.apply_conf_arg(a)?;
    }
    Ok(conf)
}

fn executor(conf: &SparkConf) -> Result<Executor, OomError> {
    let layout = Layout::from_conf(conf, None)?;
    Ok(Executor::start(&layout, conf)?)
}

fn system_memory(opts: &CaseOptions) -> Result<Outcome, OomError> {
    let conf = conf_with(&[("spark.executor.memory", "400m")], opts)?;
    let (reproduced, message, numbers) = match Layout::from_conf(&conf, None).err() {
        Some(
            e @ ConfError::InvalidExecutorMemory {
                executor_memory,
                min_system_memory,
            },
        ) => (
            true,
            e.to_string(),
            vec![
                ("executor_memory".to_string(), executor_memory as u64),
                ("min_system_memory".to_string(), min_system_memory as u64),
            ],
        ),
        // Another configuration error came first: the `--conf` given is at fault.
        Some(e) => return Err(OomError::Conf(e)),
        None => (false, "no error".into(), Vec::new()),
    };
    Ok(Outcome {
        case: "system-memory",
        reproduced,
        error: "INVALID_EXECUTOR_MEMORY".into(),
        message,
        region: "the whole heap: reserved memory (300 MiB) needs 1.5x headroom".into(),
        numbers,
        advice: "give the executor at least 450 MiB (spark.executor.memory=512m or more); a \
                 unit-less value is MiB for the launch but bytes for this check, so write 4g, \
                 not 4096"
            .into(),
    })
}

/// Holds most of the execution pool with an unspillable consumer, then asks for a page larger
/// than what is left: Spark spills what it can (nothing), then fails.
fn execution(opts: &CaseOptions) -> Result<Outcome, OomError> {
    let conf = conf_with(
        &[
            ("spark.executor.memory", "1g"),
            ("spark.executor.cores", "1"),
        ],
        opts,
    )?;
    let ex = executor(&conf)?;
    let exec_pool = ex.layout().unified as u64;
    execution_like(
        &ex,
        "execution",
        exec_pool,
        MemoryMode::OnHeap,
        "execution (the unified pool; storage was empty, so all of it)",
        "spill-friendly operators, more partitions (smaller per-task state), fewer cores per \
         executor (a larger 1/N share), or a larger spark.executor.memory / spark.memory.fraction",
    )
}

fn off_heap(opts: &CaseOptions) -> Result<Outcome, OomError> {
    let conf = conf_with(
        &[
            ("spark.executor.memory", "1g"),
            ("spark.executor.cores", "1"),
            ("spark.memory.offHeap.enabled", "true"),
            ("spark.memory.offHeap.size", "128m"),
        ],
        opts,
    )?;
    let ex = executor(&conf)?;
    let pool = ex.layout().off_heap as u64;
    execution_like(
        &ex,
        "off-heap",
        pool,
        MemoryMode::OffHeap,
        "the off-heap arena (spark.memory.offHeap.size): Tungsten pages live there when \
         spark.memory.offHeap.enabled=true",
        "raise spark.memory.offHeap.size (and spark.executor.memoryOverhead accounting for it \
         on YARN), or disable off-heap so pages come from the larger on-heap pool",
    )
}

fn execution_like(
    ex: &Executor,
    case: &'static str,
    pool: u64,
    mode: MemoryMode,
    region: &str,
    advice: &str,
) -> Result<Outcome, OomError> {
    let held = pool / 4 * 3;
    let request = pool / 2;
    let runs = run_stage(
        ex,
        0,
        1,
        false,
        |ctx| -> Result<(), TaskMemoryError> {
            let holder = ctx
                .memory
                .register("unspillable hash map", Arc::new(Unspillable));
            let _held = holder.allocate_page(held)?;
            let sorter = ctx.memory.register("sorter", Arc::new(Unspillable));
            let _page = sorter.allocate_page(request)?;
            Ok(())
        },
        |_| {},
    );
    let run = &runs[0];
    let (reproduced, message, received) = match &run.result {
        Err(TaskFailure::Task(e @ TaskMemoryError::UnableToAcquire { received, .. })) => {
            (true, e.to_string(), *received)
        }
        Err(e) => (false, e.to_string(), 0),
        Ok(()) => (false, "the task got its page".into(), request),
    };
    debug_assert_eq!(ex.layout().tungsten_mode(), mode);
    Ok(Outcome {
        case,
        reproduced,
        error: "UNABLE_TO_ACQUIRE_MEMORY".into(),
        message,
        region: region.into(),
        numbers: vec![
            ("pool".into(), pool),
            ("held_by_unspillable_consumer".into(), held),
            ("requested".into(), request),
            ("received".into(), received),
        ],
        advice: advice.into(),
    })
}

fn user_memory(opts: &CaseOptions) -> Result<Outcome, OomError> {
    let conf = conf_with(&[("spark.executor.memory", "1g")], opts)?;
    let ex = executor(&conf)?;
    let user = ex.layout().user as u64;
    let want = user + (16 << 20);
    let runs = run_stage(
        &ex,
        0,
        1,
        false,
        |ctx| crate::stage::udf_task(ctx, want, 64 << 10, 42).map(|_| ()),
        |_| {},
    );
    let (reproduced, message) = match &runs[0].result {
        Err(TaskFailure::Task(e)) => (e.class == "java.lang.OutOfMemoryError", e.message.clone()),
        Err(e) => (false, e.to_string()),
        Ok(()) => (false, "the UDF fit".into()),
    };
    Ok(Outcome {
        case: "user-memory",
        reproduced,
        error: "java.lang.OutOfMemoryError".into(),
        message,
        region: "user memory: (heap - 300 MiB) x (1 - spark.memory.fraction), which no pool \
                 accounts"
            .into(),
        numbers: vec![("user_region".into(), user), ("udf_objects".into(), want)],
        advice: "lower spark.memory.fraction to give user memory more of the heap, raise \
                 spark.executor.memory, or keep per-task UDF state smaller (fewer cores share \
                 the same user region)"
            .into(),
    })
}

fn cache_unroll(opts: &CaseOptions) -> Result<Outcome, OomError> {
    let conf = conf_with(&[("spark.executor.memory", "1g")], opts)?;
    let ex = executor(&conf)?;
    let unified = ex.layout().unified as u64;
    let partition = unified + (32 << 20);
    let block = BlockId::Rdd {
        rdd_id: 1,
        split_index: 0,
    };
    let data = PartitionData::new(stream_seed(42, 1, 0), partition, 1 << 20);
    let runs = run_stage(
        &ex,
        0,
        1,
        false,
        |ctx| {
            ex.block_manager().put_partition(
                &block,
                StorageLevel::MEMORY_ONLY,
                ctx.task_attempt_id,
                &data,
            )
        },
        |_| {},
    );
    let cached = ex.block_manager().rdd_storage(1).num_cached_partitions;
    let reproduced = matches!(runs[0].result, Ok(ref r) if !r.in_memory) && cached == 0;
    Ok(Outcome {
        case: "cache-unroll",
        reproduced,
        error: "Not enough space to cache".into(),
        message: format!(
            "Not enough space to cache {block} in memory! The partition is {} MiB; storage can \
             grow to the whole unified pool, {} MiB, and no other RDD's blocks were there to \
             evict. The task still computed the partition; it is simply not cached \
             (MEMORY_ONLY), and every later use recomputes it.",
            format_mib(partition),
            format_mib(unified)
        ),
        region: "storage (unified pool; storageFraction only protects what is cached, it \
                 reserves nothing)"
            .into(),
        numbers: vec![("partition".into(), partition), ("unified".into(), unified)],
        advice: "use MEMORY_AND_DISK (the partition goes to disk instead), a serialized level, \
                 more partitions (smaller blocks), or a larger heap / spark.memory.fraction"
            .into(),
    })
}

/// Size of the local directory the `spill-disk-full` case spills into.
const SPILL_DISK_BYTES: u64 = 8 << 20;

/// A small tmpfs mounted for the `spill-disk-full` case (root only); unmounted and removed on
/// drop.
struct TinyTmpfs {
    dir: tempfile::TempDir,
}

impl TinyTmpfs {
    /// `None` when not root or when `mount` fails (no CAP_SYS_ADMIN, e.g. in a container).
    fn mount(bytes: u64) -> Option<TinyTmpfs> {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("spillway-oom-tmpfs-")
            .tempdir()
            .ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0700"))
            .arg("spillway-oom")
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(TinyTmpfs { dir })
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Busy: detach it so the directory can go; the kernel frees it when unused.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// A sort whose first spill (asked for by the task memory manager when the sorter needs a page)
/// does not fit in its local directory. Spark wraps the spill's `IOException` as
/// SPILL_OUT_OF_MEMORY because the task memory manager requested the spill
/// (`TaskMemoryManager.acquireExecutionMemory`); the writer deletes its partial file.
fn spill_disk_full(opts: &CaseOptions) -> Result<Outcome, OomError> {
    let tmpfs = TinyTmpfs::mount(SPILL_DISK_BYTES);
    let mut pairs = vec![
        ("spark.executor.memory", "512m".to_string()),
        ("spark.executor.cores", "1".to_string()),
    ];
    let how = match &tmpfs {
        Some(t) => {
            pairs.push(("spark.local.dir", t.dir.path().display().to_string()));
            format!(
                "spark.local.dir is a {} MiB tmpfs mounted for this case",
                SPILL_DISK_BYTES >> 20
            )
        }
        None => format!(
            "not root (or mount refused): a failpoint makes every spill file fail with ENOSPC              after {} MiB, as a {} MiB disk would",
            SPILL_DISK_BYTES >> 20,
            SPILL_DISK_BYTES >> 20
        ),
    };
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let conf = conf_with(&pairs, opts)?;
    let ex = executor(&conf)?;
    if tmpfs.is_none() {
        ex.local_dirs()
            .set_fault(Some(crate::storage::disk::DiskFault {
                errno: libc::ENOSPC,
                after_bytes: Some(SPILL_DISK_BYTES),
                dir: None,
            }));
    }
    let unified = ex.layout().unified as u64;
    // 1.5x the unified pool in 56-byte records: the sorter must spill about one pool's worth.
    let spec = crate::tasks::sort::SortSpec {
        records_per_task: unified * 3 / 2 / 56,
        record_bytes: 56,
        seed: 42,
    };
    let runs = run_stage(
        &ex,
        0,
        1,
        false,
        |ctx| crate::tasks::sort::run_sort_task(ctx, &spec),
        |_| {},
    );
    let execution_after = ex.memory_manager().execution_memory_used();
    let files_left = ex.local_dirs().file_count() as u64;
    let (class, message) = match &runs[0].result {
        Err(TaskFailure::Task(e)) => (
            e.error_class().unwrap_or("unclassified").to_string(),
            e.to_string(),
        ),
        Err(e) => ("unexpected".into(), e.to_string()),
        Ok(_) => ("none".into(), "the sort finished".into()),
    };
    let reproduced = class == "SPILL_OUT_OF_MEMORY"
        && message.contains("no space left on device")
        && files_left == 0
        && execution_after == 0;
    drop(ex);
    drop(tmpfs);
    Ok(Outcome {
        case: "spill-disk-full",
        reproduced,
        error: "SPILL_OUT_OF_MEMORY".into(),
        message: format!(
            "{message}\n({how}; the partial spill file was deleted: {files_left} files left in \
             the local directories, execution memory back to {execution_after} bytes)"
        ),
        region: "the local directories (spark.local.dir / SPARK_LOCAL_DIRS), not memory: the \
                 sorter needed a page, the task memory manager asked it to spill, and the \
                 spill could not be written"
            .into(),
        numbers: vec![
            ("local_dir_bytes".into(), SPILL_DISK_BYTES),
            ("unified".into(), unified),
            ("sort_input".into(), spec.records_per_task * 56),
            ("files_left".into(), files_left),
            ("execution_memory_after".into(), execution_after),
        ],
        advice: "give spark.local.dir (or SPARK_LOCAL_DIRS) room for a task's spills — about \
                 its share of execution memory per spill, times the spills in flight — or list \
                 several disks (spillway then writes the spill again in the next one); never a \
                 small tmpfs, whose spills also count as memory"
            .into(),
    })
}

/// The catalog as printed by `--list`: one case a line, its name then a short description.
pub fn list() -> String {
    let cases = cases();
    let w = cases.iter().map(|c| c.name.len()).max().unwrap_or(0);
    cases
        .iter()
        .map(|c| format!("{:<w$}  {}\n", c.name, c.summary))
        .collect()
}

impl Outcome {
    /// `Ok` when the case reproduced its failure, else [`OomError::NotReproduced`] (exit 1):
    /// the outcome is printed either way, this only decides how the command ends.
    pub fn check(&self) -> Result<(), OomError> {
        if self.reproduced {
            Ok(())
        } else {
            Err(OomError::NotReproduced {
                case: self.case.to_string(),
            })
        }
    }

    /// A human explanation.
    pub fn render(&self) -> String {
        let mut s = format!(
            "case {}: {}\n\n{}\n\nregion: {}\n",
            self.case,
            if self.reproduced {
                "reproduced"
            } else {
                "NOT reproduced"
            },
            self.message,
            self.region
        );
        for (k, v) in &self.numbers {
            if k.ends_with("_count") {
                s.push_str(&format!("  {k}: {v}\n"));
            } else {
                s.push_str(&format!("  {k}: {v} bytes ({} MiB)\n", format_mib(*v)));
            }
        }
        s.push_str(&format!("avoid it: {}\n", self.advice));
        s
    }
}

/// Runs a scenario through `spillway run` (the library) in a temporary directory.
fn run_scenario(toml: &str, opts: &CaseOptions) -> Result<crate::run::Report, OomError> {
    let scenario = crate::scenario::Scenario::parse(toml, "oom case", None)
        .map_err(OomError::BuiltInScenario)?;
    let dir = tempfile::tempdir().map_err(OomError::TempDir)?;
    let _cleanup = crate::interrupt::register_dir(dir.path());
    let run_opts = crate::run::RunOptions {
        properties_file: None,
        conf_args: opts.conf_args.clone(),
        system_memory: None,
        out_dir: Some(dir.path().to_path_buf()),
        progress: false,
    };
    Ok(crate::run::run(&scenario, &run_opts).map(|(r, _)| r)?)
}

/// A 512 MiB heap with a 64 MiB overhead asks for a 576 MiB container; the executor holds
/// ~310 MiB (reserved is touched) and one Python worker's 400 MiB UDF takes the tree past it.
const CONTAINER_SCENARIO: &str = r#"
[conf]
"spark.executor.memory" = "512m"
"spark.executor.cores" = "1"
"spark.executor.memoryOverhead" = "64m"
"spillway.container.monitor" = "kill"
[[stages]]
kind = "python"
tasks = 1
bytes_per_task = "400m"
worker = "spillway"
"#;

fn container(opts: &CaseOptions) -> Result<Outcome, OomError> {
    if opts.cgroup {
        return in_cgroup(
            "container",
            CONTAINER_SCENARIO,
            "raise spark.executor.memoryOverhead (or the pod limit): the kernel kills the \
             largest process in the cgroup, whatever Spark's pools say",
            opts,
        );
    }
    let report = run_scenario(CONTAINER_SCENARIO, opts)?;
    let failure = report
        .failures
        .iter()
        .find(|f| f.error == "CONTAINER_KILLED_PHYSICAL_MEMORY");
    let container = report.layout.container as u64;
    Ok(Outcome {
        case: "container",
        reproduced: failure.is_some(),
        error: "CONTAINER_KILLED_PHYSICAL_MEMORY".into(),
        message: failure.map_or_else(
            || "the process tree stayed inside the container".to_string(),
            |f| f.message.clone(),
        ),
        region: "memory overhead: everything outside the heap (Python workers, native memory) \
                 must fit in spark.executor.memoryOverhead; more heap does not help"
            .into(),
        numbers: vec![
            ("container".into(), container),
            ("overhead".into(), report.layout.overhead as u64),
            ("heap".into(), report.layout.system_memory as u64),
        ],
        advice: "raise spark.executor.memoryOverhead (on Kubernetes Python apps get a 0.4 \
                 factor), set spark.executor.pyspark.memory so workers fail with MemoryError \
                 inside their budget instead, or make the UDF hold less"
            .into(),
    })
}

/// `spillway run --cgroup` of a case's scenario: the same executor under a kernel memory limit
/// of the container size; the kernel's OOM killer ends it (SIGKILL, exit 137) and spillway
/// reports it.
fn in_cgroup(
    case: &'static str,
    scenario_text: &str,
    advice: &str,
    opts: &CaseOptions,
) -> Result<Outcome, OomError> {
    let dir = tempfile::tempdir().map_err(OomError::TempDir)?;
    let _cleanup_dir = crate::interrupt::register_dir(dir.path());
    let scenario = dir.path().join(format!("{case}.toml"));
    let text = scenario_text.replace(
        "\"spillway.container.monitor\" = \"kill\"",
        "\"spillway.container.monitor\" = \"off\"",
    );
    std::fs::write(&scenario, text).map_err(|source| OomError::Write {
        path: scenario.clone(),
        source,
    })?;
    let exe = match std::env::var_os("SPILLWAY_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe().map_err(|source| OomError::Spawn {
            exe: PathBuf::from("/proc/self/exe"),
            source,
        })?,
    };
    let out = dir.path().join("out");
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("run")
        .arg(&scenario)
        .arg("--cgroup")
        .arg("--out")
        .arg(&out);
    for a in &opts.conf_args {
        cmd.arg("--conf").arg(a);
    }
    // Its own process group, with a signal forwarded once (crate::interrupt): the supervisor
    // then stops its executor, removes the cgroup and exits; a second signal is forwarded too.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child_proc = cmd
        .env("SPILLWAY_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| OomError::Spawn {
            exe: exe.clone(),
            source,
        })?;
    let _cleanup_child = crate::interrupt::register_child(child_proc.id(), true);
    // The child's stderr is a few lines (its log is off): read it on a thread so a full pipe
    // can never stall it.
    let stderr_pipe = child_proc.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = stderr_pipe {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        }
        text
    });
    let status = wait_forwarding_signals(&mut child_proc).map_err(|source| OomError::Spawn {
        exe: exe.clone(),
        source,
    })?;
    let stderr = stderr_reader.join().unwrap_or_default().trim().to_string();
    let child = status.code().and_then(ExitStatus::from_code);
    let report: Option<crate::run::Report> = std::fs::read(out.join("report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let report = match (child, report) {
        // The case passes the user's `--conf` to the child, which validates them.
        (Some(ExitStatus::BadInput), _) => return Err(OomError::ChildBadInput { stderr }),
        // No report: the run never started (no writable cgroup, vm.panic_on_oom, …).
        (_, None) if !status.success() => return Err(OomError::ChildFailed { status, stderr }),
        (_, report) => report.unwrap_or_default(),
    };
    let killed = child == Some(ExitStatus::ContainerOomKilled);
    let cg = report.cgroup.as_ref();
    // The supervisor's failure, not whichever came first (a task may have failed before).
    let message = report
        .failures
        .iter()
        .find(|f| f.error == "CONTAINER_OOM_KILLED")
        .map(|f| f.message.clone())
        .unwrap_or_else(|| format!("spillway run --cgroup ended with {status}"));
    Ok(Outcome {
        case,
        reproduced: killed,
        error: "CONTAINER_OOM_KILLED".into(),
        message,
        region: "the container's memory cgroup: heap + overhead, enforced by the kernel".into(),
        numbers: vec![
            ("limit".into(), cg.map_or(0, |c| c.limit_bytes)),
            ("peak".into(), cg.map_or(0, |c| c.peak_usage_bytes)),
            ("oom_kill_count".into(), cg.map_or(0, |c| c.oom_kill)),
        ],
        advice: advice.into(),
    })
}

/// A 512 MiB heap with a 64 MiB overhead asks for a 576 MiB container. Three of six map
/// outputs (~150 MB each, incompressible) are on the job's other executor; with
/// `spark.reducer.maxSizeInFlight` at 1 GiB the reduce task asks for them in two requests at
/// once (of at least a fifth of it, ~300 and ~150 MB), fetched into native buffers beside the
/// 300 MiB of reserved heap the executor holds.
const SHUFFLE_FETCH_SCENARIO: &str = r#"
[conf]
"spark.executor.memory" = "512m"
"spark.executor.cores" = "1"
"spark.executor.memoryOverhead" = "64m"
"spark.reducer.maxSizeInFlight" = "1g"
"spark.network.maxRemoteBlockSizeFetchToMem" = "1g"
"spillway.container.monitor" = "kill"
[[stages]]
kind = "shuffle_map"
tasks = 6
reduce_partitions = 1
records_per_task = 4000000
record_bytes = 40
executors = 2
[[stages]]
kind = "shuffle_reduce"
expect = "failure"
"#;

const SHUFFLE_FETCH_ADVICE: &str = "set spark.network.maxRemoteBlockSizeFetchToMem below the \
     size of a fetch request (here 150 to 300 MB) so that large requests stream to disk, or \
     raise spark.executor.memoryOverhead: fetched blocks are native memory outside the heap, \
     which Spark's memory manager does not see. A smaller spark.reducer.maxSizeInFlight helps \
     only while blocks are smaller than it: a block larger than the limit is still fetched \
     whole, and the next request goes out as soon as the task takes it";

fn shuffle_fetch(opts: &CaseOptions) -> Result<Outcome, OomError> {
    if opts.cgroup {
        return in_cgroup(
            "shuffle-fetch",
            SHUFFLE_FETCH_SCENARIO,
            SHUFFLE_FETCH_ADVICE,
            opts,
        );
    }
    let report = run_scenario(SHUFFLE_FETCH_SCENARIO, opts)?;
    let failure = report
        .failures
        .iter()
        .find(|f| f.error == "CONTAINER_KILLED_PHYSICAL_MEMORY");
    let in_flight = report
        .stages
        .iter()
        .filter_map(|s| s.kind_fields.get("shufflePeakBytesInFlight"))
        .filter_map(|v| v.as_u64())
        .max()
        .unwrap_or(0);
    Ok(Outcome {
        case: "shuffle-fetch",
        reproduced: failure.is_some(),
        error: "CONTAINER_KILLED_PHYSICAL_MEMORY".into(),
        message: failure.map_or_else(
            || "the executor stayed inside the container".to_string(),
            |f| f.message.clone(),
        ),
        region: "memory overhead: a reduce task's fetched blocks wait in native buffers (Netty's \
                 direct memory) outside the heap, up to spark.reducer.maxSizeInFlight"
            .into(),
        numbers: vec![
            ("container".into(), report.layout.container as u64),
            ("overhead".into(), report.layout.overhead as u64),
            ("max_size_in_flight".into(), 1 << 30),
            ("peak_bytes_in_flight".into(), in_flight),
        ],
        advice: SHUFFLE_FETCH_ADVICE.into(),
    })
}

/// Two map tasks of 100,000 records of 1 KiB, 80 % of them on key 0: one group of ~155 MiB of
/// values, which the buffer holding it must grow to twice its size to take, against a user
/// range of (1024 - 300) x 0.4 = 289.6 MiB.
const GROUP_SKEW_SCENARIO: &str = r#"
[conf]
"spark.executor.memory" = "1g"
"spark.executor.cores" = "2"
[[stages]]
kind = "shuffle_map"
tasks = 2
reduce_partitions = 4
records_per_task = 100000
record_bytes = "1k"
hot_key_percent = 80
operation = "groupByKey"
[[stages]]
kind = "shuffle_reduce"
expect = "failure"
"#;

fn group_skew(opts: &CaseOptions) -> Result<Outcome, OomError> {
    let report = run_scenario(GROUP_SKEW_SCENARIO, opts)?;
    let failure = report
        .failures
        .iter()
        .find(|f| f.message.contains("Java heap space"));
    let user = report.layout.user as u64;
    Ok(Outcome {
        case: "group-skew",
        reproduced: failure.is_some(),
        error: failure.map_or_else(|| "java.lang.OutOfMemoryError".into(), |f| f.error.clone()),
        message: failure.map_or_else(|| "every group fit".to_string(), |f| f.message.clone()),
        region: "the heap outside Spark's pools: groupByKey must hold a key's whole group at \
                 once, and the memory manager neither accounts nor spills it"
            .into(),
        numbers: vec![
            ("user_memory".into(), user),
            ("hot_key_records_count".into(), 160_000),
            ("hot_group_value_bytes".into(), 160_000 * (1024 - 8)),
        ],
        advice: "use reduceByKey or aggregateByKey (they combine on the map side and never hold \
                 a group), salt the hot key, or give the heap more room outside the pools \
                 (lower spark.memory.fraction, more spark.executor.memory)"
            .into(),
    })
}

fn pyspark(opts: &CaseOptions) -> Result<Outcome, OomError> {
    let report = run_scenario(
        r#"
[conf]
"spark.executor.memory" = "1g"
"spark.executor.cores" = "2"
"spark.executor.pyspark.memory" = "512m"
[[stages]]
kind = "python"
tasks = 1
bytes_per_task = "400m"
worker = "spillway"
"#,
        opts,
    )?;
    let failure = report.failures.first();
    let message = failure.map_or_else(|| "the UDF fit".to_string(), |f| f.message.clone());
    Ok(Outcome {
        case: "pyspark",
        reproduced: message.contains("MemoryError"),
        error: failure.map_or_else(|| "PythonException".into(), |f| f.error.clone()),
        message,
        region: "a Python worker's address space: RLIMIT_AS = spark.executor.pyspark.memory / \
                 spark.executor.cores (virtual memory, not RSS)"
            .into(),
        numbers: vec![
            ("pyspark_memory".into(), report.layout.pyspark as u64),
            (
                "rlimit_as_per_worker".into(),
                report.layout.pyspark as u64 / 2,
            ),
            ("udf_bytes".into(), 400 << 20),
        ],
        advice: "raise spark.executor.pyspark.memory (and the container with it), use fewer \
                 cores per executor (each worker gets pyspark memory / cores), or process less \
                 per Python task"
            .into(),
    })
}

/// Waits for `child`, sending it the first SIGINT/SIGTERM/SIGHUP this process receives.
fn wait_forwarding_signals(
    child: &mut std::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    let mut forwarded = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if !forwarded && let Some(signal) = crate::interrupt::interrupted() {
            forwarded = true;
            let _ = crate::proc_ctl::send_signal(child.id(), signal.number());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
