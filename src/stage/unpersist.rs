//! `unpersist`: `rdd.unpersist()` — one task removes every block of a cached RDD.

use super::{
    CACHED_RDD_KEY, KeyError, KindDef, RddUse, RunContext, Stage, StageTaskRun, TaskOutput, Tasks,
    Values,
};

pub static KIND: KindDef = KindDef {
    name: "unpersist",
    summary: "`rdd.unpersist()`: removes an RDD's blocks from memory and disk",
    keys: &[CACHED_RDD_KEY],
    parse,
};

fn parse(v: &mut Values) -> Result<Box<dyn Stage>, KeyError> {
    Ok(Box::new(Unpersist { rdd: v.u32("rdd")? }))
}

#[derive(Debug)]
struct Unpersist {
    rdd: u32,
}

impl Stage for Unpersist {
    fn rdd(&self) -> RddUse {
        RddUse::Removes(self.rdd)
    }

    fn input_bytes(&self, _run: &RunContext) -> u64 {
        0
    }

    fn label(&self) -> String {
        format!("unpersist rdd {}", self.rdd)
    }

    fn start<'s>(&'s self, _run: &mut RunContext, _stage_id: u32) -> Tasks<'s> {
        Tasks {
            count: 1,
            body: Box::new(|_, ctx| {
                ctx.executor.block_manager().remove_rdd(self.rdd);
                Ok(TaskOutput {
                    verified: true,
                    ..TaskOutput::default()
                })
            }),
        }
    }

    fn finish(&self, run: &mut RunContext, _runs: &[StageTaskRun]) {
        run.rdds.remove(&self.rdd);
    }
}
