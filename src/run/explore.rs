//! `spillway run SCENARIO --explore N`: the outcomes a race can have. The scenario runs under
//! schedule seeds 1..=N (`spillway.schedule=deterministic`) and once free-running; every count
//! that differs between the runs is listed with each value it took, how often, and a seed that
//! reproduces it (`spillway run SCENARIO --schedule-seed K`), and each stage whose outcome
//! could have differed says why (docs/spark-model.md §24, docs/report.md "explore.json").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::interleave::ScheduleMode;
use crate::scenario::Scenario;

use super::{Report, RunError, RunOptions, default_out_dir, run};

/// `explore.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Exploration {
    pub scenario: String,
    /// Runs in all: one per schedule seed, and one free-running.
    pub runs: u32,
    /// The schedule seeds, 1..=N.
    pub schedule_seeds: Vec<u64>,
    /// Every number that was not the same in all runs.
    pub varying: Vec<Varying>,
    /// The distinct combinations of the varying numbers, most frequent first.
    pub outcomes: Vec<Outcome>,
    /// The stages whose outcome could have differed in some run, and why.
    pub timing: Vec<StageTiming>,
}

/// A number that differed between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Varying {
    /// Where it is in report.json, e.g. `stages[0].spillCount` or `storage.rdds[id=1].partitionsInMemory`.
    pub key: String,
    pub values: Vec<ValueCount>,
}

/// One value a number took.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ValueCount {
    pub value: serde_json::Value,
    /// Runs that gave it.
    pub runs: u32,
    /// The first schedule seed that gave it (null when only the free-running run did).
    pub seed: Option<u64>,
    /// Whether the free-running run gave it.
    pub free_running: bool,
}

/// One combination of the varying numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub runs: u32,
    pub seed: Option<u64>,
    pub free_running: bool,
    /// Each varying number's value in this outcome.
    pub values: BTreeMap<String, serde_json::Value>,
}

/// A stage whose report said, in some runs, that its outcome could have differed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage_id: u32,
    pub label: String,
    /// Runs in which the stage's report said so.
    pub runs: u32,
    /// The reasons, each with the number of runs that gave it.
    pub reasons: Vec<(String, u32)>,
}

/// The numbers of a report an exploration compares: every count of every stage (the kind's own
/// numbers too), of every cached RDD at the end, the failures by class, and whether the run
/// completed. Times and rates are left out: they differ in every run.
pub fn outcome_numbers(report: &Report) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    out.insert("complete".into(), report.complete.into());
    for s in &report.stages {
        let v = serde_json::to_value(s).expect("a stage serializes");
        let serde_json::Value::Object(map) = v else {
            continue;
        };
        for (k, v) in map {
            if is_timing_key(&k) || !(v.is_number() || v.is_boolean()) {
                continue;
            }
            out.insert(format!("stages[{}].{k}", s.stage_id), v);
        }
    }
    for r in &report.storage.rdds {
        let v = serde_json::to_value(r).expect("an rdd serializes");
        let serde_json::Value::Object(map) = v else {
            continue;
        };
        for (k, v) in map {
            if v.is_number() && k != "id" {
                out.insert(format!("storage.rdds[id={}].{k}", r.id), v);
            }
        }
    }
    let mut classes: BTreeMap<&str, u64> = BTreeMap::new();
    for f in &report.failures {
        *classes.entry(f.error.as_str()).or_default() += 1;
    }
    for (class, n) in classes {
        out.insert(format!("failures[error={class}]"), n.into());
    }
    out
}

/// Keys of a stage's report that are times, rates or the schedule's own bookkeeping, not
/// outcomes.
fn is_timing_key(k: &str) -> bool {
    k.ends_with("TimeMs")
        || k.ends_with("Time")
        || k.ends_with("PerS")
        || k == "stageId"
        || k == "numTasks"
        || k == "outcomeAsExpected"
}

/// One run's outcome, for [`summarize`].
pub struct RunOutcome {
    /// `None`: the free-running run.
    pub seed: Option<u64>,
    pub numbers: BTreeMap<String, serde_json::Value>,
    /// Per stage: id, label, and the reasons its report gave.
    pub timing: Vec<(u32, String, Vec<String>)>,
}

impl RunOutcome {
    pub fn of(seed: Option<u64>, report: &Report) -> RunOutcome {
        RunOutcome {
            seed,
            numbers: outcome_numbers(report),
            timing: report
                .stages
                .iter()
                .filter(|s| s.timing.could_differ)
                .map(|s| (s.stage_id, s.label.clone(), s.timing.reasons.clone()))
                .collect(),
        }
    }
}

/// Compares the runs' numbers: which vary, their values and frequencies, the combinations.
pub fn summarize(scenario: &str, seeds: Vec<u64>, runs: &[RunOutcome]) -> Exploration {
    let Some(first) = runs.first() else {
        return Exploration {
            scenario: scenario.to_string(),
            schedule_seeds: seeds,
            ..Exploration::default()
        };
    };
    let mut all_keys: Vec<&String> = runs.iter().flat_map(|r| r.numbers.keys()).collect();
    all_keys.sort();
    all_keys.dedup();
    let missing = serde_json::Value::Null;
    let value_of = |r: &RunOutcome, k: &str| r.numbers.get(k).unwrap_or(&missing).clone();
    let varying_keys: Vec<&String> = all_keys
        .into_iter()
        .filter(|k| runs.iter().any(|r| value_of(r, k) != value_of(first, k)))
        .collect();
    let tally = |groups: &mut Vec<(serde_json::Value, ValueCount)>,
                 key: serde_json::Value,
                 r: &RunOutcome| {
        let i = match groups.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                groups.push((key.clone(), ValueCount::default()));
                groups.len() - 1
            }
        };
        let c = &mut groups[i].1;
        c.runs += 1;
        match r.seed {
            Some(s) if c.seed.is_none() => c.seed = Some(s),
            None => c.free_running = true,
            _ => {}
        }
    };
    let varying = varying_keys
        .iter()
        .map(|k| {
            let mut groups = Vec::new();
            for r in runs {
                tally(&mut groups, value_of(r, k), r);
            }
            groups.sort_by_key(|g| std::cmp::Reverse(g.1.runs));
            Varying {
                key: (*k).clone(),
                values: groups
                    .into_iter()
                    .map(|(v, c)| ValueCount { value: v, ..c })
                    .collect(),
            }
        })
        .collect();
    let mut combos = Vec::new();
    for r in runs {
        let key: serde_json::Map<String, serde_json::Value> = varying_keys
            .iter()
            .map(|k| ((*k).clone(), value_of(r, k)))
            .collect();
        tally(&mut combos, serde_json::Value::Object(key), r);
    }
    combos.sort_by_key(|g| std::cmp::Reverse(g.1.runs));
    let outcomes = combos
        .into_iter()
        .map(|(k, c)| Outcome {
            runs: c.runs,
            seed: c.seed,
            free_running: c.free_running,
            values: match k {
                serde_json::Value::Object(m) => m.into_iter().collect(),
                _ => BTreeMap::new(),
            },
        })
        .collect();
    let mut timing: BTreeMap<u32, StageTiming> = BTreeMap::new();
    for r in runs {
        for (id, label, reasons) in &r.timing {
            let t = timing.entry(*id).or_insert_with(|| StageTiming {
                stage_id: *id,
                label: label.clone(),
                ..StageTiming::default()
            });
            t.runs += 1;
            for reason in reasons {
                // The count at the start of a reason varies; group by the words after it.
                let words = reason
                    .split_once(' ')
                    .map_or(reason.as_str(), |(_, rest)| rest);
                match t.reasons.iter_mut().find(|(w, _)| w == words) {
                    Some((_, n)) => *n += 1,
                    None => t.reasons.push((words.to_string(), 1)),
                }
            }
        }
    }
    Exploration {
        scenario: scenario.to_string(),
        runs: runs.len() as u32,
        schedule_seeds: seeds,
        varying,
        outcomes,
        timing: timing.into_values().collect(),
    }
}

/// Runs `scenario` under schedule seeds 1..=`n` and once free-running, each run's files in a
/// temporary folder removed after it, and writes `explore.json` into the output folder.
pub fn explore(
    scenario: &Scenario,
    opts: &RunOptions,
    n: u32,
) -> Result<(Exploration, PathBuf), RunError> {
    let out_dir = match &opts.out_dir {
        Some(d) => d.clone(),
        None => default_out_dir(&format!("{}-explore", scenario.name)),
    };
    std::fs::create_dir_all(&out_dir).map_err(|source| RunError::Output {
        path: out_dir.clone(),
        source,
    })?;
    let bar = opts.progress.then(|| {
        let bar = ProgressBar::new(u64::from(n) + 1);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} runs {elapsed:>4}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix("explore");
        bar
    });
    let mut outcomes = Vec::with_capacity(n as usize + 1);
    let seeds: Vec<u64> = (1..=u64::from(n)).collect();
    for seed in seeds.iter().map(|s| Some(*s)).chain([None]) {
        if crate::interrupt::interrupted().is_some() {
            break;
        }
        let report = run_once(scenario, opts, &out_dir, seed)?;
        outcomes.push(RunOutcome::of(seed, &report));
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let exploration = summarize(&scenario.name, seeds, &outcomes);
    let text = serde_json::to_string_pretty(&exploration).expect("explore.json serializes");
    crate::fsio::write_atomic(&out_dir.join("explore.json"), text.as_bytes()).map_err(
        |source| RunError::Output {
            path: out_dir.clone(),
            source,
        },
    )?;
    Ok((exploration, out_dir))
}

/// One run of the exploration, under `seed` (`None`: free-running), in a temporary folder
/// inside `out_dir`.
fn run_once(
    scenario: &Scenario,
    opts: &RunOptions,
    out_dir: &Path,
    seed: Option<u64>,
) -> Result<Report, RunError> {
    let tmp = tempfile::Builder::new()
        .prefix(".explore-run-")
        .tempdir_in(out_dir)
        .map_err(|source| RunError::Output {
            path: out_dir.to_path_buf(),
            source,
        })?;
    let mut run_opts = opts.clone();
    run_opts.out_dir = Some(tmp.path().to_path_buf());
    run_opts.progress = false;
    let mode = match seed {
        Some(seed) => ScheduleMode::Deterministic { seed },
        None => ScheduleMode::Free,
    };
    run_opts.conf_args.extend(schedule_conf_args(mode));
    let (report, _) = run(scenario, &run_opts)?;
    Ok(report)
}

/// The `--conf` arguments that select `mode` (what `--schedule-seed` adds).
pub fn schedule_conf_args(mode: ScheduleMode) -> Vec<String> {
    match mode {
        ScheduleMode::Free => vec![format!("{}=free", crate::conf::keys::SCHEDULE)],
        ScheduleMode::Deterministic { seed } => vec![
            format!("{}=deterministic", crate::conf::keys::SCHEDULE),
            format!("{}={seed}", crate::conf::keys::SCHEDULE_SEED),
        ],
    }
}

/// The exploration as text: each varying number with its values, the combinations, and why.
pub fn explore_table(e: &Exploration, out_dir: &Path) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} runs of {}: schedule seeds 1..={} and one free-running",
        e.runs,
        e.scenario,
        e.schedule_seeds.len()
    );
    let how = |seed: Option<u64>, free: bool| match (seed, free) {
        (Some(k), true) => format!("--schedule-seed {k}, and free-running"),
        (Some(k), false) => format!("--schedule-seed {k}"),
        (None, _) => "free-running only".to_string(),
    };
    if e.varying.is_empty() {
        let _ = writeln!(s, "every count was the same in every run");
    } else {
        let _ = writeln!(s, "counts that varied:");
        for v in &e.varying {
            let _ = writeln!(s, "  {}", v.key);
            for c in &v.values {
                let _ = writeln!(
                    s,
                    "    {:>14}  {:>3} runs  ({})",
                    c.value.to_string(),
                    c.runs,
                    how(c.seed, c.free_running)
                );
            }
        }
        let _ = writeln!(s, "outcomes:");
        for (i, o) in e.outcomes.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {}. {} of {} runs ({}):",
                i + 1,
                o.runs,
                e.runs,
                how(o.seed, o.free_running)
            );
            for (k, v) in &o.values {
                let _ = writeln!(s, "       {k} = {v}");
            }
        }
    }
    if e.timing.is_empty() {
        let _ = writeln!(
            s,
            "no stage reported a contended unroll or wake-up in any run"
        );
    }
    for t in &e.timing {
        let _ = writeln!(
            s,
            "stage {} ({}) depends on timing in {} of {} runs:",
            t.stage_id, t.label, t.runs, e.runs
        );
        for (reason, n) in &t.reasons {
            let _ = writeln!(s, "  - in {n} runs: {reason}");
        }
    }
    let _ = writeln!(
        s,
        "explore.json: {}",
        out_dir.join("explore.json").display()
    );
    s
}
