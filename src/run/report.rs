//! The run's report: `report.json` (Spark's REST API names where Spark has them),
//! `timeline.csv`, the plots, and the summary table printed at the end.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::conf::{SparkConf, format_mib};
use crate::executor::Executor;
use crate::layout::{Layout, LayoutJson};
use crate::pressure::OwnCgroup;
use crate::scenario::{Expect, Scenario};
use crate::stage::CachedRdd;
use crate::storage::block_manager::ReadFrom;
use crate::timeline::Sample;

use super::{StageRun, failure_of, peak, stage_digests};

/// `report.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub spillway_version: String,
    /// The machine the run ran on (CPU, cores, memory, load at the start).
    pub machine: crate::machine::MachineInfo,
    pub scenario: ScenarioInfo,
    /// Whether every stage of the scenario ran. `false` after an interrupt, a container kill,
    /// or (written by the `--cgroup` supervisor) when the executor died.
    pub complete: bool,
    /// The signal that stopped the run (`SIGINT`, `SIGTERM`, `SIGHUP`), if one arrived before
    /// the report was built.
    pub interrupted: Option<String>,
    /// Stages whose tasks ended otherwise than the stage declared (`expect`).
    pub unexpected_stages: Vec<u32>,
    /// The stages that ran all their tasks, none killed by the interrupt.
    pub stages_finished: Vec<u32>,
    pub wall_time_ms: f64,
    /// Free-running or a deterministic schedule, and its seed.
    pub schedule: ScheduleReport,
    pub layout: LayoutJson,
    /// Every configuration value that was set, after precedence.
    pub conf: BTreeMap<String, String>,
    pub stages: Vec<StageReport>,
    pub tasks: Vec<TaskReport>,
    pub storage: StorageReport,
    pub failures: Vec<FailureReport>,
    pub memory: MemoryReport,
    pub verification: Verification,
    /// Memory outside the heap: the overhead account, the workers, the container monitor.
    pub external: crate::external::ExternalReport,
    pub timeline: TimelineInfo,
    pub plots: Vec<String>,
    /// The executor's memory cgroup, in a `run --cgroup` (written by the supervisor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<crate::pressure::report::CgroupReport>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub description: String,
    pub source: String,
    pub seed: u64,
}

impl ScenarioInfo {
    pub fn of(scenario: &Scenario) -> ScenarioInfo {
        ScenarioInfo {
            name: scenario.name.clone(),
            description: scenario.description.clone(),
            source: scenario
                .path
                .as_ref()
                .map_or_else(|| "built-in".to_string(), |p| p.display().to_string()),
            seed: scenario.seed,
        }
    }
}

/// One stage, as the REST API's `StageData` names it, plus spillway's spill and evict timings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageReport {
    pub stage_id: u32,
    pub kind: String,
    /// A short description, e.g. `cache rdd 1`.
    pub label: String,
    /// The stage's keys as it ran with them (given or default).
    pub params: serde_json::Map<String, serde_json::Value>,
    /// What the scenario declared: `success`, or `failure` (a reproduced OOM).
    pub expect: Expect,
    /// Whether the tasks ended as declared: all succeeded and verified for `success`, at least
    /// one failed for `failure`.
    pub outcome_as_expected: bool,
    pub num_tasks: u32,
    pub num_complete_tasks: u32,
    pub num_failed_tasks: u32,
    /// Tasks stopped by a signal, or never launched after it (Spark's `numKilledTasks`).
    pub num_killed_tasks: u32,
    pub memory_bytes_spilled: u64,
    pub disk_bytes_spilled: u64,
    /// Sum over tasks, as Spark's stage metrics sum task metrics.
    pub peak_execution_memory: u64,
    /// Sums over tasks of each task's peak per mode (Spark 4's task metrics of these names).
    pub peak_on_heap_execution_memory: u64,
    pub peak_off_heap_execution_memory: u64,
    pub max_task_peak_execution_memory: u64,
    /// Sum of the tasks' run times (ms), as Spark reports it.
    pub executor_run_time: u64,
    pub wall_time_ms: f64,
    pub spill_count: u64,
    pub spill_write_time_ms: f64,
    pub spill_read_time_ms: f64,
    /// Disk bytes spilled per second of spill write time (MiB/s).
    pub spill_write_mib_per_s: f64,
    pub eviction_count: u64,
    pub evicted_bytes: u64,
    pub bytes_dropped_to_disk: u64,
    pub eviction_time_ms: f64,
    pub acquire_wait_count: u64,
    pub acquire_wait_time_ms: f64,
    pub records_in: u64,
    pub records_out: u64,
    pub verified: bool,
    /// Whether the stage's outcome could have been different in another run of the same
    /// scenario and seed, and the deterministic schedule it ran under.
    pub timing: TimingReport,
    /// The numbers only this stage's kind has (`Stage::report_fields`), beside the common ones:
    /// a scan's `memoryHits`, `diskHits`, `recomputes`; a UDF's `peakUserMemory`.
    #[serde(flatten)]
    pub kind_fields: serde_json::Map<String, serde_json::Value>,
}

/// What in a stage depended on how its tasks interleaved (docs/spark-model.md §24).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimingReport {
    /// Blocks that failed to unroll while another task held unroll memory in the same mode.
    pub contended_unroll_failures: u64,
    /// Releases that woke two or more tasks blocked for execution memory at once.
    pub contended_wakeups: u64,
    /// Either of the two happened: another interleaving could have given other numbers.
    pub could_differ: bool,
    /// The same, in words.
    pub reasons: Vec<String>,
    /// The stage's deterministic schedule: its seed (derived from the run's schedule seed
    /// and the stage id); null free-running.
    pub schedule_seed: Option<u64>,
    /// Turn points where the seed chose among two or more ready tasks.
    pub schedule_choices: u64,
    /// Times the turn passed from one task's thread to another.
    pub schedule_switches: u64,
    /// Every task was blocked at once and the schedule stopped ordering them.
    pub schedule_abandoned: bool,
}

impl TimingReport {
    fn of(s: &StageRun) -> TimingReport {
        let unroll =
            s.storage_after.contended_unroll_failures - s.storage_before.contended_unroll_failures;
        let mut reasons = Vec::new();
        if unroll > 0 {
            reasons.push(format!(
                "{unroll} block(s) failed to unroll while another task held unroll memory: \
                 which block fits depends on how the tasks' reservations interleave"
            ));
        }
        if s.contended_wakeups > 0 {
            reasons.push(format!(
                "{} release(s) woke two or more tasks blocked for execution memory: which one \
                 takes the memory first depends on timing",
                s.contended_wakeups
            ));
        }
        let sched = s.schedule.unwrap_or_default();
        TimingReport {
            contended_unroll_failures: unroll,
            contended_wakeups: s.contended_wakeups,
            could_differ: !reasons.is_empty(),
            reasons,
            schedule_seed: s.schedule.map(|x| x.seed),
            schedule_choices: sched.stats.choices,
            schedule_switches: sched.stats.switches,
            schedule_abandoned: sched.stats.abandoned,
        }
    }
}

/// How the run's stages interleaved their tasks at the memory manager.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScheduleReport {
    /// `free` or `deterministic` (`spillway.schedule`).
    pub mode: String,
    /// `spillway.schedule.seed` (`--schedule-seed`) of a deterministic run; null free-running.
    pub seed: Option<u64>,
}

/// The summary's lines on timing: under a schedule, its seed; free-running, each stage whose
/// outcome could have differed, and how to pin it or see the alternatives.
fn timing_lines(report: &Report) -> String {
    let mut out = String::new();
    if let Some(seed) = report.schedule.seed {
        out.push_str(&format!(
            "\ndeterministic schedule, seed {seed}: the same scenario and seed give these counts again\n"
        ));
    }
    for s in report.stages.iter().filter(|s| s.timing.could_differ) {
        out.push_str(&format!(
            "\nstage {} ({}) could have ended differently: {}\n",
            s.stage_id,
            s.label,
            s.timing.reasons.join("; ")
        ));
    }
    if report.schedule.seed.is_none() && report.stages.iter().any(|s| s.timing.could_differ) {
        out.push_str(
            "  (--schedule-seed K pins the order of the tasks' memory requests; --explore N \
             lists the outcomes N seeds give)\n",
        );
    }
    out
}

/// One task, as the REST API's `TaskData` names it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    pub task_id: u64,
    pub stage_id: u32,
    pub index: u32,
    pub status: String,
    pub peak_execution_memory: u64,
    pub peak_on_heap_execution_memory: u64,
    pub peak_off_heap_execution_memory: u64,
    pub memory_bytes_spilled: u64,
    pub disk_bytes_spilled: u64,
    pub executor_run_time: u64,
    pub spill_count: u64,
    pub acquire_wait_time_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_from: Option<ReadFrom>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The numbers only this task's kind has (a shuffle task's `shuffleWriteBytes`, ...).
    #[serde(flatten)]
    pub kind_fields: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StorageReport {
    pub rdds: Vec<RddReport>,
    /// Blocks that are not RDD partitions (broadcasts) in memory and on disk.
    pub other_blocks_memory_used: u64,
}

/// One cached RDD, as the REST API's `RDDStorageInfo` names it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RddReport {
    pub id: u32,
    pub name: String,
    pub storage_level: String,
    pub num_partitions: u32,
    pub num_cached_partitions: u64,
    pub memory_used: u64,
    pub disk_used: u64,
    pub partitions_in_memory: u64,
    pub partitions_on_disk: u64,
    pub disk_file_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureReport {
    /// `null` when the whole executor died (Spark's `ExecutorLostFailure`), not one task.
    pub stage_id: Option<u32>,
    pub task_id: Option<u64>,
    pub error: String,
    pub message: String,
    /// The container's numbers, when the executor's memory cgroup ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_usage_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
}

/// Peaks per region and the gap between what the model accounts and what is resident.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemoryReport {
    pub reserved_bytes: u64,
    pub peak_user_bytes: u64,
    pub peak_on_heap_execution_bytes: u64,
    pub peak_on_heap_storage_bytes: u64,
    pub peak_off_heap_execution_bytes: u64,
    pub peak_off_heap_storage_bytes: u64,
    pub peak_accounted_bytes: u64,
    pub peak_rss_bytes: u64,
    pub peak_cgroup_usage_bytes: u64,
    /// Largest |resident − accounted| the sampler saw, at any instant.
    pub max_gap_bytes: u64,
    /// The same over samples with memory at rest (see `gap.explanation`).
    pub max_settled_gap_bytes: u64,
    pub gap: GapReport,
    pub psi_some_total_us: u64,
    pub psi_full_total_us: u64,
    pub cgroup: Option<String>,
    pub warnings_logged: u64,
}

/// What the largest gap with memory at rest consisted of.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GapReport {
    pub at_ms: f64,
    pub rss_bytes: u64,
    pub accounted_bytes: u64,
    /// Resident before the heap was mapped: the binary, its libraries, its malloc heap.
    pub process_baseline_bytes: u64,
    /// Freed pages the allocators keep for reuse (resident, no longer accounted).
    pub pooled_free_pages_bytes: u64,
    /// What the parts above do not explain (thread stacks, I/O buffers, allocator slack,
    /// reservations running ahead of bytes written).
    pub unexplained_bytes: i64,
    /// Whether the settled gap stayed within max(5% of the peak accounted memory, 64 MiB).
    pub within_bound: bool,
    pub explanation: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Verification {
    pub records_in: u64,
    pub records_out: u64,
    pub digest_in: String,
    pub digest_out: String,
    pub stages_verified: u32,
    pub stages_failed_verification: Vec<u32>,
    pub ok: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimelineInfo {
    pub csv: String,
    pub samples: usize,
    pub interval_ms: u64,
}

pub(crate) struct Inputs<'a> {
    /// Warnings this run logged.
    pub warnings_logged: u64,
    pub machine: crate::machine::MachineInfo,
    pub scenario: &'a Scenario,
    pub conf: &'a SparkConf,
    pub layout: &'a Layout,
    pub executor: &'a Executor,
    pub stages: &'a [StageRun],
    /// The RDDs still cached at the end.
    pub rdds: &'a BTreeMap<u32, CachedRdd>,
    /// The plot files the run draws after the report.
    pub plots: &'a [&'a str],
    pub samples: &'a [Sample],
    pub baseline_rss: u64,
    pub wall: Duration,
    pub interval_ms: u64,
    pub cgroup: Option<&'a OwnCgroup>,
    pub external: crate::external::ExternalReport,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn build(i: Inputs) -> Report {
    let mut stages = Vec::new();
    let mut tasks = Vec::new();
    let mut failures = Vec::new();
    let mut verification = Verification {
        records_in: 0,
        records_out: 0,
        digest_in: String::new(),
        digest_out: String::new(),
        stages_verified: 0,
        stages_failed_verification: Vec::new(),
        ok: true,
    };
    let (mut all_in, mut all_out) = (
        crate::spill::RecordDigest::default(),
        crate::spill::RecordDigest::default(),
    );
    let mut stages_finished = Vec::new();
    for s in i.stages {
        let mut r = StageReport {
            stage_id: s.stage_id,
            kind: s.kind.into(),
            label: s.label.clone(),
            params: s.params.clone(),
            expect: s.expect,
            outcome_as_expected: true,
            num_tasks: s.runs.len() as u32,
            num_complete_tasks: 0,
            num_failed_tasks: 0,
            num_killed_tasks: 0,
            memory_bytes_spilled: 0,
            disk_bytes_spilled: 0,
            peak_execution_memory: 0,
            peak_on_heap_execution_memory: 0,
            peak_off_heap_execution_memory: 0,
            max_task_peak_execution_memory: 0,
            executor_run_time: 0,
            wall_time_ms: ms(s.wall),
            spill_count: 0,
            spill_write_time_ms: 0.0,
            spill_read_time_ms: 0.0,
            spill_write_mib_per_s: 0.0,
            eviction_count: s.storage_after.blocks_evicted - s.storage_before.blocks_evicted,
            evicted_bytes: s.storage_after.bytes_evicted - s.storage_before.bytes_evicted,
            bytes_dropped_to_disk: s.storage_after.bytes_dropped_to_disk
                - s.storage_before.bytes_dropped_to_disk,
            eviction_time_ms: (s.storage_after.eviction_ns - s.storage_before.eviction_ns) as f64
                / 1e6,
            acquire_wait_count: 0,
            acquire_wait_time_ms: 0.0,
            records_in: 0,
            records_out: 0,
            kind_fields: s.kind_fields.clone(),
            verified: true,
            timing: TimingReport::of(s),
        };
        let mut spill_write_ns = 0u64;
        for run in &s.runs {
            r.peak_execution_memory += run.peak_execution_memory;
            r.peak_on_heap_execution_memory += run.peak_on_heap_execution_memory;
            r.peak_off_heap_execution_memory += run.peak_off_heap_execution_memory;
            r.max_task_peak_execution_memory = r
                .max_task_peak_execution_memory
                .max(run.peak_execution_memory);
            r.executor_run_time += run.run_time.as_millis() as u64;
            r.acquire_wait_count += run.waits.waits;
            r.acquire_wait_time_ms += ms(run.waits.waited);
            let mut t = TaskReport {
                task_id: run.task_attempt_id,
                stage_id: s.stage_id,
                index: run.partition,
                status: "SUCCESS".into(),
                peak_execution_memory: run.peak_execution_memory,
                peak_on_heap_execution_memory: run.peak_on_heap_execution_memory,
                peak_off_heap_execution_memory: run.peak_off_heap_execution_memory,
                memory_bytes_spilled: 0,
                disk_bytes_spilled: 0,
                executor_run_time: run.run_time.as_millis() as u64,
                spill_count: 0,
                acquire_wait_time_ms: ms(run.waits.waited),
                read_from: None,
                error: None,
                kind_fields: serde_json::Map::new(),
            };
            match &run.result {
                Ok(o) => {
                    r.num_complete_tasks += 1;
                    r.memory_bytes_spilled += o.memory_bytes_spilled;
                    r.disk_bytes_spilled += o.disk_bytes_spilled;
                    r.spill_count += o.spill_count;
                    spill_write_ns += o.spill_write_ns;
                    r.spill_read_time_ms += o.spill_read_ns as f64 / 1e6;
                    r.records_in += o.records_in;
                    r.records_out += o.records_out;
                    r.verified &= o.verified;
                    t.memory_bytes_spilled = o.memory_bytes_spilled;
                    t.disk_bytes_spilled = o.disk_bytes_spilled;
                    t.spill_count = o.spill_count;
                    t.read_from = o.read_from;
                    t.kind_fields = o.kind_fields.clone();
                }
                Err(f) if f.is_interrupt() => {
                    r.num_killed_tasks += 1;
                    t.status = "KILLED".into();
                    t.error = Some(format!("TaskKilled ({f})"));
                }
                Err(_) => {
                    r.num_failed_tasks += 1;
                    t.status = "FAILED".into();
                    if let Some((class, message)) = failure_of(run) {
                        t.error = Some(class.clone());
                        failures.push(FailureReport {
                            stage_id: Some(s.stage_id),
                            task_id: Some(run.task_attempt_id),
                            error: class,
                            message,
                            ..FailureReport::default()
                        });
                    }
                }
            }
            // A task never launched has no attempt: it is counted, not listed.
            if !matches!(
                run.result,
                Err(crate::scheduler::TaskFailure::NotLaunched(_))
            ) {
                tasks.push(t);
            }
        }
        if r.num_killed_tasks == 0 {
            stages_finished.push(s.stage_id);
        }
        r.spill_write_time_ms = spill_write_ns as f64 / 1e6;
        if spill_write_ns > 0 {
            r.spill_write_mib_per_s =
                r.disk_bytes_spilled as f64 / (1 << 20) as f64 / (spill_write_ns as f64 / 1e9);
        }
        let (din, dout) = stage_digests(&s.runs);
        all_in = all_in.combine(din);
        all_out = all_out.combine(dout);
        verification.records_in += r.records_in;
        verification.records_out += r.records_out;
        // A failed task is reported as a failure, not as a verification error; what did run
        // must have verified.
        if r.verified {
            verification.stages_verified += 1;
        } else {
            verification.stages_failed_verification.push(s.stage_id);
            verification.ok = false;
        }
        stages.push(r);
    }
    verification.digest_in = format!("{}:{:016x}", all_in.records, all_in.hash_sum);
    verification.digest_out = format!("{}:{:016x}", all_out.records, all_out.hash_sum);

    let bm = i.executor.block_manager();
    let rdds = i
        .rdds
        .values()
        .map(|c| {
            let s = bm.rdd_storage(c.id);
            RddReport {
                id: c.id,
                name: c.name.clone(),
                storage_level: c.level.description(),
                num_partitions: c.partitions,
                num_cached_partitions: s.num_cached_partitions,
                memory_used: s.memory_used,
                disk_used: s.disk_used,
                partitions_in_memory: s.partitions_in_memory,
                partitions_on_disk: s.partitions_on_disk,
                disk_file_bytes: s.disk_file_bytes,
            }
        })
        .collect::<Vec<_>>();
    let rdd_memory: u64 = rdds.iter().map(|r| r.memory_used).sum();
    let total_memory = bm
        .memory_store()
        .memory_used(crate::memory::MemoryMode::OnHeap)
        + bm.memory_store()
            .memory_used(crate::memory::MemoryMode::OffHeap);

    let memory = memory_report(&i);
    // YARN killed the container: the run's own failure, after the tasks it took down.
    if let Some(k) = &i.external.container_monitor.kill {
        failures.push(FailureReport {
            // The executor's failure, in the stage it was running; no one task's.
            stage_id: i.stages.last().map(|s| s.stage_id),
            task_id: None,
            error: "CONTAINER_KILLED_PHYSICAL_MEMORY".into(),
            message: format!(
                "{} (exit status {}; executor {} bytes + Python workers {} bytes = {} bytes \
                 resident, container {} bytes)",
                k.message,
                k.exit_status,
                k.executor_rss_bytes,
                k.workers_rss_bytes,
                k.total_rss_bytes,
                k.container_bytes
            ),
            exit_status: Some(k.exit_status),
            ..FailureReport::default()
        });
        verification.ok = false;
    }
    // Whether each stage ended as declared; a container kill fails the stage it ran in.
    let killed_in = i
        .external
        .container_monitor
        .kill
        .as_ref()
        .and(i.stages.last().map(|s| s.stage_id));
    for r in &mut stages {
        let failed = r.num_failed_tasks > 0 || killed_in == Some(r.stage_id);
        r.outcome_as_expected = match r.expect {
            Expect::Success => !failed && r.verified,
            Expect::Failure => failed,
        };
    }
    let unexpected_stages = stages
        .iter()
        .filter(|r| !r.outcome_as_expected)
        .map(|r| r.stage_id)
        .collect();
    Report {
        spillway_version: env!("CARGO_PKG_VERSION").into(),
        machine: i.machine,
        complete: stages_finished.len() == i.scenario.stages.len() && killed_in.is_none(),
        interrupted: crate::interrupt::interrupted().map(|s| s.name().to_string()),
        stages_finished,
        unexpected_stages,
        scenario: ScenarioInfo::of(i.scenario),
        wall_time_ms: ms(i.wall),
        schedule: match i.executor.schedule() {
            crate::interleave::ScheduleMode::Free => ScheduleReport {
                mode: "free".into(),
                seed: None,
            },
            crate::interleave::ScheduleMode::Deterministic { seed } => ScheduleReport {
                mode: "deterministic".into(),
                seed: Some(seed),
            },
        },
        layout: i.layout.to_json(),
        conf: i
            .conf
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        stages,
        tasks,
        storage: StorageReport {
            rdds,
            other_blocks_memory_used: total_memory.saturating_sub(rdd_memory),
        },
        failures,
        memory,
        verification,
        external: i.external,
        timeline: TimelineInfo {
            csv: "timeline.csv".into(),
            samples: i.samples.len(),
            interval_ms: i.interval_ms,
        },
        plots: i.plots.iter().map(|s| s.to_string()).collect(),
        cgroup: None,
    }
}

fn memory_report(i: &Inputs) -> MemoryReport {
    let s = i.samples;
    let worst = s
        .iter()
        .max_by_key(|x| x.gap().unsigned_abs())
        .copied()
        .unwrap_or_default();
    let settled = s
        .windows(2)
        .filter(|w| w[1].settled_after(&w[0]))
        .map(|w| w[1])
        .max_by_key(|x| x.gap().unsigned_abs())
        .unwrap_or(worst);
    let peak_accounted = peak(s, Sample::accounted);
    let bound = (peak_accounted / 20).max(64 << 20);
    let unexplained = settled.gap() - i.baseline_rss as i64 - settled.pooled_free_pages as i64;
    let within = settled.gap().unsigned_abs() <= bound;
    let explanation = format!(
        "With memory at rest (accounted total unchanged between two samples, resident memory \
         steady, no page being zeroed), the largest gap was at {:.0} ms: {} MiB resident against {} MiB accounted \
         (reserved + user + storage + execution, both modes) and {} MiB of shuffle fetch \
         buffers (native memory, counted apart), a gap of {} MiB. Of it, {} MiB \
         is the process itself before the heap was mapped (binary, libraries, malloc), {} MiB \
         are freed pages the allocators keep for reuse, and {} MiB is the rest: thread \
         stacks, spill and merge buffers, verification state, and unroll reservations, which \
         run ahead of the bytes written or, between size checks (every 16 records), behind \
         them. The bound is max(5% of the peak accounted {} MiB, \
         64 MiB) = {} MiB: {}. At any instant the largest gap was {} MiB at {:.0} ms, while a \
         bulk operation ran ({} MiB of pages being zeroed): a new page is accounted when it is \
         granted and resident once written, as in a JVM.",
        settled.t_ms,
        format_mib(settled.rss),
        format_mib(settled.accounted()),
        format_mib(settled.fetch_bytes_in_flight),
        signed_mib(settled.gap()),
        format_mib(i.baseline_rss),
        format_mib(settled.pooled_free_pages),
        signed_mib(unexplained),
        format_mib(peak_accounted),
        format_mib(bound),
        if within { "within it" } else { "outside it" },
        signed_mib(worst.gap()),
        worst.t_ms,
        format_mib(worst.zeroing),
    );
    let last = s.last().copied().unwrap_or_default();
    let first = s.first().copied().unwrap_or_default();
    MemoryReport {
        reserved_bytes: i.layout.reserved as u64,
        peak_user_bytes: peak(s, |x| x.user_used),
        peak_on_heap_execution_bytes: peak(s, |x| x.on_heap_execution_used),
        peak_on_heap_storage_bytes: peak(s, |x| x.on_heap_storage_used),
        peak_off_heap_execution_bytes: peak(s, |x| x.off_heap_execution_used),
        peak_off_heap_storage_bytes: peak(s, |x| x.off_heap_storage_used),
        peak_accounted_bytes: peak_accounted,
        peak_rss_bytes: peak(s, |x| x.rss),
        peak_cgroup_usage_bytes: peak(s, |x| x.cgroup_usage),
        max_gap_bytes: worst.gap().unsigned_abs(),
        max_settled_gap_bytes: settled.gap().unsigned_abs(),
        gap: GapReport {
            at_ms: settled.t_ms,
            rss_bytes: settled.rss,
            accounted_bytes: settled.accounted(),
            process_baseline_bytes: i.baseline_rss,
            pooled_free_pages_bytes: settled.pooled_free_pages,
            unexplained_bytes: unexplained,
            within_bound: within,
            explanation,
        },
        psi_some_total_us: last
            .psi_some_total_us
            .saturating_sub(first.psi_some_total_us),
        psi_full_total_us: last
            .psi_full_total_us
            .saturating_sub(first.psi_full_total_us),
        cgroup: i
            .cgroup
            .map(|c| format!("{:?} {}", c.version, c.memory_dir.display())),
        warnings_logged: i.warnings_logged,
    }
}

fn signed_mib(v: i64) -> String {
    if v < 0 {
        format!("-{}", format_mib(v.unsigned_abs()))
    } else {
        format_mib(v as u64)
    }
}

/// Writes report.json and timeline.csv into `out_dir` (the plots are a later step).
pub(crate) fn write(report: &Report, samples: &[Sample], out_dir: &Path) -> std::io::Result<()> {
    write_report(report, out_dir)?;
    let mut csv = Vec::new();
    write_csv(samples, &mut csv)?;
    crate::fsio::write_atomic(&out_dir.join("timeline.csv"), &csv)
}

/// Writes `out_dir/report.json` atomically.
pub fn write_report(report: &Report, out_dir: &Path) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    crate::fsio::write_atomic(&out_dir.join("report.json"), &json)
}

const CSV_HEADER: &str = "t_ms,stage,on_heap_execution_pool,on_heap_execution_used,\
on_heap_storage_pool,on_heap_storage_used,off_heap_execution_pool,off_heap_execution_used,\
off_heap_storage_pool,off_heap_storage_used,user_used,reserved,accounted,rss,cgroup_usage,\
psi_some_avg10,psi_full_avg10,psi_some_total_us,psi_full_total_us,active_tasks,waiting_tasks,\
spills,spill_bytes,evictions,evicted_bytes,pooled_free_pages,zeroing,workers_rss,\
fetch_bytes_in_flight,event";

fn write_csv(samples: &[Sample], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{CSV_HEADER}")?;
    let mut prev: Option<&Sample> = None;
    for s in samples {
        let mut events = Vec::new();
        if let Some(p) = prev {
            if s.spills > p.spills {
                events.push(format!("spill:{}", s.spills - p.spills));
            }
            if s.evictions > p.evictions {
                events.push(format!("evict:{}", s.evictions - p.evictions));
            }
        }
        writeln!(
            out,
            "{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.2},{:.2},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            s.t_ms,
            s.stage,
            s.on_heap_execution_pool,
            s.on_heap_execution_used,
            s.on_heap_storage_pool,
            s.on_heap_storage_used,
            s.off_heap_execution_pool,
            s.off_heap_execution_used,
            s.off_heap_storage_pool,
            s.off_heap_storage_used,
            s.user_used,
            s.reserved,
            s.accounted(),
            s.rss,
            s.cgroup_usage,
            s.psi_some_avg10,
            s.psi_full_avg10,
            s.psi_some_total_us,
            s.psi_full_total_us,
            s.active_tasks,
            s.waiting_tasks,
            s.spills,
            s.spill_bytes,
            s.evictions,
            s.evicted_bytes,
            s.pooled_free_pages,
            s.zeroing,
            s.workers_rss,
            s.fetch_bytes_in_flight,
            events.join(";")
        )?;
        prev = Some(s);
    }
    Ok(())
}

/// What ended otherwise than the scenario declared, one line per stage: the failed tasks'
/// error classes and counts, or a declared failure that did not happen. `None` when every
/// stage ended as declared.
pub fn unexpected_outcomes(report: &Report) -> Option<String> {
    if report.unexpected_stages.is_empty() {
        return None;
    }
    let mut lines = Vec::new();
    for s in report
        .stages
        .iter()
        .filter(|s| report.unexpected_stages.contains(&s.stage_id))
    {
        let mut classes: BTreeMap<&str, u32> = BTreeMap::new();
        let mut tasks = Vec::new();
        for f in report
            .failures
            .iter()
            .filter(|f| f.stage_id == Some(s.stage_id))
        {
            *classes.entry(f.error.as_str()).or_default() += 1;
            if let Some(t) = f.task_id {
                tasks.push(t.to_string());
            }
        }
        let line = match s.expect {
            Expect::Failure => format!(
                "stage {} ({}) declares expect = \"failure\" but none of its {} tasks failed",
                s.stage_id, s.label, s.num_tasks
            ),
            Expect::Success if classes.is_empty() => format!(
                "stage {} ({}) did not verify its output",
                s.stage_id, s.label
            ),
            Expect::Success => format!(
                "stage {} ({}): tasks {} failed: {}",
                s.stage_id,
                s.label,
                tasks.join(", "),
                classes
                    .iter()
                    .map(|(c, n)| format!("{c} x{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        lines.push(line);
    }
    Some(lines.join("\n"))
}

/// The table printed at the end of a run.
/// The shuffle stages' write and read numbers, and why each map stage got its writer.
fn shuffle_table(report: &Report) -> String {
    let num = |s: &StageReport, k: &str| s.kind_fields.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let text = |s: &StageReport, k: &str| {
        s.kind_fields
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let shuffles: Vec<&StageReport> = report
        .stages
        .iter()
        .filter(|s| s.kind_fields.contains_key("shuffleId"))
        .collect();
    if shuffles.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n{:>7} {:>5} {:<5} {:<29} {:>11} {:>10} {:>10} {:>11} {:>8} {:>10}\n",
        "shuffle",
        "stage",
        "side",
        "writer / operation",
        "records",
        "MiB",
        "remote MiB",
        "to disk MiB",
        "wait ms",
        "flight MiB"
    );
    let mut reasons = String::new();
    for s in &shuffles {
        let id = num(s, "shuffleId");
        if s.kind_fields.contains_key("shuffleWriter") {
            out.push_str(&format!(
                "{:>7} {:>5} {:<5} {:<29} {:>11} {:>10}\n",
                id,
                s.stage_id,
                "write",
                text(s, "shuffleWriter"),
                num(s, "shuffleWriteRecords"),
                format_mib(num(s, "shuffleWriteBytes")),
            ));
            reasons.push_str(&format!(
                "shuffle {id}: {} ({}, codec {}) because {}\n",
                text(s, "shuffleWriter"),
                text(s, "shuffleSerializer"),
                s.kind_fields
                    .get("shuffleCompressionCodec")
                    .and_then(|v| v.as_str())
                    .unwrap_or("none"),
                text(s, "shuffleWriterReason")
            ));
        } else {
            out.push_str(&format!(
                "{:>7} {:>5} {:<5} {:<29} {:>11} {:>10} {:>10} {:>11} {:>8} {:>10}\n",
                id,
                s.stage_id,
                "read",
                text(s, "shuffleOperation"),
                num(s, "shuffleReadRecords"),
                format_mib(num(s, "shuffleReadBytes")),
                format_mib(num(s, "shuffleRemoteBytesRead")),
                format_mib(num(s, "shuffleRemoteBytesReadToDisk")),
                num(s, "shuffleFetchWaitTime"),
                format_mib(num(s, "shufflePeakBytesInFlight")),
            ));
        }
    }
    out.push_str(&reasons);
    out
}

pub fn summary_table(report: &Report, out_dir: &Path) -> String {
    let mut out = String::new();
    let l = &report.layout;
    out.push_str(&format!(
        "scenario {} — heap {} MiB: reserved {}, user {}, unified {} (storage region {}), off-heap {} MiB; {} cores\n\n",
        report.scenario.name,
        format_mib(l.system_memory as u64),
        format_mib(l.reserved as u64),
        format_mib(l.user as u64),
        format_mib(l.unified as u64),
        format_mib(l.storage_region as u64),
        format_mib(l.off_heap as u64),
        l.cores
    ));
    out.push_str(&format!(
        "{:>5} {:<10} {:>9} {:>12} {:>12} {:>11} {:>9} {:>10} {:>9}  {}\n",
        "stage",
        "kind",
        "tasks",
        "spill mem",
        "spill disk",
        "peak exec",
        "evicted",
        "wait ms",
        "time ms",
        "verified"
    ));
    for s in &report.stages {
        out.push_str(&format!(
            "{:>5} {:<10} {:>9} {:>8} MiB {:>8} MiB {:>7} MiB {:>9} {:>10.0} {:>9.0}  {}\n",
            s.stage_id,
            s.kind,
            format!("{}/{}", s.num_complete_tasks, s.num_tasks),
            format_mib(s.memory_bytes_spilled),
            format_mib(s.disk_bytes_spilled),
            format_mib(s.max_task_peak_execution_memory),
            s.eviction_count,
            s.acquire_wait_time_ms,
            s.wall_time_ms,
            if s.verified { "ok" } else { "NO" }
        ));
        let shuffle_stage = s.kind_fields.contains_key("shuffleId");
        if !s.kind_fields.is_empty() && !shuffle_stage {
            let fields: Vec<String> = s
                .kind_fields
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out.push_str(&format!("{:>17} {}\n", "", fields.join(", ")));
        }
    }
    out.push_str(&shuffle_table(report));
    if !report.storage.rdds.is_empty() {
        out.push_str("\nrdd  name              level                                              cached  memory MiB   disk MiB\n");
        for r in &report.storage.rdds {
            out.push_str(&format!(
                "{:<4} {:<17} {:<50} {:>3}/{:<3} {:>10} {:>10}\n",
                r.id,
                r.name,
                r.storage_level,
                r.num_cached_partitions,
                r.num_partitions,
                format_mib(r.memory_used),
                format_mib(r.disk_used)
            ));
        }
    }
    out.push_str(&timing_lines(report));
    for f in &report.failures {
        let first_line = f.message.lines().next().unwrap_or("");
        // Spark's messages often start with their error class already.
        let text = if first_line.starts_with(&format!("[{}]", f.error)) {
            first_line.to_string()
        } else {
            format!("[{}] {first_line}", f.error)
        };
        let place = match (f.stage_id, f.task_id) {
            (Some(s), Some(t)) => format!("stage {s} task {t}"),
            (Some(s), None) => format!("stage {s} (the executor)"),
            _ => "the executor".to_string(),
        };
        out.push_str(&format!("\nFAILED {place}: {text}\n"));
    }
    let m = &report.memory;
    out.push_str(&format!(
        "\npeak RSS {} MiB; peak accounted {} MiB; accounted-vs-resident gap at rest {} MiB ({}), at any instant {} MiB\n",
        format_mib(m.peak_rss_bytes),
        format_mib(m.peak_accounted_bytes),
        format_mib(m.max_settled_gap_bytes),
        if m.gap.within_bound {
            "within bound"
        } else {
            "OUTSIDE bound"
        },
        format_mib(m.max_gap_bytes)
    ));
    let x = &report.external;
    if x.workers_started > 0 {
        out.push_str(&format!(
            "python workers: {} started ({} failed and replaced), peak RSS {} MiB; overhead used {} \
             MiB of {} MiB budget; container peak {} MiB of {} MiB ({})\n",
            x.workers_started,
            x.workers_failed,
            format_mib(x.peak_workers_rss_bytes),
            format_mib(x.peak_overhead_used_bytes),
            format_mib(x.overhead_budget_bytes),
            format_mib(x.container_monitor.peak_total_rss_bytes),
            format_mib(x.container_monitor.limit_bytes),
            if x.container_monitor.killed { "KILLED" } else { "not killed" }
        ));
    }
    if let Some(signal) = &report.interrupted {
        out.push_str(&format!(
            "INTERRUPTED by {signal}: stages finished {:?}; the report is marked incomplete\n",
            report.stages_finished
        ));
    }
    out.push_str(&format!(
        "verification: {} ({} records in, {} out, over the tasks that completed; {} tasks failed); wall time {:.0} ms\n",
        if report.verification.ok {
            "ok"
        } else {
            "FAILED"
        },
        report.verification.records_in,
        report.verification.records_out,
        report.failures.len(),
        report.wall_time_ms
    ));
    out.push_str(&format!(
        "report: {}\n",
        PathBuf::from(out_dir).join("report.json").display()
    ));
    out
}
