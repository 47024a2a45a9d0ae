//! `shuffle_reduce`: the reduce stage of a shuffle — each task fetches its partition from every
//! map output (local blocks read from disk, remote ones into native buffers under the in-flight
//! limits) and runs the shuffle's operation over it (docs/spark-model.md §20).

use std::sync::Mutex;

use super::shuffle_map::SHUFFLE_KEY;
use super::{
    ClassifiedError, KeyError, KindDef, RunContext, ShuffleUse, Stage, StageTaskRun, TaskOutput,
    Tasks, Values,
};
use crate::shuffle::fetch::{FetchParams, ShuffleReadMetrics, read_partition};
use crate::shuffle::reduce::{Expected, expected, run_reduce_task};

pub static KIND: KindDef = KindDef {
    name: "shuffle_reduce",
    summary: "the reduce side of a shuffle: one task per reduce partition fetches it from every map output and runs the map stage's `operation` (count, aggregate, sort or group), verified",
    keys: &[SHUFFLE_KEY],
    parse,
};

fn parse(v: &mut Values) -> Result<Box<dyn Stage>, KeyError> {
    Ok(Box::new(ShuffleReduce {
        shuffle: v.u32("shuffle")?,
        state: Mutex::new(ReduceState::default()),
    }))
}

#[derive(Debug, Default)]
struct ReduceState {
    operation: Option<&'static str>,
    read: Vec<ShuffleReadMetrics>,
    largest_group_records: u64,
    largest_group_bytes: u64,
}

#[derive(Debug)]
struct ShuffleReduce {
    shuffle: u32,
    state: Mutex<ReduceState>,
}

impl ShuffleReduce {
    fn state(&self) -> std::sync::MutexGuard<'_, ReduceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A task's read metrics under the stage REST API's names.
fn read_fields(r: &ShuffleReadMetrics) -> serde_json::Map<String, serde_json::Value> {
    let mut f = serde_json::Map::new();
    f.insert(
        "shuffleReadBytes".into(),
        (r.remote_bytes_read + r.local_bytes_read).into(),
    );
    f.insert("shuffleReadRecords".into(), r.records_read.into());
    f.insert(
        "shuffleRemoteBlocksFetched".into(),
        r.remote_blocks_fetched.into(),
    );
    f.insert(
        "shuffleLocalBlocksFetched".into(),
        r.local_blocks_fetched.into(),
    );
    f.insert("shuffleRemoteBytesRead".into(), r.remote_bytes_read.into());
    f.insert(
        "shuffleRemoteBytesReadToDisk".into(),
        r.remote_bytes_read_to_disk.into(),
    );
    f.insert("shuffleLocalBytesRead".into(), r.local_bytes_read.into());
    f.insert("shuffleFetchWaitTime".into(), r.fetch_wait_time.into());
    f.insert(
        "shufflePeakBytesInFlight".into(),
        r.peak_bytes_in_flight.into(),
    );
    f
}

impl Stage for ShuffleReduce {
    fn shuffle(&self) -> ShuffleUse {
        ShuffleUse::Reads(self.shuffle)
    }

    fn input_bytes(&self, run: &RunContext) -> u64 {
        run.shuffles.get(&self.shuffle).map_or(0, |o| {
            o.statuses
                .iter()
                .map(|s| s.lengths.iter().sum::<u64>())
                .sum()
        })
    }

    fn label(&self) -> String {
        format!("shuffle {} reduce", self.shuffle)
    }

    fn start<'s>(&'s self, run: &mut RunContext, _stage_id: u32) -> Tasks<'s> {
        let params = FetchParams::from_conf(run.conf).expect("shuffle keys validated at start");
        let Some(outputs) = run.shuffles.get(&self.shuffle) else {
            // The map stage never ran (the run was stopped before it): nothing to reduce.
            return Tasks {
                count: 0,
                body: Box::new(|_, _| unreachable!("no tasks")),
            };
        };
        let partitions = outputs.spec.reduce_partitions;
        let operation = outputs.spec.operation;
        {
            let mut st = self.state();
            st.operation = Some(operation.name());
            st.read = vec![ShuffleReadMetrics::default(); partitions as usize];
        }
        // What every partition must come out as: computed once, before the tasks.
        let want: Result<Expected, ClassifiedError> =
            expected(&outputs.spec, &outputs.statuses).map_err(ClassifiedError::from);
        let id = self.shuffle;
        Tasks {
            count: partitions,
            body: Box::new(move |run, ctx| {
                let want = want.as_ref().map_err(Clone::clone)?;
                let outputs = &run.shuffles[&id];
                let p = ctx.partition;
                if let Some(m) = outputs.missing.first() {
                    return Err(ClassifiedError::new(
                        "MetadataFetchFailedException",
                        format!(
                            "Missing an output location for shuffle {id} partition {p} \
                             (map task {m} did not finish)"
                        ),
                    ));
                }
                let (read, result) = run_reduce_task(
                    ctx,
                    &outputs.spec,
                    want,
                    Box::new(|f: &mut dyn FnMut(&[u8]) -> _| {
                        read_partition(ctx, id, &outputs.statuses, p, &params, 0, f)
                    }),
                )
                .map_err(ClassifiedError::from)?;
                let mut kind_fields = read_fields(&read);
                if result.largest_group_records > 0 {
                    kind_fields.insert(
                        "largestGroupRecords".into(),
                        result.largest_group_records.into(),
                    );
                }
                {
                    let mut st = self.state();
                    st.read[p as usize] = read;
                    st.largest_group_records =
                        st.largest_group_records.max(result.largest_group_records);
                    st.largest_group_bytes = st.largest_group_bytes.max(result.largest_group_bytes);
                }
                Ok(TaskOutput {
                    kind_fields,
                    ..TaskOutput::from(result.metrics)
                })
            }),
        }
    }

    fn report_fields(&self, _runs: &[StageTaskRun]) -> serde_json::Map<String, serde_json::Value> {
        let st = self.state();
        let mut total = ShuffleReadMetrics::default();
        for r in &st.read {
            total.remote_blocks_fetched += r.remote_blocks_fetched;
            total.local_blocks_fetched += r.local_blocks_fetched;
            total.remote_bytes_read += r.remote_bytes_read;
            total.remote_bytes_read_to_disk += r.remote_bytes_read_to_disk;
            total.local_bytes_read += r.local_bytes_read;
            total.fetch_wait_time += r.fetch_wait_time;
            total.records_read += r.records_read;
            total.peak_bytes_in_flight = total.peak_bytes_in_flight.max(r.peak_bytes_in_flight);
        }
        let mut f = read_fields(&total);
        f.insert("shuffleId".into(), self.shuffle.into());
        f.insert(
            "shuffleOperation".into(),
            st.operation.map_or(serde_json::Value::Null, Into::into),
        );
        if st.largest_group_records > 0 {
            f.insert(
                "largestGroupRecords".into(),
                st.largest_group_records.into(),
            );
            f.insert("largestGroupBytes".into(), st.largest_group_bytes.into());
        }
        f
    }
}
