//! `cache`: `rdd.persist(level); rdd.count()` — each task computes one partition and caches it
//! at the stage's storage level (Spark's `BlockManager.getOrElseUpdate` on a miss).

use std::collections::HashMap;

use super::{
    CACHED_RDD_KEY, CachedRdd, ClassifiedError, Key, KeyError, KeyType, KindDef, MAX_COUNT,
    MAX_TASKS, RddUse, RunContext, Stage, StageTaskRun, TaskOutput, Tasks, Values, generated_bytes,
    put_block, recache_fields,
};
use crate::data::RecordType;
use crate::scheduler::TaskContext;
use crate::storage::StorageLevel;

pub static KIND: KindDef = KindDef {
    name: "cache",
    summary: "`rdd.persist(level); rdd.count()`: each task generates one partition and caches it",
    keys: &[
        Key {
            doc: "the RDD id (a later `scan` or `unpersist` names it)",
            ..CACHED_RDD_KEY
        },
        Key {
            name: "name",
            ty: KeyType::Text,
            default: None,
            doc: "the RDD's name in the report; default `rdd_<id>`",
        },
        Key {
            name: "partitions",
            ty: KeyType::Int {
                min: 1,
                max: MAX_TASKS,
            },
            default: Some("8"),
            doc: "partitions, one task each",
        },
        Key {
            name: "partition_bytes",
            ty: KeyType::Size {
                min: 1,
                max: MAX_COUNT as u64,
            },
            default: Some("16m"),
            doc: "bytes of records generated per partition",
        },
        Key {
            name: "record_bytes",
            ty: KeyType::Size {
                min: 8,
                max: MAX_COUNT as u64,
            },
            default: Some("100"),
            doc: "bytes per record (at most the largest Tungsten page, 64 MiB, and the heap)",
        },
        Key {
            name: "storage_level",
            ty: KeyType::Level,
            default: Some("MEMORY_ONLY"),
            doc: "a `StorageLevel` name, e.g. `MEMORY_AND_DISK_SER`",
        },
        Key {
            name: "record_type",
            ty: KeyType::Choice(RecordType::NAMES),
            default: Some("raw"),
            doc: "what a record is in the JVM (docs/spark-model.md §21.7): `raw` bytes sized by their length at every level; `bytes` an `Array[Byte]`, `long_pair` a `(Long, Long)` (16-byte records; `record_bytes` must be 16 or left out), `string` a Latin-1 `String`, each sized by `SizeEstimator` when deserialized and by its Java or Kryo stream (compressed by `spark.rdd.compress`) when serialized",
        },
    ],
    parse,
};

fn parse(v: &mut Values) -> Result<Box<dyn Stage>, KeyError> {
    let rdd = v.u32("rdd")?;
    let name = match v.text("name")? {
        Some(n) => n,
        None => {
            let n = format!("rdd_{rdd}");
            v.derived("name", &n);
            n
        }
    };
    let partitions = v.u32("partitions")?;
    let partition_bytes = v.size("partition_bytes")?;
    let mut record_bytes = v.size("record_bytes")?;
    let level = v.level("storage_level")?;
    let record_type =
        RecordType::parse(v.choice("record_type")?).expect("the key's choices are the names");
    if let Some(fixed) = record_type.fixed_record_bytes() {
        if v.is_given("record_bytes") && record_bytes != fixed {
            return Err(KeyError {
                key: "record_bytes".into(),
                value: record_bytes.to_string(),
                reason: format!(
                    "a {} record is {fixed} bytes; leave record_bytes out or set it to {fixed}",
                    record_type.name()
                ),
            });
        }
        record_bytes = fixed;
        v.derived_value("record_bytes", fixed.into());
    }
    Ok(Box::new(Cache {
        rdd,
        name,
        partitions,
        partition_bytes,
        record_bytes,
        level,
        record_type,
    }))
}

#[derive(Debug)]
struct Cache {
    rdd: u32,
    name: String,
    partitions: u32,
    partition_bytes: u64,
    record_bytes: u64,
    level: StorageLevel,
    record_type: RecordType,
}

impl Stage for Cache {
    fn record_bytes(&self) -> Option<u64> {
        Some(self.record_bytes)
    }

    fn rdd(&self) -> RddUse {
        RddUse::Caches(self.rdd)
    }

    fn input_bytes(&self, _run: &RunContext) -> u64 {
        generated_bytes(self.partitions, 1, self.partition_bytes)
    }

    fn label(&self) -> String {
        format!("cache rdd {}", self.rdd)
    }

    fn start<'s>(&'s self, run: &mut RunContext, _stage_id: u32) -> Tasks<'s> {
        run.rdds.insert(
            self.rdd,
            CachedRdd {
                id: self.rdd,
                name: self.name.clone(),
                level: self.level,
                partitions: self.partitions,
                partition_bytes: self.partition_bytes,
                record_bytes: self.record_bytes,
                record_type: self.record_type,
                seed: run.seed,
                expected: HashMap::new(),
            },
        );
        Tasks {
            count: self.partitions,
            body: Box::new(|run, ctx| cache_task(ctx, &run.rdds[&self.rdd])),
        }
    }

    /// How the blocks are held in memory, and how many went to disk and came back
    /// (docs/spark-model.md §6.6, §21.7).
    fn report_fields(&self, runs: &[StageTaskRun]) -> serde_json::Map<String, serde_json::Value> {
        recache_fields(runs)
    }

    /// A cache stage's digests are what its scans must read back.
    fn finish(&self, run: &mut RunContext, runs: &[StageTaskRun]) {
        if let Some(cached) = run.rdds.get_mut(&self.rdd) {
            for r in runs {
                if let Ok(o) = &r.result {
                    cached.expected.insert(r.partition, o.digest_in);
                }
            }
        }
    }
}

/// One task of a cache stage: computes and caches partition `ctx.partition` of `rdd`.
pub fn cache_task(ctx: &TaskContext, rdd: &CachedRdd) -> Result<TaskOutput, ClassifiedError> {
    let data = rdd.data(ctx.partition);
    put_block(ctx, &rdd.block(ctx.partition), rdd.level, &data)
}
