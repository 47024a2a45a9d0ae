//! `shuffle_map`: the map stage of a shuffle — each task generates its records and writes them
//! partitioned by key into one data file and one index file, with the writer Spark's
//! `SortShuffleManager` would choose (docs/spark-model.md §18).

use std::sync::Mutex;

use super::{
    ClassifiedError, Key, KeyError, KeyType, KindDef, MAX_COUNT, MAX_TASKS, RunContext, ShuffleUse,
    Stage, StageTaskRun, TASKS_KEY, TaskOutput, Tasks, Values, generated_bytes,
};
use crate::shuffle::writer::{ShuffleWriteMetrics, WriteParams, run_map_task};
use crate::shuffle::{
    MIN_RECORD_BYTES, MapOutputs, MapStatus, Operation, ShuffleSpec, ValueClass, WriterChoice,
    choose_writer,
};
use crate::spill::RecordDigest;

/// `shuffle`, shared with `shuffle_reduce`.
pub const SHUFFLE_KEY: Key = Key {
    name: "shuffle",
    ty: KeyType::Int {
        min: 0,
        max: MAX_TASKS,
    },
    default: Some("0"),
    doc: "the shuffle id (a `shuffle_reduce` stage names it)",
};

pub static KIND: KindDef = KindDef {
    name: "shuffle_map",
    summary: "the map side of a shuffle: each task generates records and writes them partitioned by key (bypass-merge, serialized-sort or sort writer, by Spark's rules)",
    keys: &[
        SHUFFLE_KEY,
        Key {
            doc: "map tasks",
            ..TASKS_KEY
        },
        Key {
            name: "reduce_partitions",
            ty: KeyType::Int {
                min: 1,
                max: MAX_TASKS,
            },
            default: Some("8"),
            doc: "reduce partitions (the reduce stage's tasks)",
        },
        Key {
            name: "records_per_task",
            ty: KeyType::Int {
                min: 0,
                max: MAX_COUNT,
            },
            default: Some("1000000"),
            doc: "records each map task generates",
        },
        Key {
            name: "record_bytes",
            ty: KeyType::Size {
                min: MIN_RECORD_BYTES,
                max: 64 << 20,
            },
            default: Some("40"),
            doc: "bytes per record: an 8-byte key, an 8-byte value, payload (40: a `Long` key and a 32-byte array)",
        },
        Key {
            name: "distinct_keys",
            ty: KeyType::Int {
                min: 1,
                max: MAX_COUNT,
            },
            default: Some("1000000"),
            doc: "keys are drawn uniformly from `0..distinct_keys`",
        },
        Key {
            name: "hot_key_percent",
            ty: KeyType::Int { min: 0, max: 100 },
            default: Some("0"),
            doc: "percent of records whose key is 0 (skew)",
        },
        Key {
            name: "compressible_percent",
            ty: KeyType::Int { min: 0, max: 100 },
            default: Some("0"),
            doc: "percent of each payload that is text from a 16-word vocabulary; the rest is random bytes",
        },
        Key {
            name: "operation",
            ty: KeyType::Choice(Operation::NAMES),
            default: Some("partitionBy"),
            doc: "what the reduce side does (`reduceByKey` combines on the map side; `sortByKey` range-partitions)",
        },
        Key {
            name: "values",
            ty: KeyType::Choice(ValueClass::NAMES),
            default: Some("bytes"),
            doc: "`bytes`: `Array[Byte]` values, shuffled with Kryo whatever `spark.serializer` says; `object`: a user class, shuffled with `spark.serializer`",
        },
        Key {
            name: "executors",
            ty: KeyType::Int {
                min: 1,
                max: MAX_TASKS,
            },
            default: Some("1"),
            doc: "executors of the job: map output `m` lives on executor `m mod executors`; the reduce side fetches the others' as remote blocks",
        },
    ],
    parse,
};

fn parse(v: &mut Values) -> Result<Box<dyn Stage>, KeyError> {
    let shuffle_id = v.u32("shuffle")?;
    let map_tasks = v.u32("tasks")?;
    let reduce_partitions = v.u32("reduce_partitions")?;
    let records_per_task = v.int("records_per_task")?;
    let record_bytes = v.size("record_bytes")?;
    let distinct_keys = v.int("distinct_keys")?;
    let hot_key_percent = v.int("hot_key_percent")?;
    let compressible_percent = v.int("compressible_percent")?;
    let operation = Operation::parse(v.choice("operation")?).expect("a listed choice");
    let values = ValueClass::parse(v.choice("values")?).expect("a listed choice");
    let executors = v.u32("executors")?;
    Ok(Box::new(ShuffleMap {
        spec: ShuffleSpec {
            shuffle_id,
            map_tasks,
            reduce_partitions,
            records_per_task,
            record_bytes,
            distinct_keys,
            hot_key_percent,
            compressible_percent,
            operation,
            values,
            // Set from the run's seed at start.
            seed: 0,
        },
        executors,
        state: Mutex::new(MapState::default()),
    }))
}

#[derive(Debug, Default)]
struct MapState {
    choice: Option<WriterChoice>,
    codec: Option<&'static str>,
    statuses: Vec<Option<MapStatus>>,
    write: Vec<ShuffleWriteMetrics>,
}

#[derive(Debug)]
struct ShuffleMap {
    spec: ShuffleSpec,
    executors: u32,
    state: Mutex<MapState>,
}

impl ShuffleMap {
    fn state(&self) -> std::sync::MutexGuard<'_, MapState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Stage for ShuffleMap {
    fn record_bytes(&self) -> Option<u64> {
        Some(self.spec.record_bytes)
    }

    fn shuffle(&self) -> ShuffleUse {
        ShuffleUse::Writes(self.spec.shuffle_id)
    }

    fn input_bytes(&self, _run: &RunContext) -> u64 {
        generated_bytes(
            self.spec.map_tasks,
            self.spec.records_per_task,
            self.spec.record_bytes,
        )
    }

    fn label(&self) -> String {
        format!(
            "shuffle {} map ({})",
            self.spec.shuffle_id,
            self.spec.operation.name()
        )
    }

    fn start<'s>(&'s self, run: &mut RunContext, _stage_id: u32) -> Tasks<'s> {
        // The run checked these keys before anything ran.
        let params = WriteParams::from_conf(run.conf).expect("shuffle keys validated at start");
        let mut spec = self.spec.clone();
        spec.seed = run.seed;
        let choice = choose_writer(
            spec.operation,
            spec.reduce_partitions,
            spec.values,
            run.conf,
        )
        .expect("shuffle keys validated at start");
        {
            let mut st = self.state();
            st.choice = Some(choice.clone());
            st.codec = params.codec.map(|c| c.name.short_name());
            st.statuses = (0..spec.map_tasks).map(|_| None).collect();
            st.write = vec![ShuffleWriteMetrics::default(); spec.map_tasks as usize];
        }
        let executors = self.executors;
        Tasks {
            count: spec.map_tasks,
            body: Box::new(move |_, ctx| {
                let out = run_map_task(ctx, &spec, &choice, &params, ctx.partition % executors)
                    .map_err(ClassifiedError::from)?;
                let expected = out
                    .status
                    .expected
                    .iter()
                    .fold(RecordDigest::default(), |a, d| a.combine(*d));
                let written = out
                    .status
                    .written
                    .iter()
                    .fold(RecordDigest::default(), |a, d| a.combine(*d));
                let mut kind_fields = serde_json::Map::new();
                let w = out.write;
                kind_fields.insert("shuffleWriteBytes".into(), w.bytes_written.into());
                kind_fields.insert("shuffleWriteRecords".into(), w.records_written.into());
                kind_fields.insert("shuffleWriteTime".into(), w.write_time.into());
                let output = TaskOutput {
                    records_out: w.records_written,
                    digest_in: expected,
                    digest_out: written,
                    // What the writer wrote is checked on the reduce side, against these
                    // digests; here, that nothing was lost on the way in (a combining writer
                    // writes fewer, combined records).
                    verified: spec.operation.map_side_combine() || expected == written,
                    kind_fields,
                    ..TaskOutput::from(out.metrics)
                };
                let mut st = self.state();
                st.write[ctx.partition as usize] = w;
                st.statuses[ctx.partition as usize] = Some(out.status);
                Ok(output)
            }),
        }
    }

    /// The map outputs become the shuffle's, for its reduce stage.
    fn finish(&self, run: &mut RunContext, _runs: &[StageTaskRun]) {
        let mut st = self.state();
        let mut spec = self.spec.clone();
        spec.seed = run.seed;
        let mut statuses = Vec::new();
        let mut missing = Vec::new();
        for (m, s) in std::mem::take(&mut st.statuses).into_iter().enumerate() {
            match s {
                Some(s) => statuses.push(s),
                None => missing.push(m as u32),
            }
        }
        if let Some(choice) = st.choice.clone() {
            run.shuffles.insert(
                spec.shuffle_id,
                MapOutputs {
                    spec,
                    choice,
                    executors: self.executors,
                    statuses,
                    missing,
                },
            );
        }
    }

    fn report_fields(&self, _runs: &[StageTaskRun]) -> serde_json::Map<String, serde_json::Value> {
        let st = self.state();
        let mut f = serde_json::Map::new();
        if let Some(c) = &st.choice {
            f.insert("shuffleId".into(), self.spec.shuffle_id.into());
            f.insert("shuffleWriter".into(), c.kind.spark_name().into());
            f.insert("shuffleWriterReason".into(), c.reason.clone().into());
            f.insert(
                "shuffleSerializer".into(),
                serde_json::to_value(c.serializer).unwrap_or_default(),
            );
        }
        f.insert(
            "shuffleCompressionCodec".into(),
            st.codec.map_or(serde_json::Value::Null, Into::into),
        );
        let sum = |g: fn(&ShuffleWriteMetrics) -> u64| st.write.iter().map(g).sum::<u64>();
        f.insert("shuffleWriteBytes".into(), sum(|w| w.bytes_written).into());
        f.insert(
            "shuffleWriteRecords".into(),
            sum(|w| w.records_written).into(),
        );
        f.insert("shuffleWriteTime".into(), sum(|w| w.write_time).into());
        f
    }
}
