//! The `spillway` binary: parse the command line, call the library, print, return an exit code.
//!
//! Exit statuses come from one table, `spillway::exit`: every error of the library says its
//! own through `spillway::exit::Exit`, so this file holds no exit number.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use spillway::conf::{ByteUnit, ConfError, SparkConf, byte_string_as};
use spillway::executor::Executor;
use spillway::exit::{Exit, ExitStatus};
use spillway::interleave::ScheduleMode;
use spillway::layout::Layout;
use spillway::run::{RunError, RunOptions, summary_table};
use spillway::scenario::Scenario;

#[derive(Parser)]
#[command(
    name = "spillway",
    version,
    about = "Apache Spark's executor memory model, reproduced with real memory",
    after_help = spillway::exit::help_text()
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
    /// A built-in scenario (default, sort-spill, aggregate-spill, cache-pressure, cache-race,
    /// cache-then-sort, shuffle-spill) or a path to a TOML scenario file.
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
    /// Run under a deterministic schedule with this seed: the tasks meet the memory manager in
    /// the order the seed decides, so the same scenario and seed give the same counts
    /// (sets spillway.schedule=deterministic and spillway.schedule.seed).
    #[arg(long, value_name = "SEED", conflicts_with = "explore")]
    schedule_seed: Option<u64>,
    /// Run the scenario under schedule seeds 1..=N and once free-running, and list every count
    /// that varied, with its values, how often, and a seed that reproduces each (explore.json).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000), conflicts_with_all = ["cgroup", "json"])]
    explore: Option<u32>,
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
        let system_memory = self.system_memory()?;
        for warning in conf.warnings() {
            spillway::log::warn("SparkConf", &warning);
        }
        Ok((conf, system_memory))
    }

    /// `--system-memory` in bytes. Read alone by `run`, which builds (and warns about) its own
    /// configuration once, with the scenario's `[conf]` in between.
    fn system_memory(&self) -> Result<Option<i64>, ConfError> {
        self.system_memory
            .as_ref()
            .map(|value| {
                byte_string_as(value, ByteUnit::Byte).map_err(|source| ConfError::ByteString {
                    key: "--system-memory".into(),
                    value: value.clone(),
                    source,
                })
            })
            .transpose()
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
    spillway::log::init();
    let cli = Cli::parse();
    // Commands that make files, processes or cgroups stop cleanly on SIGINT/SIGTERM/SIGHUP and
    // exit 128 + n (spillway::interrupt); a worker is ended by its executor instead.
    if matches!(
        cli.command,
        Command::Run(_) | Command::Oom(_) | Command::Bench(_)
    ) && let Err(e) = spillway::interrupt::install()
    {
        log::warn!(target: "spillway", "cannot handle SIGINT/SIGTERM/SIGHUP: {e}");
    }
    let code = dispatch(cli);
    match spillway::interrupt::interrupted() {
        Some(signal) => {
            eprintln!("spillway: interrupted by {signal}: stopped and cleaned up");
            ExitStatus::Signal(signal.number()).into()
        }
        None => code,
    }
}

fn dispatch(cli: Cli) -> ExitCode {
    let done = |r: Result<(), Failure>| r.map(|()| ExitStatus::Success);
    let result = match cli.command {
        Command::Layout(args) => done(layout(args)),
        Command::Run(args) if args.cgroup.is_some() && !args.cgroup_child => run_in_cgroup(args),
        Command::Run(args) => done(run(args)),
        Command::Oom(args) => done(oom(args)),
        Command::Worker => return spillway::external::worker::worker_main(),
        Command::Bench(args) => done(bench(args)),
    };
    match result {
        Ok(status) => status.into(),
        Err(f) => f.report(),
    }
}

/// An error on its way out, with the exit status its library type gave it.
struct Failure {
    status: ExitStatus,
    error: anyhow::Error,
}

impl Failure {
    /// Prints the error with its chain and gives its exit code.
    fn report(self) -> ExitCode {
        eprintln!("error: {:#}", self.error);
        self.status.into()
    }
}

impl<E: Exit + Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            status: e.exit_status(),
            error: e.into(),
        }
    }
}

fn layout(args: LayoutArgs) -> Result<(), Failure> {
    let (conf, system_memory) = args.conf.load()?;
    let layout = Layout::from_conf(&conf, system_memory)?;
    if args.touch {
        let executor = Executor::start(&layout, &conf)?;
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
    let system_memory = args.conf.system_memory()?;
    let mut opts = RunOptions {
        properties_file: args.conf.properties_file.clone(),
        conf_args: args.conf.conf.clone(),
        system_memory,
        out_dir: args.out,
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    if let Some(seed) = args.schedule_seed {
        opts.conf_args.extend(spillway::run::schedule_conf_args(
            ScheduleMode::Deterministic { seed },
        ));
    }
    if let Some(n) = args.explore {
        let (exploration, out_dir) = spillway::run::explore(&scenario, &opts, n)?;
        print!("{}", spillway::run::explore_table(&exploration, &out_dir));
        return Ok(());
    }
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
    let Some(unexpected) = spillway::run::unexpected_outcomes(&report) else {
        return Ok(());
    };
    // YARN killed the container (exit status -104) where no stage declared it: the report is
    // written; the run failed.
    if let Some(kill) = &report.external.container_monitor.kill {
        return Err(Failure {
            status: ExitStatus::Failure,
            error: anyhow::anyhow!(
                "{} (container exit status {})",
                kill.message,
                kill.exit_status
            ),
        });
    }
    Err(Failure {
        status: ExitStatus::UndeclaredTaskFailures,
        error: anyhow::anyhow!(
            "tasks ended otherwise than their stages declare (the report is written: {}):\n{unexpected}",
            out_dir.join("report.json").display()
        ),
    })
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
    let outcome = spillway::oom::run_case(&name, &opts)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome).expect("outcome serializes")
        );
    } else {
        print!("{}", outcome.render());
    }
    Ok(outcome.check()?)
}

/// `spillway run --cgroup[=SIZE]`: the supervisor (see `spillway::cgroup_run::run`).
fn run_in_cgroup(args: RunArgs) -> Result<ExitStatus, Failure> {
    let system_memory = args.conf.system_memory()?;
    let run = spillway::cgroup_run::run(&spillway::cgroup_run::CgroupRunArgs {
        scenario: args.scenario,
        properties_file: args.conf.properties_file,
        conf_args: args.conf.conf,
        system_memory,
        out_dir: args.out,
        limit: args.cgroup.flatten(),
        own_args: std::env::args_os().skip(1).collect(),
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&run.report).expect("report serializes")
        );
    } else if let Some(line) = run.summary_line() {
        println!("{line}");
    }
    if let Some(text) = run.failure_text() {
        eprint!("{text}");
    }
    // When it is not 0, the child printed its own error, or the text above says what ended it.
    Ok(run.exit_status())
}

fn bench(args: BenchArgs) -> Result<(), Failure> {
    let (conf, _) = args.conf.load()?;
    let size_bytes =
        byte_string_as(&args.size, ByteUnit::Byte).map_err(|source| ConfError::ByteString {
            key: "--size".into(),
            value: args.size.clone(),
            source,
        })?;
    if size_bytes <= 0 {
        return Err(ConfError::CheckFailed {
            key: "--size".into(),
            value: args.size.clone(),
            message: "It must be positive.",
        }
        .into());
    }
    if args.repeats == 0 {
        return Err(ConfError::CheckFailed {
            key: "--repeats".into(),
            value: "0".into(),
            message: "It must be positive.",
        }
        .into());
    }
    // The key table's default and limits (1..=2097151 KiB) apply.
    let buffer_kib = conf.get_size(spillway::conf::keys::SHUFFLE_FILE_BUFFER)?;
    let dir = match args.dir {
        Some(d) => d,
        None => spillway::storage::disk::DiskBlockManager::configured_roots(&conf)
            .into_iter()
            .next()
            .unwrap_or_else(std::env::temp_dir),
    };
    let opts = spillway::bench::BenchOptions {
        dir,
        size_bytes: size_bytes as u64,
        runs: 8,
        buffer_bytes: buffer_kib as usize * 1024,
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
