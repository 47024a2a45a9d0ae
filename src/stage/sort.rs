//! `sort`: each task sorts its records with an external sorter (Spark's
//! `UnsafeExternalSorter`), spilling sorted runs when execution memory runs short, then merges
//! them; the output is checked to be the input, in order.

use super::{
    ClassifiedError, Key, KeyError, KeyType, KindDef, MAX_COUNT, RunContext, Stage, TASKS_KEY,
    TaskOutput, Tasks, Values, generated_bytes,
};
use crate::tasks::sort::{SortSpec, run_sort_task};

pub static KIND: KindDef = KindDef {
    name: "sort",
    summary: "an external sort per task: records into pages, sorted runs spilled under pressure, merged and checked",
    keys: &[
        TASKS_KEY,
        Key {
            name: "records_per_task",
            ty: KeyType::Int {
                min: 0,
                max: MAX_COUNT,
            },
            default: Some("1000000"),
            doc: "records each task sorts",
        },
        Key {
            name: "record_bytes",
            ty: KeyType::Size {
                min: 8,
                max: MAX_COUNT as u64,
            },
            default: Some("56"),
            doc: "bytes per record (at most the largest Tungsten page, 64 MiB, and the heap)",
        },
    ],
    parse,
};

fn parse(v: &mut Values) -> Result<Box<dyn Stage>, KeyError> {
    Ok(Box::new(Sort {
        tasks: v.u32("tasks")?,
        records_per_task: v.int("records_per_task")?,
        record_bytes: v.size("record_bytes")?,
    }))
}

#[derive(Debug)]
struct Sort {
    tasks: u32,
    records_per_task: u64,
    record_bytes: u64,
}

impl Stage for Sort {
    fn record_bytes(&self) -> Option<u64> {
        Some(self.record_bytes)
    }

    fn input_bytes(&self, _run: &RunContext) -> u64 {
        generated_bytes(self.tasks, self.records_per_task, self.record_bytes)
    }

    fn label(&self) -> String {
        "sort".into()
    }

    fn start<'s>(&'s self, run: &mut RunContext, _stage_id: u32) -> Tasks<'s> {
        let spec = SortSpec {
            records_per_task: self.records_per_task,
            record_bytes: self.record_bytes as usize,
            seed: run.seed,
        };
        Tasks {
            count: self.tasks,
            body: Box::new(move |_, ctx| {
                run_sort_task(ctx, &spec)
                    .map(TaskOutput::from)
                    .map_err(ClassifiedError::from)
            }),
        }
    }
}
