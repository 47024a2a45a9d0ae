//! `python`: tasks whose work runs in PySpark-style worker processes (`crate::external`): a UDF
//! whose working set lives in the worker, and/or a `reduceByKey` the worker aggregates and
//! spills under `spark.python.worker.memory`. The worker's memory is outside the heap and counts
//! against the overhead budget; the executor checks every answer.

use super::{
    Key, KeyError, KeyType, KindDef, MAX_COUNT, RunContext, Stage, TASKS_KEY, TaskOutput, Tasks,
    Values,
};
use crate::external::task::{PythonTask, PythonTaskOutput, python_task};
use crate::external::{WorkerChoice, WorkerKind};

pub static KIND: KindDef = KindDef {
    name: "python",
    summary: "tasks run in Python worker processes, outside the heap, in the overhead budget",
    keys: &[
        TASKS_KEY,
        Key {
            name: "bytes_per_task",
            ty: KeyType::Size {
                min: 0,
                max: MAX_COUNT as u64,
            },
            default: Some("64m"),
            doc: "the UDF's working set in the worker (0: no UDF)",
        },
        Key {
            name: "records_per_task",
            ty: KeyType::Int {
                min: 0,
                max: MAX_COUNT,
            },
            default: Some("0"),
            doc: "records the worker aggregates by key (0: no aggregation)",
        },
        Key {
            name: "distinct_keys",
            ty: KeyType::Int {
                min: 1,
                max: MAX_COUNT,
            },
            default: Some("100000"),
            doc: "distinct keys of the aggregation",
        },
        Key {
            name: "worker",
            ty: KeyType::Choice(&["auto", "python3", "spillway"]),
            default: Some("auto"),
            doc: "`python3` (a real CPython worker), `spillway` (the same protocol in Rust), or `auto`: python3 when present",
        },
    ],
    parse,
};

fn parse(v: &mut Values) -> Result<Box<dyn Stage>, KeyError> {
    Ok(Box::new(Python {
        tasks: v.u32("tasks")?,
        bytes_per_task: v.size("bytes_per_task")?,
        records_per_task: v.int("records_per_task")?,
        distinct_keys: v.int("distinct_keys")?,
        worker: match v.choice("worker")? {
            "python3" => WorkerChoice::Kind(WorkerKind::Python3),
            "spillway" => WorkerChoice::Kind(WorkerKind::Spillway),
            _ => WorkerChoice::Auto,
        },
    }))
}

#[derive(Debug)]
struct Python {
    tasks: u32,
    bytes_per_task: u64,
    records_per_task: u64,
    distinct_keys: u64,
    worker: WorkerChoice,
}

impl Stage for Python {
    fn input_bytes(&self, _run: &RunContext) -> u64 {
        (self.tasks as u64).saturating_mul(self.bytes_per_task)
    }

    fn label(&self) -> String {
        "python".into()
    }

    fn start<'s>(&'s self, run: &mut RunContext, stage_id: u32) -> Tasks<'s> {
        // The worker program is chosen once per stage (and the choice reported).
        let kind = run.workers.choose(stage_id, self.worker);
        let seed = run.seed;
        Tasks {
            count: self.tasks,
            body: Box::new(move |run, ctx| {
                let kind = kind.clone()?;
                let task = PythonTask {
                    kind,
                    bytes_per_task: self.bytes_per_task,
                    records_per_task: self.records_per_task,
                    distinct_keys: self.distinct_keys,
                    seed,
                };
                Ok(TaskOutput::from(python_task(ctx, run.workers, &task)?))
            }),
        }
    }
}

impl From<PythonTaskOutput> for TaskOutput {
    fn from(o: PythonTaskOutput) -> Self {
        TaskOutput {
            records_in: o.records_in,
            records_out: o.records_out,
            digest_in: o.digest_in,
            digest_out: o.digest_out,
            spill_count: o.spill_count,
            memory_bytes_spilled: o.memory_bytes_spilled,
            disk_bytes_spilled: o.disk_bytes_spilled,
            verified: true,
            ..TaskOutput::default()
        }
    }
}
