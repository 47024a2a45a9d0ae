//! `udf`: a UDF that builds objects in user memory — outside the unified manager, as Spark's
//! user memory is — writes and re-reads them; past the user region it fails with the task's
//! `java.lang.OutOfMemoryError: Java heap space`.

use super::{
    ClassifiedError, Key, KeyError, KeyType, KindDef, MAX_COUNT, RunContext, Stage, StageTaskRun,
    TASKS_KEY, TaskOutput, Tasks, Values,
};
use crate::data::stream_seed;
use crate::scheduler::TaskContext;
use crate::spill::RecordDigest;

pub static KIND: KindDef = KindDef {
    name: "udf",
    summary: "a UDF building objects in user memory; past the user region, `java.lang.OutOfMemoryError`",
    keys: &[
        TASKS_KEY,
        Key {
            name: "bytes_per_task",
            ty: KeyType::Size {
                min: 0,
                max: MAX_COUNT as u64,
            },
            default: Some("64m"),
            doc: "bytes of objects each task holds at once",
        },
        Key {
            name: "object_bytes",
            ty: KeyType::Size {
                min: 1,
                max: MAX_COUNT as u64,
            },
            default: Some("64k"),
            doc: "bytes per object",
        },
    ],
    parse,
};

fn parse(v: &mut Values) -> Result<Box<dyn Stage>, KeyError> {
    Ok(Box::new(Udf {
        tasks: v.u32("tasks")?,
        bytes_per_task: v.size("bytes_per_task")?,
        object_bytes: v.size("object_bytes")?,
    }))
}

#[derive(Debug)]
struct Udf {
    tasks: u32,
    bytes_per_task: u64,
    object_bytes: u64,
}

impl Stage for Udf {
    fn input_bytes(&self, _run: &RunContext) -> u64 {
        (self.tasks as u64).saturating_mul(self.bytes_per_task)
    }

    fn label(&self) -> String {
        "udf".into()
    }

    /// The most user memory one task held (Spark does not account it; spillway maps it).
    fn report_fields(&self, runs: &[StageTaskRun]) -> serde_json::Map<String, serde_json::Value> {
        let peak = runs
            .iter()
            .filter_map(|r| r.result.as_ref().ok())
            .map(|o| o.user_bytes)
            .max()
            .unwrap_or(0);
        let mut m = serde_json::Map::new();
        m.insert("peakUserMemory".into(), peak.into());
        m
    }

    fn start<'s>(&'s self, run: &mut RunContext, _stage_id: u32) -> Tasks<'s> {
        let seed = run.seed;
        Tasks {
            count: self.tasks,
            body: Box::new(move |_, ctx| {
                udf_task(ctx, self.bytes_per_task, self.object_bytes, seed)
            }),
        }
    }
}

/// One UDF task: `bytes` of objects of `object_bytes` in the task's user arena, written from a
/// seeded stream and read back.
pub fn udf_task(
    ctx: &TaskContext,
    bytes: u64,
    object_bytes: u64,
    seed: u64,
) -> Result<TaskOutput, ClassifiedError> {
    let arena = ctx.executor.user_arena();
    let mut objects: Vec<&mut [u8]> = Vec::new();
    let mut allocated = 0u64;
    let mut digest = RecordDigest::default();
    let mut state = stream_seed(seed, ctx.stage_id as u64, ctx.partition as u64);
    while allocated < bytes {
        if digest.records.is_multiple_of(crate::interrupt::CHECK_EVERY) {
            crate::interrupt::check()?;
        }
        let n = object_bytes.min(bytes - allocated) as usize;
        let obj = arena.alloc_bytes(n)?;
        for w in obj.chunks_mut(8) {
            let v = crate::data::splitmix64(&mut state).to_le_bytes();
            w.copy_from_slice(&v[..w.len()]);
        }
        digest.add(obj);
        allocated += n as u64;
        objects.push(obj);
    }
    let mut check = RecordDigest::default();
    for o in &objects {
        check.add(o);
    }
    Ok(TaskOutput {
        records_in: digest.records,
        records_out: check.records,
        digest_in: digest,
        digest_out: check,
        verified: digest == check,
        user_bytes: arena.allocated_bytes(),
        ..TaskOutput::default()
    })
}
