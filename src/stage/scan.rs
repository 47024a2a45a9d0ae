//! `scan`: `rdd.count()` over a cached RDD — each task reads its partition from memory or disk,
//! or recomputes it (Spark's `BlockManager.getOrElseUpdate` on a hit or a lost block), and
//! checks every record against what the cache stage generated.

use super::{
    CACHED_RDD_KEY, CachedRdd, ClassifiedError, KeyError, KindDef, RddUse, RunContext, Stage,
    StageTaskRun, TaskOutput, Tasks, Values, generated_bytes,
};
use crate::data::RecordSource;
use crate::scheduler::TaskContext;
use crate::spill::RecordDigest;
use crate::storage::block_manager::ReadFrom;

pub static KIND: KindDef = KindDef {
    name: "scan",
    summary: "`rdd.count()` over a cached RDD: each partition from memory, disk or recomputed, every record checked",
    keys: &[CACHED_RDD_KEY],
    parse,
};

fn parse(v: &mut Values) -> Result<Box<dyn Stage>, KeyError> {
    Ok(Box::new(Scan { rdd: v.u32("rdd")? }))
}

#[derive(Debug)]
struct Scan {
    rdd: u32,
}

impl Stage for Scan {
    fn rdd(&self) -> RddUse {
        RddUse::Reads(self.rdd)
    }

    fn input_bytes(&self, run: &RunContext) -> u64 {
        run.rdds
            .get(&self.rdd)
            .map_or(0, |r| generated_bytes(r.partitions, 1, r.partition_bytes))
    }

    fn label(&self) -> String {
        format!("scan rdd {}", self.rdd)
    }

    /// Where the partitions were found (Spark's UI shows the same per block read).
    fn report_fields(&self, runs: &[StageTaskRun]) -> serde_json::Map<String, serde_json::Value> {
        let (mut memory, mut disk, mut recomputed) = (0u64, 0u64, 0u64);
        for r in runs {
            match r.result.as_ref().ok().and_then(|o| o.read_from) {
                Some(ReadFrom::Memory) => memory += 1,
                Some(ReadFrom::Disk) => disk += 1,
                Some(ReadFrom::Recomputed) => recomputed += 1,
                None => {}
            }
        }
        let mut m = serde_json::Map::new();
        m.insert("memoryHits".into(), memory.into());
        m.insert("diskHits".into(), disk.into());
        m.insert("recomputes".into(), recomputed.into());
        // Partitions read from disk and cached in memory again (docs/spark-model.md §6.6).
        let recached = runs
            .iter()
            .filter_map(|r| r.result.as_ref().ok())
            .filter(|o| o.kind_fields.get("recachedFromDisk") == Some(&true.into()))
            .count() as u64;
        m.insert("recachedFromDisk".into(), recached.into());
        m
    }

    fn start<'s>(&'s self, run: &mut RunContext, _stage_id: u32) -> Tasks<'s> {
        Tasks {
            count: run.rdds.get(&self.rdd).map_or(0, |r| r.partitions),
            body: Box::new(|run, ctx| scan_task(ctx, &run.rdds[&self.rdd])),
        }
    }
}

/// One task of a scan: reads (or recomputes) partition `ctx.partition` and verifies it.
pub fn scan_task(ctx: &TaskContext, rdd: &CachedRdd) -> Result<TaskOutput, ClassifiedError> {
    let data = rdd.data(ctx.partition);
    let mut records = 0u64;
    let bm = ctx.executor.block_manager();
    let recached_before = bm.counters().recached_from_disk;
    let (from, digest) = bm.get_or_compute(
        &rdd.block(ctx.partition),
        rdd.level,
        ctx.task_attempt_id,
        &data,
        &mut |_| records += 1,
    )?;
    let expected = rdd
        .expected
        .get(&ctx.partition)
        .copied()
        .unwrap_or_else(|| {
            let mut d = RecordDigest::default();
            let mut it = data.iter();
            while let Some(r) = it.next_record() {
                d.add(r);
            }
            d
        });
    crate::storage::block_manager::check_digest(
        &rdd.block(ctx.partition),
        from,
        &digest,
        &expected,
    )?;
    // The block was cached again by this read when it came from disk and is in memory now.
    let recached = from == ReadFrom::Disk
        && rdd.level.use_memory
        && bm.counters().recached_from_disk > recached_before
        && bm.memory_store().contains(&rdd.block(ctx.partition));
    let mut kind_fields = serde_json::Map::new();
    kind_fields.insert("recachedFromDisk".into(), recached.into());
    Ok(TaskOutput {
        records_in: records,
        records_out: records,
        digest_in: expected,
        digest_out: digest,
        verified: true,
        read_from: Some(from),
        kind_fields,
        ..TaskOutput::default()
    })
}
