//! `broadcast`: an executor's first read of a broadcast variable — one task stores its block at
//! the stage's storage level (Spark's `TorrentBroadcast.readBroadcastBlock`, which puts the
//! value with `MEMORY_AND_DISK`).

use super::{
    ClassifiedError, Key, KeyError, KeyType, KindDef, MAX_COUNT, RunContext, Stage, TaskOutput,
    Tasks, Values, put_block,
};
use crate::data::{PartitionData, stream_seed};
use crate::ids::BlockId;
use crate::scheduler::TaskContext;
use crate::storage::StorageLevel;

pub static KIND: KindDef = KindDef {
    name: "broadcast",
    summary: "the first read of a broadcast variable: one task stores its block",
    keys: &[
        Key {
            name: "id",
            ty: KeyType::Int {
                min: 0,
                max: MAX_COUNT,
            },
            default: Some("0"),
            doc: "the broadcast id",
        },
        Key {
            name: "bytes",
            ty: KeyType::Size {
                min: 1,
                max: MAX_COUNT as u64,
            },
            default: Some("32m"),
            doc: "the broadcast value's size",
        },
        Key {
            name: "record_bytes",
            ty: KeyType::Size {
                min: 8,
                max: MAX_COUNT as u64,
            },
            default: Some("1024"),
            doc: "bytes per record of the value (at most 64 MiB and the heap)",
        },
        Key {
            name: "storage_level",
            ty: KeyType::Level,
            default: Some("MEMORY_AND_DISK"),
            doc: "the level the block is stored at",
        },
    ],
    parse,
};

fn parse(v: &mut Values) -> Result<Box<dyn Stage>, KeyError> {
    Ok(Box::new(Broadcast {
        id: v.int("id")?,
        bytes: v.size("bytes")?,
        record_bytes: v.size("record_bytes")?,
        level: v.level("storage_level")?,
    }))
}

#[derive(Debug)]
struct Broadcast {
    id: u64,
    bytes: u64,
    record_bytes: u64,
    level: StorageLevel,
}

impl Stage for Broadcast {
    fn record_bytes(&self) -> Option<u64> {
        Some(self.record_bytes)
    }

    fn input_bytes(&self, _run: &RunContext) -> u64 {
        self.bytes
    }

    fn label(&self) -> String {
        format!("broadcast {}", self.id)
    }

    fn start<'s>(&'s self, run: &mut RunContext, _stage_id: u32) -> Tasks<'s> {
        let seed = run.seed;
        Tasks {
            count: 1,
            body: Box::new(move |_, ctx| {
                broadcast_task(
                    ctx,
                    self.id,
                    self.bytes,
                    self.record_bytes,
                    self.level,
                    seed,
                )
            }),
        }
    }
}

/// Stores broadcast `id`'s block at `level`, as an executor does when it first reads it.
pub fn broadcast_task(
    ctx: &TaskContext,
    id: u64,
    bytes: u64,
    record_bytes: u64,
    level: StorageLevel,
    seed: u64,
) -> Result<TaskOutput, ClassifiedError> {
    let data = PartitionData::new(stream_seed(seed, u64::MAX - id, 0), bytes, record_bytes);
    put_block(ctx, &BlockId::Broadcast { broadcast_id: id }, level, &data)
}
