//! The map side: one map task generates its records and writes them, partitioned, with the
//! writer Spark would pick (docs/spark-model.md §18).
//!
//! - **Bypass-merge** (`BypassMergeSortShuffleWriter`, §18.2): no execution memory. A buffered
//!   temporary file per reduce partition, opened at its first record (each with its segment
//!   writer's block buffer — `spark.shuffle.file.buffer` uncompressed, the codec's block and a
//!   compressed block with a codec — which is the file's buffer, each block one `write`:
//!   memory outside the memory manager, as Spark's), concatenated in partition order into the
//!   data file by the kernel (`copy_file_range`, Spark's `transferTo`) and deleted.
//! - **Serialized sort** (`UnsafeShuffleWriter` + `ShuffleExternalSorter`, §18.3): records as
//!   `le32 length ‖ bytes` in Tungsten pages of at most 128 MiB
//!   (`min(2^27, spark.buffer.pageSize)`); a pointer array of one `u64` per record,
//!   `[24-bit partition | 13-bit page | 27-bit offset]`, of which half is usable (the radix
//!   sort's buffer is the other half), grown by doubling; spills only when it is itself the
//!   requester (other consumers' requests get 0), or every
//!   `spark.shuffle.spill.numElementsForceSpillThreshold` records; each spill is one file with
//!   the partitions contiguous. At the end the in-memory records are one more such file; one
//!   file becomes the data file by a rename, several are merged partition by partition by
//!   copying each spill's piece of the partition (Spark's fast merge: every codec spillway has
//!   concatenates, as each piece is a self-contained segment).
//! - **Sort** (`SortShuffleWriter` over `ExternalSorter`, §18.4): with map-side combine a
//!   `PartitionedAppendOnlyMap` — spillway's `SpillableAggregator` under `Spillable`'s rules,
//!   entries ordered by partition — whose merged output streams into the data file; without
//!   (a serializer that cannot relocate records and more partitions than the bypass threshold)
//!   a buffer of `(partition, record)` pairs sorted by partition, spillway's external sorter.
//!
//! Every writer commits as `IndexShuffleBlockResolver.writeMetadataFileAndCommit` does: data
//! and index are written under temporary names and renamed into place; on any error every
//! file the task created is deleted.
//!
//! A map task generates its records as it writes them ([`run_map_task`]), or takes them from a
//! [`MapInput`] generated beforehand ([`run_map_task_on`]), so that the writer can be timed
//! alone (`spillway bench`, `benches/shuffle.rs`). Each record is hashed once by the writer
//! (the segment writer's digest is the partition's `written` digest) besides the generated
//! records' digest (`expected`).

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::format::{SegmentWriter, encode_index, segment_tag};
use super::{MapOutputFiles, MapStatus, ShuffleSpec, WriterChoice, WriterKind};
use crate::codec::Codec;
use crate::conf::{ConfError, SparkConf, keys};
use crate::memory::{Consumer, ConsumerId, MemoryConsumer, Page, TaskMemoryError};
use crate::scheduler::TaskContext;
use crate::spill::RecordDigest;
use crate::storage::disk::DiskBlockManager;
use crate::tasks::aggregate::{EntryOrder, SpillableAggregator};
use crate::tasks::sort::ExternalSorter;
use crate::tasks::{SharedState, TaskError, TaskMetrics};

/// `PackedRecordPointer`'s widths.
const PAGE_NUMBER_BITS: u32 = 13;
const OFFSET_BITS: u32 = 27;
/// `ShuffleExternalSorter`'s largest page (`PackedRecordPointer.MAXIMUM_PAGE_SIZE_BYTES`).
pub const MAX_SHUFFLE_PAGE_BYTES: u64 = 1 << OFFSET_BITS;
/// Records whose place in the pages a sorted-file write resolves at once.
const GATHER_BATCH: usize = 32;

/// The map side's settings, read once per stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteParams {
    /// `spark.shuffle.compress` with `spark.io.compression.codec`.
    pub codec: Option<Codec>,
    /// `spark.shuffle.file.buffer`: each bypass file's buffer; the block size uncompressed.
    pub file_buffer: usize,
    /// `spark.shuffle.spill.diskWriteBufferSize`: the serialized writer's spill buffer.
    pub disk_write_buffer: usize,
    /// `spark.shuffle.localDisk.file.output.buffer` (else the deprecated unsafe key).
    pub output_buffer: usize,
    /// `spark.shuffle.sort.initialBufferSize`.
    pub initial_buffer_records: u64,
    /// `spark.shuffle.spill.numElementsForceSpillThreshold`.
    pub force_spill_records: u64,
}

impl WriteParams {
    pub fn from_conf(conf: &SparkConf) -> Result<WriteParams, ConfError> {
        let compression = crate::codec::Compression::from_conf(conf)?;
        // Read and checked as Spark checks it; spillway writes no checksum file (its blocks
        // carry their own CRC32C, docs/spark-model.md §18.5).
        conf.get_bool(keys::SHUFFLE_CHECKSUM_ENABLED)?;
        let algorithm = conf.get_str(keys::SHUFFLE_CHECKSUM_ALGORITHM);
        if !["ADLER32", "CRC32", "CRC32C"]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(algorithm))
        {
            return Err(ConfError::CheckFailed {
                key: keys::SHUFFLE_CHECKSUM_ALGORITHM.into(),
                value: algorithm.into(),
                message: "Shuffle checksum algorithm must be one of ADLER32, CRC32, CRC32C.",
            });
        }
        let kib = |v: i64| v as usize * 1024;
        let output = match conf.size(keys::SHUFFLE_LOCAL_DISK_OUTPUT_BUFFER)? {
            Some(v) => v,
            None => conf.get_size(keys::SHUFFLE_UNSAFE_FILE_OUTPUT_BUFFER)?,
        };
        Ok(WriteParams {
            codec: compression.shuffle,
            file_buffer: kib(conf.get_size(keys::SHUFFLE_FILE_BUFFER)?),
            disk_write_buffer: conf.get_size(keys::SHUFFLE_SPILL_DISK_WRITE_BUFFER_SIZE)? as usize,
            output_buffer: kib(output),
            initial_buffer_records: conf.get_int(keys::SHUFFLE_SORT_INITIAL_BUFFER_SIZE)? as u64,
            force_spill_records: conf.get_int(keys::SPILL_FORCE_SPILL_THRESHOLD)?.max(1) as u64,
        })
    }
}

/// `ShuffleWriteMetrics`, with Spark's names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShuffleWriteMetrics {
    /// Bytes of the data file (after compression).
    pub bytes_written: u64,
    /// Records written (combined records when the map side combines).
    pub records_written: u64,
    /// Nanoseconds writing and committing the map output.
    pub write_time: u64,
}

/// What a map task leaves and measured.
#[derive(Debug)]
pub struct MapTaskOutput {
    pub status: MapStatus,
    pub write: ShuffleWriteMetrics,
    /// Spills, peak execution memory, run time, records in.
    pub metrics: TaskMetrics,
}

/// Files a map task created: deleted on drop unless kept (committed).
struct TaskFiles {
    paths: Vec<PathBuf>,
}

impl TaskFiles {
    fn new() -> TaskFiles {
        TaskFiles { paths: Vec::new() }
    }

    fn add(&mut self, p: PathBuf) -> PathBuf {
        self.paths.push(p.clone());
        p
    }

    fn forget(&mut self, p: &Path) {
        self.paths.retain(|q| q != p);
    }
}

impl Drop for TaskFiles {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn io_err(what: &str, path: &Path, e: io::Error) -> TaskError {
    TaskError::Shuffle(format!("{what} {}: {e}", path.display()))
}

fn create(files: &mut TaskFiles, path: PathBuf) -> Result<(File, PathBuf), TaskError> {
    let f = File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err("create", &path, e))?;
    Ok((f, files.add(path)))
}

/// A map task's records generated ahead of its writer, with their partitions and the
/// digests of what each partition was given: [`run_map_task_on`] hands them to the writer as
/// [`run_map_task`] hands the records it generates, so the writer can be timed without the
/// generator (`spillway bench`, `benches/shuffle.rs`). Holds the records in ordinary memory,
/// outside the executor's accounting.
#[derive(Debug, Clone)]
pub struct MapInput {
    record_bytes: usize,
    records: Vec<u8>,
    partitions: Vec<u32>,
    expected: Vec<RecordDigest>,
}

impl MapInput {
    /// The records map task `map` of `spec` generates, in order.
    pub fn generate(spec: &ShuffleSpec, map: u32) -> MapInput {
        let rb = spec.record_bytes as usize;
        let n = spec.records_per_task as usize;
        let seed = spec.map_seed(map);
        let mut records = vec![0u8; n * rb];
        let mut partitions = Vec::with_capacity(n);
        let mut expected = vec![RecordDigest::default(); spec.reduce_partitions as usize];
        for (i, rec) in records.chunks_exact_mut(rb.max(1)).enumerate() {
            spec.write_record(seed, i as u64, rec);
            let p = spec.partition(crate::data::record_key(rec));
            expected[p as usize].add(rec);
            partitions.push(p);
        }
        MapInput {
            record_bytes: rb,
            records,
            partitions,
            expected,
        }
    }

    /// Bytes of the records.
    pub fn bytes(&self) -> u64 {
        self.records.len() as u64
    }

    /// Per reduce partition: the digest of its records.
    pub fn expected(&self) -> &[RecordDigest] {
        &self.expected
    }

    /// The records in order, each with its reduce partition.
    pub fn records(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.partitions
            .iter()
            .copied()
            .zip(self.records.chunks_exact(self.record_bytes.max(1)))
    }
}

/// Runs map task `ctx.partition` of a shuffle on `executor` (0 = this one).
pub fn run_map_task(
    ctx: &TaskContext,
    spec: &ShuffleSpec,
    choice: &WriterChoice,
    params: &WriteParams,
    executor: u32,
) -> Result<MapTaskOutput, TaskError> {
    map_task(ctx, spec, choice, params, executor, None)
}

/// [`run_map_task`] writing `input`'s records instead of generating them: any map task may
/// write any input of the spec's record size and count (its `expected` digests are the
/// input's).
pub fn run_map_task_on(
    ctx: &TaskContext,
    spec: &ShuffleSpec,
    choice: &WriterChoice,
    params: &WriteParams,
    executor: u32,
    input: &MapInput,
) -> Result<MapTaskOutput, TaskError> {
    if input.record_bytes as u64 != spec.record_bytes
        || input.partitions.len() as u64 != spec.records_per_task
        || input.expected.len() != spec.reduce_partitions as usize
    {
        return Err(TaskError::InvalidSpec(format!(
            "a map input of {} records of {} bytes over {} partitions for a shuffle of {} \
             records of {} bytes over {} partitions",
            input.partitions.len(),
            input.record_bytes,
            input.expected.len(),
            spec.records_per_task,
            spec.record_bytes,
            spec.reduce_partitions
        )));
    }
    map_task(ctx, spec, choice, params, executor, Some(input))
}

fn map_task(
    ctx: &TaskContext,
    spec: &ShuffleSpec,
    choice: &WriterChoice,
    params: &WriteParams,
    executor: u32,
    input: Option<&MapInput>,
) -> Result<MapTaskOutput, TaskError> {
    let started = Instant::now();
    let map = ctx.partition;
    let dirs = Arc::clone(ctx.executor.local_dirs());
    let mut files = TaskFiles::new();
    let name = format!("shuffle_{}_{}_0", spec.shuffle_id, map);
    let data_path = dirs
        .file(&format!("{name}.data"))
        .map_err(|e| io_err("place", Path::new(&name), e))?;
    let index_path = dirs
        .file(&format!("{name}.index"))
        .map_err(|e| io_err("place", Path::new(&name), e))?;
    let (data_tmp, data_tmp_path) = create(
        &mut files,
        data_path.with_extension(format!("data.{}.tmp", ctx.task_attempt_id)),
    )?;
    let mut w = Written {
        spec,
        map,
        input,
        params,
        dirs: &dirs,
        expected: vec![RecordDigest::default(); spec.reduce_partitions as usize],
        expected_aggregate: vec![RecordDigest::default(); spec.reduce_partitions as usize],
        written: vec![RecordDigest::default(); spec.reduce_partitions as usize],
        lengths: vec![0; spec.reduce_partitions as usize],
        metrics: TaskMetrics::default(),
        concat_ns: 0,
    };
    match choice.kind {
        WriterKind::BypassMergeSort => w.bypass(&mut files, data_tmp)?,
        WriterKind::UnsafeShuffle => w.serialized(ctx, &mut files, data_tmp, &data_tmp_path)?,
        WriterKind::SortShuffle => w.sort(ctx, data_tmp, &data_tmp_path)?,
    }
    let commit_started = Instant::now();
    // `writeMetadataFileAndCommit`: the index under a temporary name, then both renamed.
    let (mut index_tmp, index_tmp_path) = create(
        &mut files,
        index_path.with_extension(format!("index.{}.tmp", ctx.task_attempt_id)),
    )?;
    index_tmp
        .write_all(&encode_index(&w.lengths))
        .map_err(|e| io_err("write", &index_tmp_path, e))?;
    drop(index_tmp);
    let bytes_written: u64 = w.lengths.iter().sum();
    let on_disk = std::fs::metadata(&data_tmp_path)
        .map_err(|e| io_err("stat", &data_tmp_path, e))?
        .len();
    if on_disk != bytes_written {
        return Err(TaskError::Shuffle(format!(
            "data file {} holds {on_disk} bytes, its partitions {bytes_written}",
            data_tmp_path.display()
        )));
    }
    // From here the final names own the files (an error below deletes them too).
    let output = MapOutputFiles {
        data: data_path,
        index: index_path,
    };
    for (tmp, fin) in [
        (&data_tmp_path, &output.data),
        (&index_tmp_path, &output.index),
    ] {
        std::fs::rename(tmp, fin).map_err(|e| io_err("commit", tmp, e))?;
        files.forget(tmp);
    }
    let records_written: u64 = w.written.iter().map(|d| d.records).sum();
    let mut metrics = w.metrics;
    metrics.records_out = records_written;
    metrics.records_in = spec.records_per_task;
    metrics.peak_execution_memory = ctx.memory.peak_execution_memory();
    metrics.executor_run_time = started.elapsed().as_millis() as u64;
    // Time in the writer's own I/O: concatenating or merging into the data file, committing.
    let write_time = commit_started.elapsed().as_nanos() as u64 + w.concat_ns;
    Ok(MapTaskOutput {
        status: MapStatus {
            map_id: map,
            executor,
            lengths: w.lengths,
            written: w.written,
            expected: w.expected,
            expected_aggregate: w.expected_aggregate,
            files: output,
        },
        write: ShuffleWriteMetrics {
            bytes_written,
            records_written,
            write_time,
        },
        metrics,
    })
}

/// One map task's writing state.
struct Written<'a> {
    spec: &'a ShuffleSpec,
    map: u32,
    /// Records generated beforehand (else generated as they are written).
    input: Option<&'a MapInput>,
    params: &'a WriteParams,
    dirs: &'a Arc<DiskBlockManager>,
    /// Per partition: the generated records (before the writer).
    expected: Vec<RecordDigest>,
    /// Per partition: their aggregate digest (`super::aggregate_digest`).
    expected_aggregate: Vec<RecordDigest>,
    /// Per partition: what the writer wrote.
    written: Vec<RecordDigest>,
    lengths: Vec<u64>,
    metrics: TaskMetrics,
    /// Nanoseconds concatenating or merging into the data file.
    concat_ns: u64,
}

impl Written<'_> {
    fn tag(&self, reduce: u32) -> u64 {
        segment_tag(self.spec.shuffle_id, self.map, reduce)
    }

    /// Generates the task's records in order (or takes them from the input), handing each to
    /// `f` with its partition, after adding it to the partition's expected digest.
    fn generate(
        &mut self,
        mut f: impl FnMut(u32, &[u8]) -> Result<(), TaskError>,
    ) -> Result<(), TaskError> {
        if let Some(input) = self.input {
            self.expected.clone_from(&input.expected);
            for (i, (p, rec)) in input.records().enumerate() {
                if (i as u64).is_multiple_of(crate::interrupt::CHECK_EVERY) {
                    crate::interrupt::check()?;
                }
                f(p, rec)?;
            }
            return Ok(());
        }
        let seed = self.spec.map_seed(self.map);
        let mut buf = vec![0u8; self.spec.record_bytes as usize];
        for i in 0..self.spec.records_per_task {
            if i.is_multiple_of(crate::interrupt::CHECK_EVERY) {
                crate::interrupt::check()?;
            }
            self.spec.write_record(seed, i, &mut buf);
            let key = crate::data::record_key(&buf);
            let p = self.spec.partition(key);
            self.expected[p as usize].add(&buf);
            let value = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
            let a = &mut self.expected_aggregate[p as usize];
            *a = a.combine(super::aggregate_digest(key, 1, value));
            f(p, &buf)?;
        }
        Ok(())
    }

    /// `BypassMergeSortShuffleWriter.write`.
    fn bypass(&mut self, files: &mut TaskFiles, mut data: File) -> Result<(), TaskError> {
        // No `BufWriter`: the segment writer's block buffer is the file's buffer, each block
        // one `write` of its header and bytes.
        struct Part {
            file: File,
            path: PathBuf,
            seg: SegmentWriter,
        }
        let n = self.spec.reduce_partitions as usize;
        let mut parts: Vec<Option<Part>> = (0..n).map(|_| None).collect();
        let params = *self.params;
        let dirs = Arc::clone(self.dirs);
        let tags: Vec<u64> = (0..n as u32).map(|r| self.tag(r)).collect();
        let mut opened: Vec<PathBuf> = Vec::new();
        let result = self.generate(|p, rec| {
            let slot = &mut parts[p as usize];
            if slot.is_none() {
                let path = dirs
                    .temp_file("temp_shuffle")
                    .map_err(|e| io_err("place", Path::new("temp_shuffle"), e))?;
                let f = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| io_err("create", &path, e))?;
                opened.push(path.clone());
                let mut seg = SegmentWriter::new(params.codec, params.file_buffer);
                seg.begin(tags[p as usize]);
                *slot = Some(Part { file: f, path, seg });
            }
            let part = slot.as_mut().expect("opened above");
            part.seg
                .write_record(&mut part.file, rec)
                .map_err(|e| io_err("write", &part.path, e))
        });
        for p in &opened {
            files.add(p.clone());
        }
        result?;
        // Close every file, then concatenate them in partition order.
        let concat_started = Instant::now();
        let mut pieces: Vec<Option<(PathBuf, u64)>> = Vec::with_capacity(n);
        for (r, slot) in parts.into_iter().enumerate() {
            match slot {
                None => pieces.push(None),
                Some(mut part) => {
                    let (len, digest) = part
                        .seg
                        .end(&mut part.file)
                        .map_err(|e| io_err("write", &part.path, e))?;
                    self.written[r] = digest;
                    pieces.push(Some((part.path, len)));
                }
            }
        }
        for (r, piece) in pieces.into_iter().enumerate() {
            if let Some((path, len)) = piece {
                let mut src = File::open(&path).map_err(|e| io_err("open", &path, e))?;
                let copied =
                    io::copy(&mut src, &mut data).map_err(|e| io_err("concatenate", &path, e))?;
                if copied != len {
                    return Err(TaskError::Shuffle(format!(
                        "{} holds {copied} bytes, its segment {len}",
                        path.display()
                    )));
                }
                self.lengths[r] = len;
                drop(src);
                let _ = std::fs::remove_file(&path);
                files.forget(&path);
            }
        }
        self.concat_ns = concat_started.elapsed().as_nanos() as u64;
        Ok(())
    }

    /// `UnsafeShuffleWriter` over a `ShuffleExternalSorter`.
    fn serialized(
        &mut self,
        ctx: &TaskContext,
        files: &mut TaskFiles,
        data: File,
        data_path: &Path,
    ) -> Result<(), TaskError> {
        let page_bytes = ctx.memory.page_size().min(MAX_SHUFFLE_PAGE_BYTES);
        let mut sorter = ShuffleSorter::new(ctx, self.spec, self.map, self.params, page_bytes);
        let shared = Arc::clone(&sorter.shared);
        let mut held = None;
        let result = self.generate(|p, rec| sorter.insert(&shared, &mut held, p, rec));
        drop(held);
        // Whatever happens next, the spills are the task's files.
        let spill_result = result.and_then(|()| sorter.close());
        let (spills, sort_metrics) = sorter.into_spills();
        for s in &spills {
            files.add(s.path.clone());
        }
        self.metrics = sort_metrics;
        spill_result?;
        let merge_started = Instant::now();
        let n = self.spec.reduce_partitions as usize;
        for s in &spills {
            for r in 0..n {
                self.written[r] = self.written[r].combine(s.written[r]);
            }
        }
        match spills.as_slice() {
            [] => {}
            [only] => {
                // `transferMapSpillFile`: the one file becomes the data file.
                drop(data);
                std::fs::rename(&only.path, data_path)
                    .map_err(|e| io_err("move", &only.path, e))?;
                files.forget(&only.path);
                self.lengths.clone_from(&only.lengths);
            }
            many => {
                // `mergeSpillsWithFileStream`/`transferTo`: partition by partition, each
                // spill's piece in spill order.
                let mut data = data;
                let mut sources = Vec::with_capacity(many.len());
                for s in many {
                    sources.push(File::open(&s.path).map_err(|e| io_err("open", &s.path, e))?);
                }
                let mut offsets = vec![0u64; many.len()];
                for r in 0..n {
                    for (i, s) in many.iter().enumerate() {
                        let len = s.lengths[r];
                        if len == 0 {
                            continue;
                        }
                        let src = &mut sources[i];
                        src.seek(SeekFrom::Start(offsets[i]))
                            .map_err(|e| io_err("seek", &s.path, e))?;
                        let copied = io::copy(&mut Read::take(&mut *src, len), &mut data)
                            .map_err(|e| io_err("merge", &s.path, e))?;
                        if copied != len {
                            return Err(TaskError::Shuffle(format!(
                                "spill {} ended {} bytes into a {len}-byte partition",
                                s.path.display(),
                                copied
                            )));
                        }
                        offsets[i] += len;
                        self.lengths[r] += len;
                    }
                }
                drop(sources);
                for s in many {
                    let _ = std::fs::remove_file(&s.path);
                    files.forget(&s.path);
                }
            }
        }
        self.concat_ns = merge_started.elapsed().as_nanos() as u64;
        Ok(())
    }

    /// `SortShuffleWriter` over `ExternalSorter`.
    fn sort(&mut self, ctx: &TaskContext, data: File, data_path: &Path) -> Result<(), TaskError> {
        let mut out = BufWriter::with_capacity(self.params.output_buffer, data);
        let mut seg = SegmentWriter::new(self.params.codec, self.params.file_buffer);
        let mut current: Option<u32> = None;
        let n = self.spec.reduce_partitions;
        let tags: Vec<u64> = (0..n).map(|r| self.tag(r)).collect();
        let mut lengths = vec![0u64; n as usize];
        let mut written = vec![RecordDigest::default(); n as usize];
        // Writes one output record of partition `p`, opening its segment.
        let mut emit = |p: u32, rec: &[u8]| -> io::Result<()> {
            if current != Some(p) {
                if let Some(prev) = current {
                    (lengths[prev as usize], written[prev as usize]) = seg.end(&mut out)?;
                }
                seg.begin(tags[p as usize]);
                current = Some(p);
            }
            seg.write_record(&mut out, rec)
        };
        let werr = |e: io::Error| io_err("write", data_path, e);
        if self.spec.operation.map_side_combine() {
            let mut agg =
                SpillableAggregator::with_order(ctx, EntryOrder::Partition(n), "ExternalSorter");
            self.generate(|_, rec| {
                let key = crate::data::record_key(rec);
                let value = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
                agg.insert(key, value)
            })?;
            let spec = self.spec;
            let mut failed = None;
            let m = agg.finish(|key, count, sum| {
                if failed.is_some() {
                    return;
                }
                let mut rec = [0u8; super::COMBINED_RECORD_BYTES];
                rec[0..8].copy_from_slice(&key.to_le_bytes());
                rec[8..16].copy_from_slice(&count.to_le_bytes());
                rec[16..24].copy_from_slice(&sum.to_le_bytes());
                if let Err(e) = emit(spec.partition(key), &rec) {
                    failed = Some(e);
                }
            })?;
            if let Some(e) = failed {
                return Err(werr(e));
            }
            self.metrics = m;
        } else {
            // A `PartitionedPairBuffer`: `(partition, record)` pairs sorted by partition.
            let rb = self.spec.record_bytes as usize;
            let mut sorter = ExternalSorter::new(ctx, rb + 8)?;
            let mut pair = vec![0u8; rb + 8];
            self.generate(|p, rec| {
                pair[0..8].copy_from_slice(&u64::from(p).to_le_bytes());
                pair[8..].copy_from_slice(rec);
                sorter.insert_record(&pair)
            })?;
            let mut failed = None;
            let out_m = sorter.finish_each(|pair| {
                if failed.is_none() {
                    let p = crate::data::record_key(pair) as u32;
                    if let Err(e) = emit(p, &pair[8..]) {
                        failed = Some(e);
                    }
                }
            })?;
            if let Some(e) = failed {
                return Err(werr(e));
            }
            self.metrics = out_m.metrics;
        }
        if let Some(prev) = current {
            (lengths[prev as usize], written[prev as usize]) = seg.end(&mut out).map_err(werr)?;
        }
        out.flush().map_err(werr)?;
        self.lengths = lengths;
        self.written = written;
        Ok(())
    }
}

/// One spill of the serialized writer: a file with the partitions contiguous.
#[derive(Debug)]
struct SerializedSpill {
    path: PathBuf,
    lengths: Vec<u64>,
    written: Vec<RecordDigest>,
}

/// `ShuffleExternalSorter`'s state, shared with its spill callback.
struct SorterState {
    pages: Vec<Page>,
    cursor: usize,
    /// The pointer array; `records` packed pointers at its start.
    array: Option<Page>,
    records: usize,
    spills: Vec<SerializedSpill>,
    own_id: Option<ConsumerId>,
    spec_partitions: u32,
    tags: Vec<u64>,
    params: WriteParams,
    dirs: Arc<DiskBlockManager>,
    metrics: TaskMetrics,
    executor_metrics: Arc<crate::metrics::ExecutorMetrics>,
    /// Set by `close`: the records are being written as the last file, and a spill request
    /// meanwhile releases nothing.
    closing: bool,
}

impl MemoryConsumer for SharedState<SorterState> {
    /// `ShuffleExternalSorter.spill(size, trigger)`: only when it is the requester.
    fn spill(
        &self,
        _size: u64,
        trigger: ConsumerId,
    ) -> Result<u64, crate::memory::ConsumerSpillError> {
        let Some(mut st) = self.try_lock() else {
            return Ok(0);
        };
        if st.own_id != Some(trigger) || st.records == 0 || st.closing {
            return Ok(0);
        }
        st.write_sorted_file(false)
            .map_err(crate::memory::ConsumerSpillError::File)
    }
}

fn pointers(array: &mut Page) -> &mut [u64] {
    let bytes = array.as_mut_slice();
    let skip = bytes.as_ptr().align_offset(8).min(bytes.len());
    let bytes = &mut bytes[skip..];
    let n = bytes.len() / 8;
    <[u64] as zerocopy::FromBytes>::mut_from_bytes(&mut bytes[..n * 8]).expect("aligned")
}

/// `ShuffleInMemorySorter`'s radix sort: LSD over the partition bytes of the packed pointers
/// (bits 40..64), stable, with `buffer` (the array's other half) as the scatter target; passes
/// whose byte is the same for every pointer are skipped. Returns the sorted pointers (in `data`
/// or in `buffer`, after an odd number of passes). Stable, so a partition's records keep their
/// insertion order, which is their address order.
fn radix_sort_by_partition<'a>(data: &'a mut [u64], buffer: &'a mut [u64]) -> &'a [u64] {
    let shifts = [40u32, 48, 56];
    let mut counts = [[0usize; 256]; 3];
    for &p in data.iter() {
        for (c, s) in counts.iter_mut().zip(shifts) {
            c[((p >> s) & 0xff) as usize] += 1;
        }
    }
    let n = data.len();
    let mut from: &mut [u64] = data;
    let mut to: &mut [u64] = buffer;
    for (c, s) in counts.iter().zip(shifts) {
        if c.contains(&n) {
            continue;
        }
        let mut offsets = [0usize; 256];
        let mut sum = 0;
        for (o, &k) in offsets.iter_mut().zip(c.iter()) {
            *o = sum;
            sum += k;
        }
        for &p in from.iter() {
            let b = ((p >> s) & 0xff) as usize;
            to[offsets[b]] = p;
            offsets[b] += 1;
        }
        std::mem::swap(&mut from, &mut to);
    }
    from
}

/// Usable pointers of an array: half of its 8-byte-aligned longs (the radix sort's buffer is
/// the other half; a page need not start on 8 bytes, see `pointers`).
fn usable(array: &Page) -> usize {
    let bytes = array.as_slice();
    let skip = bytes.as_ptr().align_offset(8).min(bytes.len());
    (bytes.len() - skip) / 8 / 2
}

impl SorterState {
    /// Copies a record into the last page at the cursor (which has room for it) and adds its
    /// pointer to the array (which has room for it).
    #[inline(always)]
    fn append(&mut self, partition: u32, rec: &[u8]) {
        let page_no = self.pages.len() - 1;
        let off = self.cursor;
        let end = off + 4 + rec.len();
        {
            let page = &mut self.pages[page_no].as_mut_slice()[off..end];
            page[..4].copy_from_slice(&(rec.len() as u32).to_le_bytes());
            crate::spill::copy_short(&mut page[4..], rec);
        }
        self.cursor = end;
        let ptr = (u64::from(partition) << (PAGE_NUMBER_BITS + OFFSET_BITS))
            | ((page_no as u64) << OFFSET_BITS)
            | off as u64;
        let n = self.records;
        let array = self.array.as_mut().expect("room checked by the caller");
        pointers(array)[n] = ptr;
        self.records += 1;
    }

    /// `writeSortedFile`: sorts the pointers by partition and writes the records, partitions
    /// contiguous, into one new file; frees pages and array. Returns the bytes freed.
    fn write_sorted_file(&mut self, final_file: bool) -> Result<u64, crate::spill::SpillError> {
        let started = Instant::now();
        let n = self.records;
        let mut array = self.array.take().expect("records imply an array");
        let t = Instant::now();
        let ptrs: &[u64] = {
            let all = pointers(&mut array);
            let half = all.len() / 2;
            let (data, buffer) = all.split_at_mut(half);
            radix_sort_by_partition(&mut data[..n], &mut buffer[..n])
        };
        self.metrics.sort_ns += t.elapsed().as_nanos() as u64;
        let path = self
            .dirs
            .temp_file("temp_shuffle")
            .map_err(|e| crate::spill::SpillError::io(Path::new("temp_shuffle"), "create", 0, e))?;
        let spill_err = |e: io::Error| crate::spill::SpillError::io(&path, "write", 0, e);
        let parts = self.spec_partitions as usize;
        let mut lengths = vec![0u64; parts];
        let mut written = vec![RecordDigest::default(); parts];
        let result = (|| -> io::Result<()> {
            let f = File::options().write(true).create_new(true).open(&path)?;
            let mut out = BufWriter::with_capacity(self.params.disk_write_buffer, f);
            let mut seg = SegmentWriter::new(self.params.codec, self.params.file_buffer);
            let mut current: Option<u32> = None;
            // In batches: the record lengths of a batch are loaded first, so their cache misses
            // overlap (records of one partition lie far apart in the pages), then copied out.
            let mut located = [(0u32, 0usize, 0usize, 0usize); GATHER_BATCH];
            for (b, batch) in ptrs.chunks(GATHER_BATCH).enumerate() {
                if (b as u64 * GATHER_BATCH as u64).is_multiple_of(crate::interrupt::CHECK_EVERY)
                    && crate::interrupt::check().is_err()
                {
                    return Err(io::Error::other("interrupted"));
                }
                for (slot, &ptr) in located.iter_mut().zip(batch) {
                    let p = (ptr >> (PAGE_NUMBER_BITS + OFFSET_BITS)) as u32;
                    let page = ((ptr >> OFFSET_BITS) & ((1 << PAGE_NUMBER_BITS) - 1)) as usize;
                    let off = (ptr & ((1 << OFFSET_BITS) - 1)) as usize;
                    let bytes = self.pages[page].as_slice();
                    let len =
                        u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4")) as usize;
                    *slot = (p, page, off + 4, len);
                }
                for &(p, page, start, len) in &located[..batch.len()] {
                    let rec = &self.pages[page].as_slice()[start..start + len];
                    if current != Some(p) {
                        if let Some(prev) = current {
                            (lengths[prev as usize], written[prev as usize]) = seg.end(&mut out)?;
                        }
                        seg.begin(self.tags[p as usize]);
                        current = Some(p);
                    }
                    seg.write_record(&mut out, rec)?;
                }
            }
            if let Some(prev) = current {
                (lengths[prev as usize], written[prev as usize]) = seg.end(&mut out)?;
            }
            out.flush()
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&path);
            // Put the records back: the task fails, and drops them with its state.
            self.array = Some(array);
            return Err(spill_err(e));
        }
        let file_bytes: u64 = lengths.iter().sum();
        let freed: u64 = self.pages.iter().map(Page::len).sum::<u64>() + array.len();
        let page_bytes: u64 = self.pages.iter().map(Page::len).sum();
        self.pages.clear();
        self.cursor = 0;
        self.records = 0;
        drop(array);
        self.spills.push(SerializedSpill {
            path,
            lengths,
            written,
        });
        if !final_file {
            // `memoryBytesSpilled` += the pages freed, `diskBytesSpilled` += the file.
            self.metrics.spill_count += 1;
            self.metrics.memory_bytes_spilled += page_bytes;
            self.metrics.disk_bytes_spilled += file_bytes;
            self.executor_metrics.record_spill(file_bytes);
            self.metrics.spill_write_ns += started.elapsed().as_nanos() as u64;
        }
        Ok(freed)
    }
}

/// `ShuffleExternalSorter`.
struct ShuffleSorter {
    consumer: Consumer,
    shared: Arc<SharedState<SorterState>>,
    page_bytes: u64,
    initial_longs: u64,
    force_spill_records: u64,
}

impl ShuffleSorter {
    fn new(
        ctx: &TaskContext,
        spec: &ShuffleSpec,
        map: u32,
        params: &WriteParams,
        page_bytes: u64,
    ) -> ShuffleSorter {
        let shared = Arc::new(SharedState::new(SorterState {
            pages: Vec::new(),
            cursor: 0,
            array: None,
            records: 0,
            spills: Vec::new(),
            own_id: None,
            spec_partitions: spec.reduce_partitions,
            tags: (0..spec.reduce_partitions)
                .map(|r| segment_tag(spec.shuffle_id, map, r))
                .collect(),
            params: *params,
            dirs: Arc::clone(ctx.executor.local_dirs()),
            metrics: TaskMetrics::default(),
            executor_metrics: Arc::clone(ctx.memory.metrics()),
            closing: false,
        }));
        let consumer = ctx
            .memory
            .register("ShuffleExternalSorter", Arc::clone(&shared) as _);
        shared.lock().own_id = Some(consumer.id());
        ShuffleSorter {
            consumer,
            shared,
            page_bytes,
            // The array holds `initialBufferSize` records in its usable half.
            initial_longs: params.initial_buffer_records * 2,
            force_spill_records: params.force_spill_records,
        }
    }

    /// `insertRecord`. `held` keeps the state locked from one record to the next while
    /// nothing needs memory (a lock and unlock per record was a third of the insert): the spill
    /// callback acts only when this sorter is the requester, which is only while `held` is
    /// released, so a callback meanwhile (another task's request) finds the state locked and
    /// returns 0, as it would anyway. `shared` is `self.shared`.
    #[inline]
    fn insert<'s>(
        &mut self,
        shared: &'s SharedState<SorterState>,
        held: &mut Option<std::sync::MutexGuard<'s, SorterState>>,
        partition: u32,
        rec: &[u8],
    ) -> Result<(), TaskError> {
        let need = rec.len() + 4;
        let st = held.get_or_insert_with(|| shared.lock());
        if (st.records as u64) < self.force_spill_records
            && st.array.as_ref().is_some_and(|a| st.records < usable(a))
            && st.pages.len() <= 1 << PAGE_NUMBER_BITS
            && st
                .pages
                .last()
                .is_some_and(|p| (st.cursor + need) as u64 <= p.len())
        {
            st.append(partition, rec);
            return Ok(());
        }
        *held = None;
        self.insert_slow(partition, rec)
    }

    /// `insertRecord` when the array is full, the page has no room or a spill is due.
    #[inline(never)]
    fn insert_slow(&mut self, partition: u32, rec: &[u8]) -> Result<(), TaskError> {
        let records = self.shared.lock().records as u64;
        if records >= self.force_spill_records {
            self.shared.lock().write_sorted_file(false)?;
        }
        self.grow_array_if_necessary()?;
        let need = (rec.len() + 4) as u64;
        let fits = {
            let st = self.shared.lock();
            st.pages
                .last()
                .is_some_and(|p| st.cursor as u64 + need <= p.len())
        };
        if !fits {
            // `acquireNewPageIfNecessary`: may spill this sorter.
            let page = self.consumer.allocate_page_of(self.page_bytes, need)?;
            let mut st = self.shared.lock();
            st.pages.push(page);
            st.cursor = 0;
            drop(st);
            // A spill meanwhile may have freed the array.
            self.grow_array_if_necessary()?;
        }
        let mut st = self.shared.lock();
        if st.pages.len() > 1 << PAGE_NUMBER_BITS {
            return Err(TaskMemoryError::PageTableFull.into());
        }
        st.append(partition, rec);
        Ok(())
    }

    /// `growPointerArrayIfNecessary` (docs/spark-model.md §18.3).
    fn grow_array_if_necessary(&mut self) -> Result<(), TaskError> {
        let (has_space, used_longs, records) = {
            let st = self.shared.lock();
            match st.array.as_ref() {
                None => (false, 0, st.records),
                Some(a) => (st.records < usable(a), a.len() / 8, st.records),
            }
        };
        if has_space {
            return Ok(());
        }
        if used_longs == 0 || records == 0 {
            let array = self.consumer.allocate_array(self.initial_longs)?;
            let old = self.shared.lock().array.replace(array);
            drop(old);
            return Ok(());
        }
        match self.consumer.allocate_array(used_longs * 2) {
            Ok(mut grown) => {
                let mut st = self.shared.lock();
                match st.array.take() {
                    Some(mut old) if st.records > 0 => {
                        let n = st.records;
                        pointers(&mut grown)[..n].copy_from_slice(&pointers(&mut old)[..n]);
                        st.array = Some(grown);
                        drop(st);
                        drop(old);
                    }
                    // Spilled while asking: start again from the initial array.
                    _ => {
                        drop(st);
                        drop(grown);
                        let array = self.consumer.allocate_array(self.initial_longs)?;
                        self.shared.lock().array = Some(array);
                    }
                }
            }
            Err(TaskMemoryError::TooLargePage(_)) => {
                self.shared.lock().write_sorted_file(false)?;
                let array = self.consumer.allocate_array(self.initial_longs)?;
                self.shared.lock().array = Some(array);
            }
            Err(e) => {
                // The request may have spilled this sorter: only still full is fatal.
                let st = self.shared.lock();
                let full = st.array.as_ref().is_some_and(|a| st.records >= usable(a));
                let gone = st.array.is_none();
                drop(st);
                if full {
                    return Err(e.into());
                }
                if gone {
                    let array = self.consumer.allocate_array(self.initial_longs)?;
                    self.shared.lock().array = Some(array);
                }
            }
        }
        Ok(())
    }

    /// `closeAndGetSpills`: the in-memory records become the last file.
    fn close(&mut self) -> Result<(), TaskError> {
        let mut st = self.shared.lock();
        st.closing = true;
        if st.records > 0 {
            st.write_sorted_file(true)?;
        }
        st.pages.clear();
        st.array = None;
        Ok(())
    }

    fn into_spills(self) -> (Vec<SerializedSpill>, TaskMetrics) {
        let mut st = self.shared.lock();
        (std::mem::take(&mut st.spills), st.metrics.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_sort_orders_by_partition_and_keeps_insertion_order() {
        let mut s = 7u64;
        let mut data: Vec<u64> = (0..10_000u64)
            .map(|i| {
                let p = crate::data::splitmix64(&mut s) % 70_000;
                (p << 40) | i
            })
            .collect();
        let mut want = data.clone();
        want.sort_unstable();
        let mut buffer = vec![0u64; data.len()];
        assert_eq!(radix_sort_by_partition(&mut data, &mut buffer), &want[..]);
        // One partition: no pass at all.
        let mut same: Vec<u64> = (0..100).map(|i| (3 << 40) | i).collect();
        let want: Vec<u64> = same.clone();
        let mut buffer = vec![0u64; 100];
        assert_eq!(radix_sort_by_partition(&mut same, &mut buffer), &want[..]);
    }
}
