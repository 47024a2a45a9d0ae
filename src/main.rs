//! The `spillway` binary: parse the command line, call the library, print, return an exit code.
//!
//! Exit codes: 0 success, 1 a failure of the run itself, 2 bad input (configuration, flags),
//! 3 the executor's container was killed by the kernel OOM killer (`run --cgroup`), 128 + n
//! stopped by signal n (130 SIGINT, 143 SIGTERM, 129 SIGHUP; see `spillway::interrupt`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use spillway::conf::{ByteUnit, ConfError, SparkConf, byte_string_as};
use spillway::executor::Executor;
use spillway::layout::Layout;
use spillway::run::{RunError, RunOptions, summary_table};
use spillway::scenario::Scenario;

#[derive(Parser)]
#[command(
    name = "spillway",
    version,
    about = "Apache Spark's executor memory model, reproduced with real memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the executor's memory layout: container, heap regions, pools, off-heap, overhead.
    Layout(LayoutArgs),
    /// Run a scenario on a real executor heap and write report.json, timeline.csv and plots.
    Run(RunArgs),
    /// Reproduce, on purpose, a way a Spark executor fails for memory, and explain it.
    Oom(OomArgs),
    /// A PySpark-style worker on stdin/stdout (started by `run` for python stages).
    #[command(hide = true)]
    Worker,
    /// Measure this machine's disk and memory limits and spillway's spill, merge and eviction
    /// throughput as fractions of them.
    Bench(BenchArgs),
}

#[derive(Args)]
struct OomArgs {
    /// The case to reproduce (see --list).
    case: Option<String>,
    /// List the cases, one a line: name, then a short description.
    #[arg(long)]
    list: bool,
    /// A Spark property to apply on top of the case's own (repeatable).
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    conf: Vec<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    /// `container`: enforce the container with a kernel memory cgroup (`spillway run --cgroup`).
    #[arg(long)]
    cgroup: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    conf: ConfArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Directory whose disk is measured (default: spark.local.dir, else the temp directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Bytes per measurement, split into 8 files (e.g. 512m).
    #[arg(long, value_name = "SIZE", default_value = "512m")]
    size: String,
    /// Measurements of each pair (ratios are taken within each).
    #[arg(long, value_name = "N", default_value_t = 3)]
    repeats: usize,
}

#[derive(Args)]
struct RunArgs {
    /// A built-in scenario (default, sort-spill, aggregate-spill, cache-pressure,
    /// cache-then-sort) or a path to a TOML scenario file.
    #[arg(default_value = "default")]
    scenario: String,
    #[command(flatten)]
    conf: ConfArgs,
    /// Where to write the report (default: a new folder under ./spillway-runs/).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print report.json to stdout instead of the summary table.
    #[arg(long)]
    json: bool,
    /// Run the executor in a new child memory cgroup limited to the container size
    /// (heap + overhead + off-heap + pyspark), or to SIZE (a Spark byte string, e.g. 400m); a
    /// kernel OOM kill is reported, not crashed on.
    #[arg(long, value_name = "SIZE", num_args = 0..=1, require_equals = true)]
    cgroup: Option<Option<String>>,
    /// Internal: this process is the executor child of a `--cgroup` supervisor.
    #[arg(long, hide = true)]
    cgroup_child: bool,
}

/// The configuration flags every command shares, named as spark-submit names them.
#[derive(Args)]
struct ConfArgs {
    /// A Spark property, KEY=VALUE (repeatable; overrides the properties file).
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    conf: Vec<String>,
    /// A spark-defaults.conf style file of properties.
    #[arg(long = "properties-file", value_name = "FILE")]
    properties_file: Option<PathBuf>,
    /// The JVM's Runtime.maxMemory, if it differs from spark.executor.memory (bytes unless a
    /// suffix is given, e.g. 954728448 or 910m). spark.testing.memory takes precedence.
    #[arg(long = "system-memory", value_name = "SIZE")]
    system_memory: Option<String>,
}

impl ConfArgs {
    fn load(&self) -> Result<(SparkConf, Option<i64>), ConfError> {
        let mut conf = SparkConf::new();
        if let Some(path) = &self.properties_file {
            conf.load_properties_file(path)?;
        }
        for arg in &self.conf {
            conf.apply_conf_arg(arg)?;
        }
        let system_memory = match &self.system_memory {
            Some(value) => Some(byte_string_as(value, ByteUnit::Byte).map_err(|source| {
                ConfError::ByteString {
                    key: "--system-memory".into(),
                    value: value.clone(),
                    source,
                }
            })?),
            None => None,
        };
        for warning in conf.warnings() {
            eprintln!("warning: {warning}");
        }
        Ok((conf, system_memory))
    }
}

#[derive(Args)]
struct LayoutArgs {
    #[command(flatten)]
    conf: ConfArgs,
    /// Print one JSON object (bytes) instead of the tree.
    #[arg(long)]
    json: bool,
    /// Map the heap (and off-heap arena), touch what a fresh executor touches, and print the
    /// resident size of each region beside the model.
    #[arg(long)]
    touch: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that make files, processes or cgroups stop cleanly on SIGINT/SIGTERM/SIGHUP and
    // exit 128 + n (spillway::interrupt); a worker is ended by its executor instead.
    if matches!(
        cli.command,
        Command::Run(_) | Command::Oom(_) | Command::Bench(_)
    ) && let Err(e) = spillway::interrupt::install()
    {
        eprintln!("warning: cannot handle SIGINT/SIGTERM/SIGHUP: {e}");
    }
    let code = dispatch(cli);
    match spillway::interrupt::interrupted() {
        Some(signal) => {
            eprintln!("spillway: interrupted by {signal}: stopped and cleaned up");
            ExitCode::from(signal.exit_code())
        }
        None => code,
    }
}

fn dispatch(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Layout(args) => layout(args),
        Command::Run(args) if args.cgroup.is_some() && !args.cgroup_child => {
            return run_in_cgroup(args);
        }
        Command::Run(args) => run(args),
        Command::Oom(args) => oom(args),
        Command::Worker => return spillway::external::worker::worker_main(),
        Command::Bench(args) => bench(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

/// Bad input exits 2; anything else that stops a command exits 1.
enum Failure {
    BadInput(anyhow::Error),
    Run(anyhow::Error),
}

impl Failure {
    /// Prints the error and gives its exit code: 2 for bad input, 1 for a failed run.
    fn report(self) -> ExitCode {
        let (e, code) = match self {
            Failure::BadInput(e) => (e, 2),
            Failure::Run(e) => (e, 1),
        };
        eprintln!("error: {e:#}");
        ExitCode::from(code)
    }
}

impl From<ConfError> for Failure {
    fn from(e: ConfError) -> Self {
        Failure::BadInput(e.into())
    }
}

impl From<RunError> for Failure {
    fn from(e: RunError) -> Self {
        if e.is_bad_input() {
            Failure::BadInput(e.into())
        } else {
            Failure::Run(e.into())
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Run(e)
    }
}

fn layout(args: LayoutArgs) -> Result<(), Failure> {
    let (conf, system_memory) = args.conf.load()?;
    let layout = Layout::from_conf(&conf, system_memory)?;
    if args.touch {
        let executor = Executor::start(&layout, &conf).map_err(anyhow::Error::from)?;
        let residency = executor.residency();
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&residency).expect("residency serializes")
            );
        } else {
            print!("{}", layout.render_tree());
            println!();
            print!("{}", residency.render_table());
        }
        return Ok(());
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&layout.to_json()).expect("layout serializes")
        );
    } else {
        print!("{}", layout.render_tree());
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<(), Failure> {
    let scenario = Scenario::load(&args.scenario).map_err(RunError::from)?;
    let system_memory = args.conf.load()?.1;
    let opts = RunOptions {
        properties_file: args.conf.properties_file.clone(),
        conf_args: args.conf.conf.clone(),
        system_memory,
        out_dir: args.out,
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    let (report, out_dir) = spillway::run::run(&scenario, &opts)?;
    if args.cgroup_child {
        // The supervisor prints the report once it has added the cgroup's numbers.
        if !args.json {
            print!("{}", summary_table(&report, &out_dir));
        }
    } else if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        print!("{}", summary_table(&report, &out_dir));
    }
    // YARN killed the container (exit status -104): the report is written; the run failed.
    if let Some(kill) = &report.external.container_monitor.kill {
        return Err(Failure::Run(anyhow::anyhow!(
            "{} (container exit status {})",
            kill.message,
            kill.exit_status
        )));
    }
    Ok(())
}

fn oom(args: OomArgs) -> Result<(), Failure> {
    if args.list || args.case.is_none() {
        print!("{}", spillway::oom::list());
        return Ok(());
    }
    let name = args.case.expect("checked above");
    let opts = spillway::oom::CaseOptions {
        conf_args: args.conf,
        cgroup: args.cgroup,
    };
    let outcome =
        spillway::oom::run_case(&name, &opts).map_err(|e| Failure::BadInput(anyhow::anyhow!(e)))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome).expect("outcome serializes")
        );
    } else {
        print!("{}", outcome.render());
    }
    if outcome.reproduced {
        Ok(())
    } else {
        Err(Failure::Run(anyhow::anyhow!(
            "case {name} did not fail as expected"
        )))
    }
}

/// `spillway run --cgroup[=SIZE]`: the supervisor (see `spillway::cgroup_run`).
fn run_in_cgroup(args: RunArgs) -> ExitCode {
    match supervise_run(args) {
        Ok(code) => code,
        Err(f) => f.report(),
    }
}

fn supervise_run(args: RunArgs) -> Result<ExitCode, Failure> {
    use spillway::cgroup_run::{self, ChildOutcome, ReportContext};
    use spillway::pressure::{CgroupError, OwnCgroup};

    // Validate everything before a cgroup exists: bad input exits 2 and creates nothing.
    let scenario = Scenario::load(&args.scenario).map_err(RunError::from)?;
    let system_memory = args.conf.load()?.1;
    let opts = RunOptions {
        properties_file: args.conf.properties_file.clone(),
        conf_args: args.conf.conf.clone(),
        system_memory,
        out_dir: args.out.clone(),
        progress: false,
    };
    let conf = spillway::run::scenario_conf(&scenario, &opts)?;
    let layout = Layout::from_conf(&conf, system_memory)?;
    spillway::run::validate_sizes(&scenario, &layout).map_err(RunError::from)?;
    let (limit_bytes, limit_source) = match args.cgroup.clone().flatten() {
        Some(size) => {
            let v =
                byte_string_as(&size, ByteUnit::Byte).map_err(|source| ConfError::ByteString {
                    key: "--cgroup".into(),
                    value: size.clone(),
                    source,
                })?;
            if v <= 0 {
                return Err(Failure::BadInput(anyhow::anyhow!(
                    "--cgroup={size}: a memory limit must be positive"
                )));
            }
            (v as u64, format!("--cgroup={size}"))
        }
        None => (layout.container_bytes() as u64, "container".to_string()),
    };
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| spillway::run::default_out_dir(&scenario.name));
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out_dir.display()))?;
    // A report left by an earlier run must not be taken for this child's.
    let _ = std::fs::remove_file(out_dir.join("report.json"));

    let own = OwnCgroup::discover().ok_or_else(|| anyhow::Error::from(CgroupError::NoCgroup))?;
    let exe = std::env::current_exe().map_err(|e| anyhow::anyhow!("current_exe: {e}"))?;
    let own_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let child_args =
        cgroup_run::child_args(&own_args, args.out.is_none().then_some(out_dir.as_path()));
    let sup = cgroup_run::supervise(
        &own,
        limit_bytes,
        &limit_source,
        &exe,
        &child_args,
        std::time::Duration::from_millis(50),
    )
    .map_err(anyhow::Error::from)?;

    let ctx = ReportContext {
        out_dir: &out_dir,
        scenario_name: &scenario.name,
        scenario_description: &scenario.description,
        scenario_source: scenario
            .path
            .as_ref()
            .map_or_else(|| "built-in".to_string(), |p| p.display().to_string()),
        seed: scenario.seed,
        layout: serde_json::to_value(layout.to_json()).expect("layout serializes"),
    };
    let report = cgroup_run::finish_report(&ctx, &sup).map_err(anyhow::Error::from)?;
    let line = cgroup_run::explain(&sup.report);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    }
    match sup.outcome {
        ChildOutcome::Exited { code } => {
            if !args.json {
                println!(
                    "cgroup {:?} {}: limit {} MiB ({}), peak {} MiB, oom_kill {}, PSI some {} µs full {} µs",
                    sup.report.version,
                    sup.report.path,
                    spillway::conf::format_mib(sup.report.limit_bytes),
                    sup.report.limit_source,
                    spillway::conf::format_mib(sup.report.peak_usage_bytes),
                    sup.report.oom_kill,
                    sup.report.psi_some_total_us,
                    sup.report.psi_full_total_us
                );
            }
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        ChildOutcome::OomKilled => {
            eprintln!("error: [CONTAINER_OOM_KILLED] {line}");
            eprintln!("report: {}", out_dir.join("report.json").display());
            Ok(ExitCode::from(3))
        }
        ChildOutcome::Killed { .. } => {
            eprintln!("error: [EXECUTOR_LOST] {line}");
            eprintln!("report: {}", out_dir.join("report.json").display());
            Ok(ExitCode::from(1))
        }
    }
}

fn bench(args: BenchArgs) -> Result<(), Failure> {
    let (conf, _) = args.conf.load()?;
    let size_bytes =
        byte_string_as(&args.size, ByteUnit::Byte).map_err(|source| ConfError::ByteString {
            key: "--size".into(),
            value: args.size.clone(),
            source,
        })?;
    if size_bytes <= 0 || args.repeats == 0 {
        return Err(Failure::BadInput(anyhow::anyhow!(
            "--size and --repeats must be positive"
        )));
    }
    let buffer_kib = conf
        .size(spillway::conf::keys::SHUFFLE_FILE_BUFFER)?
        .unwrap_or(32);
    let dir = args
        .dir
        .or_else(|| {
            conf.get(spillway::conf::keys::LOCAL_DIR)
                .and_then(|d| d.split(',').next().map(PathBuf::from))
        })
        .unwrap_or_else(std::env::temp_dir);
    let opts = spillway::bench::BenchOptions {
        dir,
        size_bytes: size_bytes as u64,
        runs: 8,
        buffer_bytes: buffer_kib.max(1) as usize * 1024,
        repeats: args.repeats,
    };
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    });
    let report = spillway::bench::run(&opts, &|step| {
        if let Some(b) = &bar {
            b.set_message(step.to_string());
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = report?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("bench report serializes")
        );
    } else {
        print!("{}", spillway::bench::render(&report));
    }
    Ok(())
}
