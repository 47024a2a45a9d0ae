//! The map side of a shuffle end to end: each of Spark's three writers, chosen by Spark's rules,
//! writes map outputs whose every partition reads back (through the segment reader, straight
//! from the data files) as exactly the records generated for it — with and without spills,
//! with and without compression — and the reduce-side operations verify against an
//! independent pass. Nothing is left in the local directories.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::Mutex;

use spillway::codec::Codec;
use spillway::conf::SparkConf;
use spillway::executor::Executor;
use spillway::layout::Layout;
use spillway::scheduler::run_stage;
use spillway::shuffle::format::{SegmentReader, decode_index, segment_tag};
use spillway::shuffle::reduce::{expected, run_reduce_task};
use spillway::shuffle::writer::{MapTaskOutput, WriteParams, run_map_task};
use spillway::shuffle::{MapStatus, Operation, ShuffleSpec, ValueClass, WriterKind, choose_writer};
use spillway::tasks::TaskError;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn conf(extra: &[(&str, &str)]) -> SparkConf {
    let mut conf = SparkConf::new()
        .with("spark.executor.memory", "600m")
        .with("spark.executor.cores", "2")
        .with("spark.buffer.pageSize", "1m");
    for (k, v) in extra {
        conf = conf.with(k, v);
    }
    conf
}

fn spec(operation: Operation, partitions: u32, values: ValueClass) -> ShuffleSpec {
    ShuffleSpec {
        shuffle_id: 3,
        map_tasks: 3,
        reduce_partitions: partitions,
        records_per_task: 200_000,
        record_bytes: 40,
        distinct_keys: 50_000,
        hot_key_percent: 0,
        compressible_percent: 50,
        operation,
        values,
        seed: 11,
    }
}

/// Runs the map stage; returns the outputs by map id.
fn map_stage(
    ex: &Executor,
    conf: &SparkConf,
    spec: &ShuffleSpec,
) -> (WriterKind, Vec<MapTaskOutput>) {
    let choice = choose_writer(spec.operation, spec.reduce_partitions, spec.values, conf).unwrap();
    let params = WriteParams::from_conf(conf).unwrap();
    let runs = run_stage(
        ex,
        1,
        spec.map_tasks,
        true,
        |ctx| run_map_task(ctx, spec, &choice, &params, 0),
        |_| {},
    );
    let mut outs: Vec<MapTaskOutput> = runs
        .into_iter()
        .map(|r| {
            r.result
                .unwrap_or_else(|e| panic!("map {}: {e}", r.partition))
        })
        .collect();
    outs.sort_by_key(|o| o.status.map_id);
    (choice.kind, outs)
}

/// Reads partition `reduce` of every map output straight from the files.
fn read_local(
    statuses: &[&MapStatus],
    shuffle: u32,
    reduce: u32,
    codec: Option<Codec>,
    f: &mut dyn FnMut(&[u8]) -> Result<(), TaskError>,
) -> Result<u64, TaskError> {
    let mut n = 0;
    for s in statuses {
        let len = s.lengths[reduce as usize];
        let mut file = File::open(&s.files.data).unwrap();
        file.seek(SeekFrom::Start(s.offset(reduce))).unwrap();
        let tag = segment_tag(shuffle, s.map_id, reduce);
        let mut r = SegmentReader::new(BufReader::new(file.take(len)), len, tag, codec);
        while let Some(rec) = r
            .next_record()
            .map_err(|e| TaskError::Shuffle(e.to_string()))?
        {
            f(rec)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The map side, then every reduce partition through `operation`, all verified.
/// Returns the writer, the spills of the map side and of the reduce side, and the records read.
fn round_trip(extra: &[(&str, &str)], spec: &ShuffleSpec) -> (WriterKind, u64, u64, u64) {
    let conf = conf(extra);
    let layout = Layout::from_conf(&conf, None).unwrap();
    let ex = Executor::start(&layout, &conf).unwrap();
    let (kind, outs) = map_stage(&ex, &conf, spec);
    let codec = WriteParams::from_conf(&conf).unwrap().codec;
    for o in &outs {
        let data_len = std::fs::metadata(&o.status.files.data).unwrap().len();
        let index = std::fs::read(&o.status.files.index).unwrap();
        let offsets = decode_index(&index, spec.reduce_partitions, data_len).unwrap();
        assert_eq!(offsets.last().copied(), Some(o.write.bytes_written));
        assert_eq!(
            o.write.records_written,
            o.status.written.iter().map(|d| d.records).sum::<u64>()
        );
    }
    let statuses: Vec<MapStatus> = outs.iter().map(|o| clone_status(&o.status)).collect();
    let want = expected(spec, &statuses).unwrap();
    let refs: Vec<&MapStatus> = outs.iter().map(|o| &o.status).collect();
    let runs = run_stage(
        &ex,
        2,
        spec.reduce_partitions,
        true,
        |ctx| {
            let p = ctx.partition;
            run_reduce_task(
                ctx,
                spec,
                &want,
                Box::new(|f: &mut dyn FnMut(&[u8]) -> Result<(), TaskError>| {
                    read_local(&refs, spec.shuffle_id, p, codec, f)
                }),
            )
        },
        |_| {},
    );
    let mut read = 0;
    let mut reduce_spills = 0;
    for r in runs {
        let (n, res) = r
            .result
            .unwrap_or_else(|e| panic!("reduce {}: {e}", r.partition));
        assert!(res.metrics.verification.ok);
        read += n;
        reduce_spills += res.metrics.spill_count;
    }
    drop(statuses);
    let written: u64 = outs.iter().map(|o| o.write.records_written).sum();
    let map_spills: u64 = outs.iter().map(|o| o.metrics.spill_count).sum();
    assert_eq!(read, written, "every record written was read");
    // The statuses own the files; the test's copies own nothing.
    drop(refs);
    let dirs = std::sync::Arc::clone(ex.local_dirs());
    let files_with_outputs = dirs.file_count();
    assert_eq!(
        files_with_outputs,
        2 * spec.map_tasks as usize,
        "data + index per map"
    );
    drop(outs);
    assert_eq!(dirs.file_count(), 0, "map outputs removed with the shuffle");
    assert_eq!(ex.memory_manager().execution_memory_used(), 0);
    (kind, map_spills, reduce_spills, read)
}

/// A status that owns no files (the map task's own keeps them).
fn clone_status(s: &MapStatus) -> MapStatus {
    MapStatus {
        map_id: s.map_id,
        executor: s.executor,
        lengths: s.lengths.clone(),
        written: s.written.clone(),
        expected: s.expected.clone(),
        expected_aggregate: s.expected_aggregate.clone(),
        files: spillway::shuffle::MapOutputFiles {
            data: std::path::PathBuf::new(),
            index: std::path::PathBuf::new(),
        },
    }
}

#[test]
fn bypass_writer_for_few_partitions_without_combine() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = spec(Operation::PartitionBy, 8, ValueClass::Bytes);
    let (kind, _, _, read) = round_trip(&[], &s);
    assert_eq!(kind, WriterKind::BypassMergeSort);
    assert_eq!(read, 600_000);
    // Uncompressed too.
    let (_, _, _, read) = round_trip(&[("spark.shuffle.compress", "false")], &s);
    assert_eq!(read, 600_000);
}

#[test]
fn serialized_writer_spills_and_merges_partition_by_partition() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = spec(Operation::PartitionBy, 400, ValueClass::Bytes);
    // Ample memory: one file, moved into place.
    let (kind, _, _, read) = round_trip(&[], &s);
    assert_eq!(kind, WriterKind::UnsafeShuffle);
    assert_eq!(read, 600_000);
    // Forced spills every 50,000 records: four spills a task, merged by concatenation.
    let conf = conf(&[(
        "spark.shuffle.spill.numElementsForceSpillThreshold",
        "50000",
    )]);
    let layout = Layout::from_conf(&conf, None).unwrap();
    let ex = Executor::start(&layout, &conf).unwrap();
    let (_, outs) = map_stage(&ex, &conf, &s);
    for o in &outs {
        assert_eq!(o.metrics.spill_count, 3, "{:?}", o.metrics);
        assert!(o.metrics.disk_bytes_spilled > 0 && o.metrics.memory_bytes_spilled > 0);
    }
    drop(outs);
    assert_eq!(ex.local_dirs().file_count(), 0);
    // Under memory pressure (a 15 MiB pool, two tasks): spills asked for by its own pages.
    let (_, map_spills, _, read) = round_trip(
        &[
            ("spark.memory.fraction", "0.05"),
            ("spark.shuffle.compress", "false"),
        ],
        &s,
    );
    assert_eq!(read, 600_000);
    assert!(map_spills > 0);
}

#[test]
fn sort_writer_combines_on_the_map_side_and_reduce_by_key_verifies_every_key() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = spec(Operation::ReduceByKey, 8, ValueClass::Bytes);
    let (kind, _, _, read) = round_trip(&[], &s);
    assert_eq!(kind, WriterKind::SortShuffle);
    // Combined: at most one record per key and map.
    assert!(read <= 3 * 50_000, "{read}");
    // Many keys in a small pool: both sides spill, every key still verifies.
    // Two reduce partitions of ~500,000 keys each: their maps outgrow a task's share too.
    s.distinct_keys = 1_000_000;
    s.records_per_task = 400_000;
    s.reduce_partitions = 2;
    let (_, map_spills, reduce_spills, read) = round_trip(&[("spark.memory.fraction", "0.05")], &s);
    assert!(read > 900_000, "{read}");
    assert!(
        map_spills > 0 && reduce_spills > 0,
        "{map_spills} {reduce_spills}"
    );
}

#[test]
fn sort_writer_without_relocation_and_the_other_reduce_operations() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A user class under the Java serializer, past the bypass threshold: SortShuffleWriter
    // over a pair buffer.
    let s = spec(Operation::PartitionBy, 300, ValueClass::Object);
    let (kind, map_spills, _, read) = round_trip(&[("spark.memory.fraction", "0.05")], &s);
    assert_eq!(kind, WriterKind::SortShuffle);
    assert_eq!(read, 600_000);
    assert!(map_spills > 0);
    for op in [Operation::SortByKey, Operation::GroupByKey] {
        let s = spec(op, 8, ValueClass::Bytes);
        let (kind, _, reduce_spills, read) = round_trip(&[("spark.memory.fraction", "0.05")], &s);
        assert_eq!(kind, WriterKind::BypassMergeSort);
        assert_eq!(read, 600_000, "{op:?}");
        assert!(reduce_spills > 0, "{op:?}");
    }
}

#[test]
fn a_group_larger_than_the_heap_has_room_for_is_java_heap_space() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Half the records on key 0, 1 KiB values: one group of ~150 MiB against a user range of
    // (600 - 300) MiB x 0.4 = 120 MiB.
    let conf = conf(&[]);
    let layout = Layout::from_conf(&conf, None).unwrap();
    let ex = Executor::start(&layout, &conf).unwrap();
    let mut s = spec(Operation::GroupByKey, 4, ValueClass::Bytes);
    s.record_bytes = 1024;
    s.hot_key_percent = 50;
    let (_, outs) = map_stage(&ex, &conf, &s);
    let statuses: Vec<MapStatus> = outs.iter().map(|o| clone_status(&o.status)).collect();
    let want = expected(&s, &statuses).unwrap();
    let refs: Vec<&MapStatus> = outs.iter().map(|o| &o.status).collect();
    let codec = WriteParams::from_conf(&conf).unwrap().codec;
    let hot = s.partition(0);
    let runs = run_stage(
        &ex,
        2,
        s.reduce_partitions,
        true,
        |ctx| {
            let p = ctx.partition;
            run_reduce_task(
                ctx,
                &s,
                &want,
                Box::new(|f: &mut dyn FnMut(&[u8]) -> Result<(), TaskError>| {
                    read_local(&refs, s.shuffle_id, p, codec, f)
                }),
            )
        },
        |_| {},
    );
    for r in runs {
        match r.result {
            Ok(_) => assert_ne!(r.partition, hot),
            Err(e) => {
                assert_eq!(r.partition, hot);
                let text = e.to_string();
                assert!(text.contains("Java heap space"), "{text}");
            }
        }
    }
    drop(outs);
    assert_eq!(ex.local_dirs().file_count(), 0);
}
