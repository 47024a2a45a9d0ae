//! The shuffle rows of `spillway bench`: map outputs written by the real writers through
//! `run_map_task_on` and read back through `read_partition`, on an executor of this process
//! whose local directory is the bench's directory (see the module doc of [`super`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::codec::Codec;
use crate::conf::SparkConf;
use crate::executor::Executor;
use crate::layout::Layout;
use crate::scheduler::{TaskContext, run_stage};
use crate::shuffle::fetch::{FetchParams, read_partition};
use crate::shuffle::writer::{MapInput, MapTaskOutput, WriteParams, run_map_task_on};
use crate::shuffle::{
    MapStatus, Operation, ShuffleSpec, ValueClass, WriterKind, choose_writer,
    format::{BLOCK_HEADER_BYTES, TRAILER_BYTES},
};
use crate::tasks::TaskError;

use super::{MIB, RECORD_BYTES, codec_rate, drop_cache, frames_of, per_sec, thread_cpu};

/// Reduce partitions of every shuffle the bench writes: below Spark's bypass threshold (200),
/// so `partitionBy` takes the bypass writer unless the threshold is lowered.
pub const SHUFFLE_PARTITIONS: u32 = 32;

/// The shuffle measurements' executor and inputs.
pub(super) struct ShuffleBench {
    executor: Executor,
    base: SparkConf,
    maps: u32,
    random: ShuffleSpec,
    random_input: MapInput,
    text: ShuffleSpec,
    text_input: MapInput,
    /// Stage and shuffle ids: each measurement is a stage, each map stage a shuffle.
    next_id: std::cell::Cell<u32>,
}

/// The map outputs of one measurement (a shuffle of its own), deleted with it.
pub(super) struct Outputs {
    shuffle_id: u32,
    pub statuses: Vec<MapStatus>,
}

impl Outputs {
    pub fn data_files(&self) -> Vec<PathBuf> {
        self.statuses.iter().map(|s| s.files.data.clone()).collect()
    }

    pub fn bytes(&self) -> u64 {
        self.statuses
            .iter()
            .map(|s| s.lengths.iter().sum::<u64>())
            .sum()
    }
}

fn task_io(what: &str, path: &Path, e: std::io::Error) -> TaskError {
    TaskError::Shuffle(format!("{what} {}: {e}", path.display()))
}

impl ShuffleBench {
    /// An executor with one core (tasks one at a time, as the limits write and read one file
    /// at a time), its local directory in `dir`, freed pages kept (as a JVM keeps its heap), and
    /// execution memory enough for the serialized writer to hold a map output without
    /// spilling; and the inputs of `maps` map tasks of `map_bytes` each, generated here (not
    /// timed).
    pub fn new(dir: &Path, buffer_bytes: usize, maps: u32, map_bytes: u64) -> anyhow::Result<Self> {
        let records = (map_bytes / RECORD_BYTES as u64).max(16);
        // The serialized writer's pages (records and prefixes, in pages of up to 64 MiB) and
        // its pointer array (16 bytes a record, a power of two, the old one beside the new
        // while it doubles), three times over for room: the unified region at
        // spark.memory.fraction 0.6 over a heap of 300 MiB reserved and the rest.
        let unified = 3 * records * (RECORD_BYTES as u64 + 4 + 24) + 128 * MIB;
        let heap = 300 * MIB + unified * 5 / 3;
        let base = SparkConf::new()
            .with("spark.executor.memory", &format!("{}m", heap.div_ceil(MIB)))
            .with("spark.executor.cores", "1")
            .with("spark.local.dir", &dir.display().to_string())
            .with(
                "spark.shuffle.file.buffer",
                &format!("{}k", (buffer_bytes / 1024).max(1)),
            )
            .with(crate::conf::keys::RETAIN_FREED_MEMORY, "true");
        let layout = Layout::from_conf(&base, None)?;
        let executor = Executor::start(&layout, &base)?;
        let spec = |compressible_percent, seed| ShuffleSpec {
            shuffle_id: 0,
            map_tasks: maps,
            reduce_partitions: SHUFFLE_PARTITIONS,
            records_per_task: records,
            record_bytes: RECORD_BYTES as u64,
            distinct_keys: 1 << 40,
            hot_key_percent: 0,
            compressible_percent,
            operation: Operation::PartitionBy,
            values: ValueClass::Bytes,
            seed,
        };
        let random = spec(0, 1);
        let text = spec(100, 2);
        Ok(ShuffleBench {
            executor,
            base,
            maps,
            random_input: MapInput::generate(&random, 0),
            random,
            text_input: MapInput::generate(&text, 0),
            text,
            next_id: std::cell::Cell::new(0),
        })
    }

    fn next_id(&self) -> u32 {
        let s = self.next_id.get();
        self.next_id.set(s + 1);
        s
    }

    /// The configuration of one measurement: compression off or `codec`, and for the
    /// serialized writer a bypass threshold below the partitions.
    fn conf(&self, codec: Option<Codec>, kind: WriterKind) -> SparkConf {
        let mut conf = self.base.clone();
        conf = match codec {
            None => conf.with("spark.shuffle.compress", "false"),
            Some(c) => conf
                .with("spark.shuffle.compress", "true")
                .with("spark.io.compression.codec", c.name.short_name()),
        };
        if kind == WriterKind::UnsafeShuffle {
            conf = conf.with("spark.shuffle.sort.bypassMergeThreshold", "1");
        }
        conf
    }

    /// Runs the map stage over `input` (every map task writes the same records), each task
    /// timed by `clock` around `run_map_task_on` and `after` (the fsync, when there is one).
    fn map_stage(
        &self,
        spec: &ShuffleSpec,
        input: &MapInput,
        codec: Option<Codec>,
        kind: WriterKind,
        clock: fn() -> Duration,
        after: fn(&MapTaskOutput) -> Result<(), TaskError>,
    ) -> anyhow::Result<(Outputs, Duration)> {
        let id = self.next_id();
        let spec = &ShuffleSpec {
            shuffle_id: id,
            ..spec.clone()
        };
        let conf = self.conf(codec, kind);
        let params = WriteParams::from_conf(&conf)?;
        let choice = choose_writer(spec.operation, spec.reduce_partitions, spec.values, &conf)?;
        anyhow::ensure!(
            choice.kind == kind,
            "the bench asked for {kind} and Spark's rules chose {} ({})",
            choice.kind,
            choice.reason
        );
        let task = |ctx: &TaskContext| -> Result<(MapTaskOutput, Duration), TaskError> {
            let t = clock();
            let out = run_map_task_on(ctx, spec, &choice, &params, 0, input)?;
            after(&out)?;
            Ok((out, clock() - t))
        };
        let runs = run_stage(&self.executor, id, self.maps, true, task, |_| {});
        let mut statuses = Vec::with_capacity(runs.len());
        let mut elapsed = Duration::ZERO;
        let mut failed = None;
        for r in runs {
            match r.result {
                Ok((out, d)) => {
                    if out.metrics.spill_count != 0 {
                        failed.get_or_insert(anyhow::anyhow!(
                            "map task {} spilled {} times: the bench measures a writer that \
                             holds its map output",
                            r.partition,
                            out.metrics.spill_count
                        ));
                    }
                    elapsed += d;
                    statuses.push(out.status);
                }
                Err(e) => {
                    failed.get_or_insert(anyhow::anyhow!("map task {}: {e}", r.partition));
                }
            }
        }
        // The outputs go with `statuses` on any error too.
        let outputs = Outputs {
            shuffle_id: id,
            statuses,
        };
        match failed {
            Some(e) => Err(e),
            None => Ok((outputs, elapsed)),
        }
    }

    /// Shuffle write of the incompressible records with `kind`, uncompressed, each data file
    /// fsynced before its task's clock stops: data-file bytes per second, and the outputs.
    pub fn write(&self, kind: WriterKind) -> anyhow::Result<(f64, Outputs)> {
        fn wall() -> Duration {
            static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            ORIGIN.get_or_init(Instant::now).elapsed()
        }
        fn fsync(out: &MapTaskOutput) -> Result<(), TaskError> {
            let path = &out.status.files.data;
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(|e| task_io("fsync", path, e))
        }
        let (outputs, elapsed) =
            self.map_stage(&self.random, &self.random_input, None, kind, wall, fsync)?;
        Ok((per_sec(outputs.bytes(), elapsed), outputs))
    }

    /// Every reduce partition of `outputs` read through `read_partition`, one reduce task at
    /// a time, the data files dropped from the page cache first; the map outputs are on
    /// executor `placed_on` (0: local; else fetched by the fetcher thread into anonymous
    /// mappings). Data-file bytes per second of wall time.
    pub fn read(&self, outputs: &mut Outputs, placed_on: u32) -> anyhow::Result<f64> {
        for s in &mut outputs.statuses {
            s.executor = placed_on;
            drop_cache(&s.files.data)?;
        }
        let params = FetchParams::from_conf(&self.conf(None, WriterKind::BypassMergeSort))?;
        let statuses = &outputs.statuses;
        let shuffle_id = outputs.shuffle_id;
        let t = Instant::now();
        let runs = run_stage(
            &self.executor,
            self.next_id(),
            SHUFFLE_PARTITIONS,
            true,
            |ctx| {
                let mut records = 0u64;
                let mut bytes = 0u64;
                let m =
                    read_partition(ctx, shuffle_id, statuses, ctx.partition, &params, 0, |r| {
                        records += 1;
                        bytes += r.len() as u64;
                        Ok(())
                    })?;
                Ok::<_, TaskError>((m, records, bytes))
            },
            |_| {},
        );
        let elapsed = t.elapsed();
        let (mut records, mut fetched, mut remote) = (0u64, 0u64, 0u64);
        for r in runs {
            let (m, n, _) = r
                .result
                .map_err(|e| anyhow::anyhow!("reduce task {}: {e}", r.partition))?;
            records += n;
            fetched += m.local_bytes_read + m.remote_bytes_read;
            remote += m.remote_bytes_read;
        }
        let want: u64 = statuses
            .iter()
            .map(|s| s.written.iter().map(|d| d.records).sum::<u64>())
            .sum();
        anyhow::ensure!(
            records == want && fetched == outputs.bytes() && (remote == 0) == (placed_on == 0),
            "read {records} of {want} records, {fetched} of {} bytes ({remote} remote)",
            outputs.bytes()
        );
        Ok(per_sec(fetched, elapsed))
    }

    /// The blocks the writer cuts from the text-like records with `codec`: per reduce
    /// partition (a segment, with its own compressor in the bypass writer), the partition's
    /// records in order as `le32 length ‖ record` cut at the codec's block.
    pub fn codec_blocks(&self, codec: Codec) -> Vec<Vec<Vec<u8>>> {
        (0..SHUFFLE_PARTITIONS)
            .map(|p| {
                let records = self
                    .text_input
                    .records()
                    .filter(|&(q, _)| q == p)
                    .map(|(_, r)| r);
                frames_of(records, codec.block_bytes, u32::MAX)
            })
            .filter(|frames| !frames.is_empty())
            .collect()
    }

    /// The codec alone on `blocks`, once per map task (a compressor per partition, as the
    /// bypass writer has): raw bytes per CPU second, and the bytes each map output should
    /// hold (its compressed blocks with their headers and the segments' trailers).
    pub fn codec_alone(
        &self,
        blocks: &[Vec<Vec<u8>>],
        codec: Codec,
    ) -> anyhow::Result<(f64, u64, u64)> {
        let (rate, stored) = codec_rate(blocks, codec, self.maps as usize)?;
        let frames: usize = blocks.iter().map(Vec::len).sum();
        let file = stored + (frames * BLOCK_HEADER_BYTES + blocks.len() * TRAILER_BYTES) as u64;
        Ok((rate, stored, file))
    }

    /// Map output write of the text-like records with `codec` (bypass writer) into the page
    /// cache, no fsync: raw bytes (records and prefixes) per CPU second of the map tasks'
    /// threads. Each data file must be `file_bytes` long: the blocks of the codec alone.
    pub fn codec_write(
        &self,
        codec: Codec,
        blocks: &[Vec<Vec<u8>>],
        file_bytes: u64,
    ) -> anyhow::Result<f64> {
        let raw: u64 = blocks.iter().flatten().map(|b| b.len() as u64).sum();
        fn cpu() -> Duration {
            thread_cpu()
        }
        fn nothing(_: &MapTaskOutput) -> Result<(), TaskError> {
            Ok(())
        }
        let (outputs, elapsed) = self.map_stage(
            &self.text,
            &self.text_input,
            Some(codec),
            WriterKind::BypassMergeSort,
            cpu,
            nothing,
        )?;
        for s in &outputs.statuses {
            let bytes: u64 = s.lengths.iter().sum();
            anyhow::ensure!(
                bytes == file_bytes,
                "a {} map output of {bytes} bytes, the codec alone's blocks make {file_bytes}: \
                 the codec measurement's blocks are not the writer's",
                codec.name
            );
        }
        Ok(per_sec(raw * u64::from(self.maps), elapsed))
    }
}
