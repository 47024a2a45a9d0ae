//! `aggregate`: each task combines values by key in a spillable map (Spark's
//! `ExternalAppendOnlyMap`), spilling sorted maps under pressure and merging them; the result is
//! checked against the generator's.

use super::{
    ClassifiedError, Key, KeyError, KeyType, KindDef, MAX_COUNT, RunContext, Stage, TASKS_KEY,
    TaskOutput, Tasks, Values, generated_bytes,
};
use crate::tasks::aggregate::{AggregateSpec, run_aggregate_task};

pub static KIND: KindDef = KindDef {
    name: "aggregate",
    summary: "a `reduceByKey` per task in a spillable map: spilled under pressure, merged and checked",
    keys: &[
        TASKS_KEY,
        Key {
            name: "records_per_task",
            ty: KeyType::Int {
                min: 0,
                max: MAX_COUNT,
            },
            default: Some("1000000"),
            doc: "records each task combines",
        },
        Key {
            name: "record_bytes",
            ty: KeyType::Size {
                min: 16,
                max: MAX_COUNT as u64,
            },
            default: Some("24"),
            doc: "bytes per record (at most the largest Tungsten page, 64 MiB, and the heap)",
        },
        Key {
            name: "distinct_keys",
            ty: KeyType::Int {
                min: 1,
                max: MAX_COUNT,
            },
            default: Some("100000"),
            doc: "distinct keys the records spread over",
        },
    ],
    parse,
};

fn parse(v: &mut Values) -> Result<Box<dyn Stage>, KeyError> {
    Ok(Box::new(Aggregate {
        tasks: v.u32("tasks")?,
        records_per_task: v.int("records_per_task")?,
        record_bytes: v.size("record_bytes")?,
        distinct_keys: v.int("distinct_keys")?,
    }))
}

#[derive(Debug)]
struct Aggregate {
    tasks: u32,
    records_per_task: u64,
    record_bytes: u64,
    distinct_keys: u64,
}

impl Stage for Aggregate {
    fn record_bytes(&self) -> Option<u64> {
        Some(self.record_bytes)
    }

    fn input_bytes(&self, _run: &RunContext) -> u64 {
        generated_bytes(self.tasks, self.records_per_task, self.record_bytes)
    }

    fn label(&self) -> String {
        "aggregate".into()
    }

    fn start<'s>(&'s self, run: &mut RunContext, _stage_id: u32) -> Tasks<'s> {
        let spec = AggregateSpec {
            records_per_task: self.records_per_task,
            record_bytes: self.record_bytes as usize,
            seed: run.seed,
            distinct_keys: self.distinct_keys,
        };
        Tasks {
            count: self.tasks,
            body: Box::new(move |_, ctx| {
                run_aggregate_task(ctx, &spec)
                    .map(TaskOutput::from)
                    .map_err(ClassifiedError::from)
            }),
        }
    }
}
