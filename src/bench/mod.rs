//! `spillway bench`: this machine's physical limits, and spillway's spill, eviction and shuffle
//! throughput as fractions of them, measured in the same run.
//!
//! Limits:
//! - **disk write**: files of the spill's size written through a `spark.shuffle.file.buffer`
//!   (32 KiB) buffer, then `fsync`, timed to the end of the `fsync`;
//! - **disk read**: the same bytes read back sequentially in 1 MiB reads (the spill reader's
//!   frame size) after `posix_fadvise(DONTNEED)` dropped them from the page cache, each file
//!   announced whole with `posix_fadvise(SEQUENTIAL, WILLNEED)` so the disk gets its deepest
//!   queue;
//! - **first touch**: one write per OS page of a fresh anonymous mapping (page faults and
//!   zeroing), right after a warm-up touch of the same size (so the VM's host has memory ready:
//!   the warm case);
//! - **memcpy**: copying a buffer into another, both already written (warm), bytes copied / s.
//!
//! spillway's own, each against its limit, with the same files, sizes and sync policy:
//! - **spill write**: `SpillWriter` of 56-byte records, `sync_on_finish` (fsync), the records'
//!   digest given by the caller as a sorter gives it, vs disk write;
//! - **spill read-merge**: `SpillReader`s + `SortedMerge` over the sorted runs, page cache
//!   dropped first, vs disk read of the same files;
//! - **eviction**: MEMORY_AND_DISK blocks of 56-byte records evicted by one execution acquire
//!   through the real memory store and block manager, then the block files `fsync`ed, vs disk
//!   write. The freed pages stay mapped, as a JVM keeps its heap after a block is dropped (the
//!   garbage collector frees it later, off the eviction's path): this is the eviction's disk
//!   work. Measured a second time with the pages given back to the kernel as they are freed
//!   (`madvise(DONTNEED)`, what spillway does by default so that RSS follows the pools), with
//!   its own ratio and no target: the difference is the cost of giving memory back.
//!
//! Codecs (docs/spark-model.md §19), each of lz4, snappy and zstd at Spark's defaults, on
//! compressible text-like 56-byte records (an 8-byte key, then words of a small vocabulary, as
//! string columns are; the random records above do not compress):
//! - **codec compress**: the codec crate alone through [`Compressor::compress_into`], on exactly
//!   the frames the spill writer cuts from the same records (their 4-byte prefixes included),
//!   one compressor per file as a writer has;
//! - **spill write with the codec**: `SpillWriter` with that codec over the same records, into
//!   the page cache (no `fsync`: the disk's part is the spill write above; this one is the
//!   writer's own cost beside the codec's), digest given as a sorter gives it. Target: 90 % of
//!   the codec alone.
//!
//! Both codec rows are CPU work and are timed with the thread's CPU clock
//! (`CLOCK_THREAD_CPUTIME_ID`, the kernel's part of the writes included), so bytes per CPU
//! second: on a shared machine a wall clock would charge either side for other processes' work.
//!
//! Shuffle (docs/spark-model.md §18–§20), through the real writers and fetch on an executor of
//! this process (one core, so one task at a time as the limits write and read one file at a
//! time; its local directory in `dir`; freed pages kept, as a JVM keeps its heap), `runs` map
//! tasks of `partitionBy` into [`SHUFFLE_PARTITIONS`] reduce partitions, each map task writing
//! one file's worth of 56-byte `ShuffleSpec` records:
//! - **what is timed**: the writer, not the workload generator. The records are generated into
//!   memory before the clock starts ([`MapInput`](crate::shuffle::writer::MapInput), with the
//!   digest a map task takes of what it generates), and every map task writes the same ones
//!   through `run_map_task_on`; generating them as `run_map_task` does would add about half of
//!   the writer's own time, and is the scenario's work, not the shuffle's;
//! - **shuffle write**: incompressible records (`compressible_percent` 0),
//!   `spark.shuffle.compress=false`, each map task timed from the start of `run_map_task_on`
//!   to the end of its data file's `fsync` (the index file is not synced), data-file bytes,
//!   vs a disk write measured just before (as the eviction's); through the bypass writer
//!   (Spark's choice below `spark.shuffle.sort.bypassMergeThreshold`) and through the
//!   serialized writer (the threshold lowered to 1), with the memory to hold the map output
//!   unspilled (checked: a spill fails the bench);
//! - **shuffle read**: `read_partition` of every reduce partition of the bypass outputs, one
//!   reduce task at a time, its records counted (each block's CRC, framing and digest checked by
//!   the reader), the data files dropped from the page cache first, data-file bytes per second
//!   vs a disk read of the same data files; with the map outputs on this executor (local
//!   blocks), and for information on executor 1 (every block fetched: the fetcher thread reads
//!   each request into an anonymous mapping, the task verifies it from there);
//! - **codec rows**: text-like records (`compressible_percent` 100: an 8-byte random key, an
//!   8-byte value, words of a 16-word vocabulary) written with each codec through the bypass
//!   writer into the page cache, no `fsync`, vs the codec alone on exactly the blocks the
//!   writer cuts from them (per partition, the partition's records with their prefixes, at the
//!   codec's block size), a compressor per partition as the bypass writer has one; raw bytes
//!   per CPU second of the task's thread on both sides, so the writer's side includes the
//!   kernel's work of its writes, its concatenation and its deletes. Target 90 %; each data
//!   file must be as long as the codec alone's blocks with their headers and trailers, which
//!   checks that the blocks are the writer's.
//!
//! Throughputs count the bytes of the files on disk (framing and checksums included: what the
//! disk has to move), except the codec rows, which count the raw bytes compressed (records and
//! prefixes), the same on both sides of their ratio. Each pair (limit, spillway) is measured back to back, `repeats` times,
//! and the ratio is taken within each repeat; the report gives the median and the range.
//! Every file is written under a private directory inside `dir`, removed at the end.

use std::fs::File;
use std::io::{Read, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::codec::{Codec, CodecName, Compressor};
use crate::data::PartitionData;
use crate::machine::{MachineInfo, load_average_1m};
use crate::memory::{MemoryMode, PoolSizes, UnifiedMemoryManager};
use crate::region::{Mapping, PageAllocator, ReleasePolicy};
use crate::shuffle::WriterKind;
use crate::spill::{
    DEFAULT_BATCH_RECORDS, RECORD_PREFIX_BYTES, RecordDigest, SortedMerge, SpillKind, SpillReader,
    SpillWriter, SpillWriterOptions,
};
use crate::storage::block_manager::BlockManager;
use crate::storage::disk::DiskBlockManager;
use crate::storage::memory_store::{MemoryStore, UnrollConf};
use crate::storage::{BlockId, StorageLevel};

mod shuffle;

use shuffle::{SHUFFLE_PARTITIONS, ShuffleBench};

/// Bytes of a record in every spillway measurement (a 56-byte UnsafeRow-like record).
pub const RECORD_BYTES: usize = 56;
const MIB: u64 = 1 << 20;
/// The read size of the disk-read limit: the spill reader reads one frame (≤ 1 MiB) at a time.
const READ_BYTES: usize = 1 << 20;

/// What to measure and where.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Directory whose disk is measured (a private sub-directory is created and removed).
    pub dir: PathBuf,
    /// Bytes written/read per measurement (split into `runs` files).
    pub size_bytes: u64,
    /// Files per measurement: the sorted runs of the merge.
    pub runs: usize,
    /// `spark.shuffle.file.buffer` in bytes.
    pub buffer_bytes: usize,
    /// Measurements of each pair; ratios are taken within each.
    pub repeats: usize,
}

/// Bytes per second, with the spread over repeats.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Rate {
    pub median_bytes_per_sec: f64,
    pub min_bytes_per_sec: f64,
    pub max_bytes_per_sec: f64,
}

/// A ratio (spillway / limit) taken within each repeat.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Ratio {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// The least the ratio should be (`None`: reported for information).
    pub target: Option<f64>,
    pub meets_target: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub disk_write: Rate,
    pub disk_read: Rate,
    pub first_touch: Rate,
    pub memcpy: Rate,
    /// The codec crates alone on the spill writer's frames of text-like records (raw bytes/s).
    pub lz4_compress: Rate,
    pub snappy_compress: Rate,
    pub zstd_compress: Rate,
    /// The codec crates alone on the shuffle writer's blocks of text-like records, a compressor
    /// per partition as the bypass writer has (raw bytes per CPU second).
    pub shuffle_lz4_compress: Rate,
    pub shuffle_snappy_compress: Rate,
    pub shuffle_zstd_compress: Rate,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpillwayRates {
    pub spill_write: Rate,
    pub spill_read_merge: Rate,
    pub evict: Rate,
    /// Eviction with the block's pages given back to the kernel as they are freed
    /// (`madvise(DONTNEED)`, spillway's default `spillway.memory.retainFreed=false`).
    pub evict_and_release: Rate,
    /// `SpillWriter` with each codec over the same text-like records, page cache (raw bytes/s).
    pub spill_write_lz4: Rate,
    pub spill_write_snappy: Rate,
    pub spill_write_zstd: Rate,
    /// Map tasks writing incompressible records, `spark.shuffle.compress=false`, through the
    /// bypass writer, each data file fsynced (data-file bytes/s).
    pub shuffle_write_bypass: Rate,
    /// The same through the serialized writer, with the memory to hold a map output unspilled.
    pub shuffle_write_serialized: Rate,
    /// `read_partition` of every reduce partition of the bypass outputs, map outputs local,
    /// page cache dropped first (data-file bytes/s).
    pub shuffle_read_local: Rate,
    /// The same with the map outputs on executor 1: the fetcher thread copies each request into
    /// an anonymous mapping.
    pub shuffle_read_remote: Rate,
    /// Map output write (bypass) with each codec over text-like records, page cache, no fsync
    /// (raw bytes per CPU second).
    pub shuffle_write_lz4: Rate,
    pub shuffle_write_snappy: Rate,
    pub shuffle_write_zstd: Rate,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub spill_write_vs_disk_write: Ratio,
    pub spill_read_vs_disk_read: Ratio,
    pub evict_vs_disk_write: Ratio,
    /// The same with the pages given back (no target: it adds the kernel's page freeing).
    pub evict_and_release_vs_disk_write: Ratio,
    /// Spill write with a codec / the codec alone on the same frames (target 0.9).
    pub spill_write_lz4_vs_lz4_compress: Ratio,
    pub spill_write_snappy_vs_snappy_compress: Ratio,
    pub spill_write_zstd_vs_zstd_compress: Ratio,
    /// Shuffle write / disk write, each writer (target 0.8).
    pub shuffle_write_bypass_vs_disk_write: Ratio,
    pub shuffle_write_serialized_vs_disk_write: Ratio,
    /// Shuffle read of local map outputs / disk read of the same data files (target 0.8).
    pub shuffle_read_local_vs_disk_read: Ratio,
    /// The same fetched from executor 1 (no target: for information).
    pub shuffle_read_remote_vs_disk_read: Ratio,
    /// Map output write with a codec / the codec alone on the same blocks (target 0.9).
    pub shuffle_write_lz4_vs_shuffle_lz4_compress: Ratio,
    pub shuffle_write_snappy_vs_shuffle_snappy_compress: Ratio,
    pub shuffle_write_zstd_vs_shuffle_zstd_compress: Ratio,
}

/// Stored bytes over raw bytes of the codec measurements' frames, per codec.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StoredFraction {
    pub lz4: f64,
    pub snappy: f64,
    pub zstd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    pub dir: PathBuf,
    pub size_bytes: u64,
    pub runs: usize,
    pub file_bytes: u64,
    pub buffer_bytes: usize,
    pub record_bytes: usize,
    pub repeats: usize,
    pub sync: &'static str,
    pub first_touch_case: &'static str,
    /// Where the spill write's record digest comes from.
    pub spill_write_digest: &'static str,
    /// What happens to the pages an eviction frees, in each eviction measurement.
    pub evict_pages: &'static str,
    /// The records of the codec measurements.
    pub codec_records: &'static str,
    /// How the codec measurements write and count.
    pub codec_write: &'static str,
    /// What each codec made of the records: stored (compressed, or raw where a frame did not
    /// shrink) over raw frame bytes.
    pub codec_stored_fraction: StoredFraction,
    /// Reduce partitions of the shuffle measurements (each map output has a block for each).
    pub shuffle_partitions: u32,
    /// The records of the shuffle measurements.
    pub shuffle_records: &'static str,
    /// How the shuffle writes are timed and counted.
    pub shuffle_write: &'static str,
    /// How the shuffle reads are timed and counted.
    pub shuffle_read: &'static str,
    /// Stored over raw bytes of the shuffle codec measurements' blocks, per codec.
    pub shuffle_codec_stored_fraction: StoredFraction,
}

/// How busy the machine was: the limits cost little user CPU and spillway's side costs a lot,
/// so other work on the same CPUs lowers every ratio.
#[derive(Debug, Clone, Serialize)]
pub struct MachineLoad {
    /// `/proc/loadavg`, 1 minute, when the run started and ended.
    pub load_average_1m_start: Option<f64>,
    pub load_average_1m_end: Option<f64>,
    /// Share of the run's wall time in which some task waited for a CPU
    /// (`/proc/pressure/cpu` "some" total, over the run); `None` without PSI.
    pub cpu_pressure_some: Option<f64>,
}

/// The least a spill write with a codec should reach of the codec alone on the same frames.
const CODEC_TARGET: Option<f64> = Some(0.9);
/// The least a shuffle write or read should reach of the disk's bandwidth.
const SHUFFLE_DISK_TARGET: Option<f64> = Some(0.8);

/// Above this CPU pressure the report warns that the ratios understate spillway.
const BUSY_CPU_PRESSURE: f64 = 0.10;

fn cpu_stall_us() -> Option<u64> {
    crate::pressure::read_psi(Path::new("/proc/pressure/cpu")).map(|p| p.some_total_us)
}

/// The report `spillway bench --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub limits: Limits,
    pub spillway: SpillwayRates,
    pub ratios: Ratios,
    pub config: BenchConfig,
    /// The machine it ran on (CPU, cores, memory, OS), read when the run started.
    pub host: MachineInfo,
    pub machine: MachineLoad,
    pub elapsed_ms: u64,
}

fn rate(samples: &[f64]) -> Rate {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    Rate {
        median_bytes_per_sec: v[v.len() / 2],
        min_bytes_per_sec: v[0],
        max_bytes_per_sec: v[v.len() - 1],
    }
}

fn ratio(num: &[f64], den: &[f64], target: Option<f64>) -> Ratio {
    let mut v: Vec<f64> = num.iter().zip(den).map(|(a, b)| a / b).collect();
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    Ratio {
        median,
        min: v[0],
        max: v[v.len() - 1],
        target,
        meets_target: target.map(|t| median >= t),
    }
}

fn per_sec(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9)
}

/// Drops a file's pages from the page cache (they are clean: the file was fsynced).
fn drop_cache(path: &Path) -> std::io::Result<()> {
    let f = File::open(path)?;
    rustix::fs::fadvise(&f, 0, None::<NonZeroU64>, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

/// `n` 56-byte records whose 8-byte big-endian keys are `key(i)`; the rest is filler.
fn records(n: usize, key: impl Fn(u64) -> u64) -> Vec<u8> {
    let mut out = vec![0u8; n * RECORD_BYTES];
    for (i, r) in out.chunks_exact_mut(RECORD_BYTES).enumerate() {
        let k = key(i as u64);
        r[..8].copy_from_slice(&k.to_be_bytes());
        let mut x = k | 1;
        for b in &mut r[8..] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    out
}

/// The codecs measured, in report order (Spark's defaults: 32 KiB blocks, zstd level 1).
const CODECS: [CodecName; 3] = [CodecName::Lz4, CodecName::Snappy, CodecName::Zstd];

/// `n` 56-byte text-like records: an 8-byte big-endian key (the index), then words of a small
/// vocabulary separated by spaces, as string columns are. Compressible, unlike [`records`].
/// (The criterion benches use it too.)
pub fn text_records(n: usize) -> Vec<u8> {
    const WORDS: [&[u8]; 24] = [
        b"spark",
        b"executor",
        b"memory",
        b"spill",
        b"shuffle",
        b"task",
        b"page",
        b"block",
        b"storage",
        b"unified",
        b"heap",
        b"sorter",
        b"merge",
        b"record",
        b"partition",
        b"stage",
        b"cache",
        b"disk",
        b"frame",
        b"codec",
        b"buffer",
        b"driver",
        b"worker",
        b"pool",
    ];
    let mut out = vec![0u8; n * RECORD_BYTES];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for (i, r) in out.chunks_exact_mut(RECORD_BYTES).enumerate() {
        r[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let mut at = 8;
        while at < RECORD_BYTES {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let w = WORDS[(x % WORDS.len() as u64) as usize];
            let k = w.len().min(RECORD_BYTES - at);
            r[at..at + k].copy_from_slice(&w[..k]);
            at += k;
            if at < RECORD_BYTES {
                r[at] = b' ';
                at += 1;
            }
        }
    }
    out
}

/// The frames a [`SpillWriter`] with `opts` cuts from `data`'s 56-byte records.
fn writer_frames(data: &[u8], opts: &SpillWriterOptions) -> Vec<Vec<u8>> {
    frames_of(
        data.chunks_exact(RECORD_BYTES),
        opts.frame_cap_bytes() as usize,
        opts.batch_records,
    )
}

/// The frames (spill files) or blocks (shuffle segments) a writer cuts from `records`, each
/// record with its 4-byte length prefix: a frame ends before the record that would take it past
/// `cap` bytes (with a codec, its block) or past `batch` records.
fn frames_of<'a>(records: impl Iterator<Item = &'a [u8]>, cap: usize, batch: u32) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut frame: Vec<u8> = Vec::with_capacity(cap);
    let mut n = 0u32;
    for r in records {
        let framed = RECORD_PREFIX_BYTES + r.len();
        if n > 0 && (n == batch || frame.len() + framed > cap) {
            frames.push(std::mem::replace(&mut frame, Vec::with_capacity(cap)));
            n = 0;
        }
        frame.extend_from_slice(&(r.len() as u32).to_le_bytes());
        frame.extend_from_slice(r);
        n += 1;
    }
    if n > 0 {
        frames.push(frame);
    }
    frames
}

/// CPU time of the calling thread (user and kernel), the clock of the codec rows: both sides
/// are CPU work, and on a shared machine wall time would charge either side for others' work.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The codec alone on the writer's frames, `passes` times over (one pass per file written): a
/// compressor per group of frames, as each writer has one (a spill file's frames are one
/// group; a bypass map output has a group per partition). Raw bytes per CPU second, and the
/// stored bytes of one pass (compressed, or raw where a frame did not shrink, as the spill
/// writer stores it).
fn codec_rate(groups: &[Vec<Vec<u8>>], codec: Codec, passes: usize) -> anyhow::Result<(f64, u64)> {
    let frames = || groups.iter().flatten();
    let largest = frames().map(Vec::len).max().unwrap_or(0);
    let mut out = vec![0u8; codec.max_compressed_len(largest)];
    let raw: u64 = frames().map(|f| f.len() as u64).sum();
    let mut stored = 0u64;
    let t = thread_cpu();
    for _ in 0..passes {
        stored = 0;
        for group in groups {
            let mut c: Compressor = codec.compressor();
            for f in group {
                let n = c.compress_into(f, &mut out)?;
                stored += n.min(f.len()) as u64;
                std::hint::black_box(&out[..n]);
            }
        }
    }
    Ok((per_sec(raw * passes as u64, thread_cpu() - t), stored))
}

/// `files` spill files of `data`'s records written with `codec` into the page cache (no
/// fsync), the digest given as a sorter gives it: raw payload bytes per CPU second (the
/// kernel's part of each `write` included). Files removed untimed.
fn spill_write_codec_rate(
    dir: &Path,
    opts: &BenchOptions,
    data: &[u8],
    digest: RecordDigest,
    codec: Codec,
    frames: &[Vec<u8>],
) -> anyhow::Result<f64> {
    let mut raw = 0;
    let mut elapsed = Duration::ZERO;
    for i in 0..opts.runs {
        let path = dir.join(format!("spill-{}-{i}", codec.name));
        let t = thread_cpu();
        let mut w = SpillWriter::create(&path, codec_spill_options(opts, codec))?;
        w.use_known_digest(digest);
        for r in data.chunks_exact(RECORD_BYTES) {
            w.write_record(r)?;
        }
        let info = w.finish()?;
        elapsed += thread_cpu() - t;
        anyhow::ensure!(
            info.frames == frames.len() as u64
                && info.payload_bytes == frames.iter().map(|f| f.len() as u64).sum::<u64>(),
            "the codec measurement's frames are not the writer's: {} frames of {} bytes, \
             the writer's {} of {}",
            frames.len(),
            frames.iter().map(|f| f.len()).sum::<usize>(),
            info.frames,
            info.payload_bytes
        );
        raw += info.payload_bytes;
        std::fs::remove_file(&path)?;
    }
    Ok(per_sec(raw, elapsed))
}

fn codec_spill_options(opts: &BenchOptions, codec: Codec) -> SpillWriterOptions {
    let mut o = SpillWriterOptions::new(SpillKind::SortRun);
    o.buffer_bytes = opts.buffer_bytes;
    o.batch_records = DEFAULT_BATCH_RECORDS;
    o.codec = Some(codec);
    o
}

/// Runs the benchmark. `progress` is told each step's name.
pub fn run(opts: &BenchOptions, progress: &dyn Fn(&str)) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(
        opts.runs >= 1 && opts.repeats >= 1,
        "runs and repeats must be >= 1"
    );
    let started = Instant::now();
    let host = MachineInfo::detect();
    let load_start = host.load_average.map(|l| l.one_minute);
    let stall_start = cpu_stall_us();
    let work = tempfile::Builder::new()
        .prefix("spillway-bench-")
        .tempdir_in(&opts.dir)
        .map_err(|e| anyhow::anyhow!("cannot create a directory in {}: {e}", opts.dir.display()))?;
    // A second SIGINT/SIGTERM/SIGHUP deletes it before exiting (crate::interrupt); a first one
    // stops the bench between two steps, and the drop deletes it.
    let _cleanup = crate::interrupt::register_dir(work.path());
    let file_bytes = (opts.size_bytes / opts.runs as u64).max(RECORD_BYTES as u64 * 16);
    let records_per_file = (file_bytes as usize / RECORD_BYTES).max(1);
    // Source data of the writes: one file's worth of records, generated once (not timed).
    let write_data = records(records_per_file, |i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // Its digest, as a sorter takes it while inserting (not timed: insertion is not the spill).
    let mut write_digest = RecordDigest::default();
    for r in write_data.chunks_exact(RECORD_BYTES) {
        write_digest.add(r);
    }

    // The codec measurements' records, digest and frames (not timed).
    let text_data = text_records(records_per_file);
    let mut text_digest = RecordDigest::default();
    for r in text_data.chunks_exact(RECORD_BYTES) {
        text_digest.add(r);
    }
    let codecs: Vec<Codec> = CODECS.iter().map(|&n| Codec::with_defaults(n)).collect();
    let codec_frames: Vec<Vec<Vec<u8>>> = codecs
        .iter()
        .map(|&c| writer_frames(&text_data, &codec_spill_options(opts, c)))
        .collect();
    let mut codec_alone: Vec<Vec<f64>> = vec![Vec::new(); CODECS.len()];
    let mut codec_spill: Vec<Vec<f64>> = vec![Vec::new(); CODECS.len()];
    let mut codec_stored = [0f64; 3];

    let mut disk_write = Vec::new();
    let mut spill_write = Vec::new();
    let mut disk_read = Vec::new();
    let mut merge = Vec::new();
    let mut evict_limit = Vec::new();
    let mut evict = Vec::new();
    let mut evict_release = Vec::new();
    let mut touch = Vec::new();
    let mut memcpy = Vec::new();
    let runs_dir = work.path().join("runs");
    std::fs::create_dir(&runs_dir)?;
    let sorted_runs = write_sorted_runs(&runs_dir, opts, records_per_file)?;

    // The shuffle measurements' executor, map inputs and codec blocks (not timed).
    let shuffle_dir = work.path().join("shuffle");
    std::fs::create_dir(&shuffle_dir)?;
    let shuffle = ShuffleBench::new(
        &shuffle_dir,
        opts.buffer_bytes,
        opts.runs as u32,
        file_bytes,
    )?;
    let shuffle_blocks: Vec<Vec<Vec<Vec<u8>>>> =
        codecs.iter().map(|&c| shuffle.codec_blocks(c)).collect();
    let mut shuffle_disk_write = Vec::new();
    let mut shuffle_bypass = Vec::new();
    let mut shuffle_serialized = Vec::new();
    let mut shuffle_disk_read = Vec::new();
    let mut shuffle_read_local = Vec::new();
    let mut shuffle_read_remote = Vec::new();
    let mut shuffle_codec_alone: Vec<Vec<f64>> = vec![Vec::new(); CODECS.len()];
    let mut shuffle_codec_write: Vec<Vec<f64>> = vec![Vec::new(); CODECS.len()];
    let mut shuffle_codec_stored = [0f64; 3];

    for rep in 1..=opts.repeats {
        let step = |s: &str| -> Result<(), crate::interrupt::Interrupted> {
            crate::interrupt::check()?;
            progress(&format!("[{rep}/{}] {s}", opts.repeats));
            Ok(())
        };
        step("disk write (32 KiB writes + fsync)")?;
        disk_write.push(raw_write(work.path(), opts, &write_data)?);
        step("spill write (SpillWriter, 56-byte records, fsync)")?;
        spill_write.push(spill_write_rate(
            work.path(),
            opts,
            &write_data,
            write_digest,
        )?);
        step("disk read (1 MiB reads, page cache dropped)")?;
        disk_read.push(raw_read(&sorted_runs.paths, sorted_runs.file_bytes)?);
        step("spill read-merge (SpillReader + SortedMerge, page cache dropped)")?;
        merge.push(merge_rate(&sorted_runs)?);
        step("disk write (for eviction)")?;
        evict_limit.push(raw_write(work.path(), opts, &write_data)?);
        step("eviction to disk (MEMORY_AND_DISK blocks, block manager, fsync)")?;
        evict.push(evict_rate(work.path(), opts, ReleasePolicy::Keep)?);
        step("eviction to disk, pages given back to the kernel")?;
        evict_release.push(evict_rate(
            work.path(),
            opts,
            ReleasePolicy::ReturnToKernel,
        )?);
        step("first touch of fresh anonymous memory")?;
        touch.push(first_touch(opts.size_bytes)?);
        step("memcpy of warm memory")?;
        memcpy.push(memcpy_rate(opts.size_bytes));
        for (k, &codec) in codecs.iter().enumerate() {
            let frames = &codec_frames[k];
            step(&format!(
                "{} compress alone (the writer's frames of text-like records)",
                codec.name
            ))?;
            let (rate, stored) = codec_rate(std::slice::from_ref(frames), codec, opts.runs)?;
            codec_alone[k].push(rate);
            let raw: u64 = frames.iter().map(|f| f.len() as u64).sum();
            codec_stored[k] = stored as f64 / raw.max(1) as f64;
            step(&format!(
                "spill write with {} (text-like records, page cache)",
                codec.name
            ))?;
            codec_spill[k].push(spill_write_codec_rate(
                work.path(),
                opts,
                &text_data,
                text_digest,
                codec,
                frames,
            )?);
        }

        step("disk write (for shuffle write)")?;
        shuffle_disk_write.push(raw_write(work.path(), opts, &write_data)?);
        step("shuffle write, bypass writer, uncompressed (fsync)")?;
        let (rate, mut outputs) = shuffle.write(WriterKind::BypassMergeSort)?;
        shuffle_bypass.push(rate);
        step("shuffle write, serialized writer, uncompressed (fsync)")?;
        shuffle_serialized.push(shuffle.write(WriterKind::UnsafeShuffle)?.0);
        step("disk read (the bypass writer's data files, page cache dropped)")?;
        shuffle_disk_read.push(raw_read(&outputs.data_files(), outputs.bytes())?);
        step("shuffle read, local map outputs (page cache dropped)")?;
        shuffle_read_local.push(shuffle.read(&mut outputs, 0)?);
        step("shuffle read, map outputs on executor 1 (page cache dropped)")?;
        shuffle_read_remote.push(shuffle.read(&mut outputs, 1)?);
        drop(outputs);
        for (k, &codec) in codecs.iter().enumerate() {
            let blocks = &shuffle_blocks[k];
            step(&format!(
                "{} compress alone (the shuffle writer's blocks of text-like records)",
                codec.name
            ))?;
            let (rate, stored, file_bytes) = shuffle.codec_alone(blocks, codec)?;
            shuffle_codec_alone[k].push(rate);
            let raw: u64 = blocks.iter().flatten().map(|b| b.len() as u64).sum();
            shuffle_codec_stored[k] = stored as f64 / raw.max(1) as f64;
            step(&format!(
                "map output write with {} (text-like records, page cache)",
                codec.name
            ))?;
            shuffle_codec_write[k].push(shuffle.codec_write(codec, blocks, file_bytes)?);
        }
    }
    drop(sorted_runs);
    drop(shuffle);
    work.close()?;

    Ok(BenchReport {
        limits: Limits {
            disk_write: rate(
                &[
                    disk_write.clone(),
                    evict_limit.clone(),
                    shuffle_disk_write.clone(),
                ]
                .concat(),
            ),
            disk_read: rate(&[disk_read.clone(), shuffle_disk_read.clone()].concat()),
            first_touch: rate(&touch),
            memcpy: rate(&memcpy),
            lz4_compress: rate(&codec_alone[0]),
            snappy_compress: rate(&codec_alone[1]),
            zstd_compress: rate(&codec_alone[2]),
            shuffle_lz4_compress: rate(&shuffle_codec_alone[0]),
            shuffle_snappy_compress: rate(&shuffle_codec_alone[1]),
            shuffle_zstd_compress: rate(&shuffle_codec_alone[2]),
        },
        spillway: SpillwayRates {
            spill_write: rate(&spill_write),
            spill_read_merge: rate(&merge),
            evict: rate(&evict),
            evict_and_release: rate(&evict_release),
            spill_write_lz4: rate(&codec_spill[0]),
            spill_write_snappy: rate(&codec_spill[1]),
            spill_write_zstd: rate(&codec_spill[2]),
            shuffle_write_bypass: rate(&shuffle_bypass),
            shuffle_write_serialized: rate(&shuffle_serialized),
            shuffle_read_local: rate(&shuffle_read_local),
            shuffle_read_remote: rate(&shuffle_read_remote),
            shuffle_write_lz4: rate(&shuffle_codec_write[0]),
            shuffle_write_snappy: rate(&shuffle_codec_write[1]),
            shuffle_write_zstd: rate(&shuffle_codec_write[2]),
        },
        ratios: Ratios {
            spill_write_vs_disk_write: ratio(&spill_write, &disk_write, Some(0.8)),
            spill_read_vs_disk_read: ratio(&merge, &disk_read, Some(0.7)),
            evict_vs_disk_write: ratio(&evict, &evict_limit, Some(0.8)),
            evict_and_release_vs_disk_write: ratio(&evict_release, &evict_limit, None),
            spill_write_lz4_vs_lz4_compress: ratio(&codec_spill[0], &codec_alone[0], CODEC_TARGET),
            spill_write_snappy_vs_snappy_compress: ratio(
                &codec_spill[1],
                &codec_alone[1],
                CODEC_TARGET,
            ),
            spill_write_zstd_vs_zstd_compress: ratio(
                &codec_spill[2],
                &codec_alone[2],
                CODEC_TARGET,
            ),
            shuffle_write_bypass_vs_disk_write: ratio(
                &shuffle_bypass,
                &shuffle_disk_write,
                SHUFFLE_DISK_TARGET,
            ),
            shuffle_write_serialized_vs_disk_write: ratio(
                &shuffle_serialized,
                &shuffle_disk_write,
                SHUFFLE_DISK_TARGET,
            ),
            shuffle_read_local_vs_disk_read: ratio(
                &shuffle_read_local,
                &shuffle_disk_read,
                SHUFFLE_DISK_TARGET,
            ),
            shuffle_read_remote_vs_disk_read: ratio(&shuffle_read_remote, &shuffle_disk_read, None),
            shuffle_write_lz4_vs_shuffle_lz4_compress: ratio(
                &shuffle_codec_write[0],
                &shuffle_codec_alone[0],
                CODEC_TARGET,
            ),
            shuffle_write_snappy_vs_shuffle_snappy_compress: ratio(
                &shuffle_codec_write[1],
                &shuffle_codec_alone[1],
                CODEC_TARGET,
            ),
            shuffle_write_zstd_vs_shuffle_zstd_compress: ratio(
                &shuffle_codec_write[2],
                &shuffle_codec_alone[2],
                CODEC_TARGET,
            ),
        },
        config: BenchConfig {
            dir: opts.dir.clone(),
            size_bytes: opts.size_bytes,
            runs: opts.runs,
            file_bytes,
            buffer_bytes: opts.buffer_bytes,
            record_bytes: RECORD_BYTES,
            repeats: opts.repeats,
            sync: "writes: fsync before the clock stops; reads: fsync then \
                   posix_fadvise(DONTNEED) before reading",
            first_touch_case: "warm host: right after touching and unmapping as much memory",
            spill_write_digest: "given by the caller, as a sorter's spill gives the digest it \
                                 took at insert (computed before the clock starts)",
            evict_pages: "evict: kept mapped (as a JVM keeps its heap); evict_and_release: \
                          returned to the kernel with madvise(DONTNEED)",
            codec_records: "text-like 56-byte records: an 8-byte key, then words of a \
                            24-word vocabulary (the other rows' random records do not \
                            compress); Spark's default codec settings (32 KiB blocks, zstd \
                            level 1)",
            codec_write: "codec alone: Compressor::compress_into over the writer's frames, \
                          a compressor per file; spill write: SpillWriter with the codec into \
                          the page cache, no fsync, digest given; both in raw bytes per second \
                          of the thread's CPU time (CLOCK_THREAD_CPUTIME_ID, kernel time of the \
                          writes included)",
            codec_stored_fraction: StoredFraction {
                lz4: codec_stored[0],
                snappy: codec_stored[1],
                zstd: codec_stored[2],
            },
            shuffle_partitions: SHUFFLE_PARTITIONS,
            shuffle_records: "56-byte records of ShuffleSpec (8-byte key, 8-byte value, 40-byte \
                              payload), generated into memory before the clock starts; every map \
                              task writes the same records; incompressible (compressible_percent \
                              0) for write and read, text-like (compressible_percent 100: words \
                              of a 16-word vocabulary) for the codec rows",
            shuffle_write: "one map task at a time (spark.executor.cores=1), partitionBy with \
                            Spark's writer choice; bypass and serialized (bypassMergeThreshold \
                            lowered to 1), spark.shuffle.compress=false, each timed from \
                            run_map_task_on to the end of the data file's fsync (wall clock), \
                            data-file bytes; with a codec: bypass, page cache, no fsync, raw \
                            bytes per CPU second of the task's thread",
            shuffle_read: "read_partition of every reduce partition of the bypass outputs, one \
                           reduce task at a time, records counted, data files dropped from the \
                           page cache first (posix_fadvise DONTNEED); local: map outputs on \
                           executor 0; remote: on executor 1, the fetcher thread reading each \
                           request into an anonymous mapping; data-file bytes per second of \
                           wall time",
            shuffle_codec_stored_fraction: StoredFraction {
                lz4: shuffle_codec_stored[0],
                snappy: shuffle_codec_stored[1],
                zstd: shuffle_codec_stored[2],
            },
        },
        host,
        machine: MachineLoad {
            load_average_1m_start: load_start,
            load_average_1m_end: load_average_1m(),
            cpu_pressure_some: stall_start.zip(cpu_stall_us()).map(|(a, b)| {
                b.saturating_sub(a) as f64 / (started.elapsed().as_micros().max(1) as f64)
            }),
        },
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// `runs` files of `file_bytes` through a `buffer_bytes` buffer, each fsynced; the rate of
/// the whole. The files are removed (not timed).
fn raw_write(dir: &Path, opts: &BenchOptions, data: &[u8]) -> anyhow::Result<f64> {
    let mut bytes = 0;
    let mut elapsed = Duration::ZERO;
    for i in 0..opts.runs {
        let path = dir.join(format!("raw-{i}"));
        let t = Instant::now();
        let mut f = File::create_new(&path)?;
        for chunk in data.chunks(opts.buffer_bytes) {
            f.write_all(chunk)?;
        }
        f.sync_all()?;
        drop(f);
        elapsed += t.elapsed();
        bytes += data.len() as u64;
        drop_cache(&path)?;
        std::fs::remove_file(&path)?;
    }
    Ok(per_sec(bytes, elapsed))
}

fn spill_options(opts: &BenchOptions) -> SpillWriterOptions {
    let mut o = SpillWriterOptions::new(SpillKind::SortRun);
    o.buffer_bytes = opts.buffer_bytes;
    o.sync_on_finish = true;
    o
}

/// The same records through `SpillWriter` (variable-size framing, as sorts spill), fsynced.
/// `digest` is the records', handed over as a sorter's spill hands over the one it kept.
fn spill_write_rate(
    dir: &Path,
    opts: &BenchOptions,
    data: &[u8],
    digest: RecordDigest,
) -> anyhow::Result<f64> {
    let mut bytes = 0;
    let mut elapsed = Duration::ZERO;
    for i in 0..opts.runs {
        let path = dir.join(format!("spill-{i}"));
        let t = Instant::now();
        let mut w = SpillWriter::create(&path, spill_options(opts))?;
        w.use_known_digest(digest);
        for r in data.chunks_exact(RECORD_BYTES) {
            w.write_record(r)?;
        }
        let info = w.finish()?;
        elapsed += t.elapsed();
        bytes += info.file_bytes;
        drop_cache(&path)?;
        std::fs::remove_file(&path)?;
    }
    Ok(per_sec(bytes, elapsed))
}

/// Sorted runs for the merge: run `j` holds keys `i × runs + j`, so the merge takes one
/// record from each run in turn (the worst case for read locality).
struct SortedRuns {
    paths: Vec<PathBuf>,
    file_bytes: u64,
}

impl Drop for SortedRuns {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn write_sorted_runs(
    dir: &Path,
    opts: &BenchOptions,
    records_per_file: usize,
) -> anyhow::Result<SortedRuns> {
    let mut runs = SortedRuns {
        paths: Vec::new(),
        file_bytes: 0,
    };
    let n = opts.runs as u64;
    for j in 0..n {
        let path = dir.join(format!("run-{j}"));
        let data = records(records_per_file, |i| i * n + j);
        let mut w = SpillWriter::create(&path, spill_options(opts))?;
        for r in data.chunks_exact(RECORD_BYTES) {
            w.write_record(r)?;
        }
        runs.file_bytes += w.finish()?.file_bytes;
        runs.paths.push(path);
    }
    Ok(runs)
}

/// `paths` (of `file_bytes` in all) read whole, one after the other, after dropping them from
/// the page cache.
fn raw_read(paths: &[PathBuf], file_bytes: u64) -> anyhow::Result<f64> {
    for p in paths {
        drop_cache(p)?;
    }
    let mut buf = vec![0u8; READ_BYTES];
    let mut bytes = 0u64;
    let t = Instant::now();
    for p in paths {
        let mut f = File::open(p)?;
        // The disk at its best: the whole file asked for at once (the merge's readers ask for
        // a frame ahead of each run; without this, the "limit" would be the kernel's default
        // 128 KiB read-ahead, which the merge beats).
        rustix::fs::fadvise(&f, 0, None::<NonZeroU64>, rustix::fs::Advice::Sequential)?;
        rustix::fs::fadvise(&f, 0, None::<NonZeroU64>, rustix::fs::Advice::WillNeed)?;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                break;
            }
            bytes += k as u64;
        }
    }
    let elapsed = t.elapsed();
    anyhow::ensure!(bytes == file_bytes, "read {bytes} of {file_bytes} bytes");
    Ok(per_sec(bytes, elapsed))
}

fn merge_rate(runs: &SortedRuns) -> anyhow::Result<f64> {
    for p in &runs.paths {
        drop_cache(p)?;
    }
    let t = Instant::now();
    let readers = runs
        .paths
        .iter()
        .map(SpillReader::open)
        .collect::<Result<Vec<_>, _>>()?;
    let mut merge = SortedMerge::new(readers, |r: &[u8]| {
        u64::from_be_bytes(r[..8].try_into().expect("8-byte key"))
    })?;
    let mut last = 0u64;
    let mut count = 0u64;
    while let Some(r) = merge.next_record()? {
        let k = u64::from_be_bytes(r[..8].try_into().expect("8-byte key"));
        debug_assert!(count == 0 || k > last);
        last = k;
        count += 1;
    }
    let elapsed = t.elapsed();
    std::hint::black_box((last, count));
    Ok(per_sec(runs.file_bytes, elapsed))
}

/// Caches `size` bytes as MEMORY_AND_DISK blocks of 56-byte records (one per run), then one
/// execution acquire of the whole unified region evicts them all to disk through the block
/// manager; the block files are fsynced before the clock stops.
fn evict_rate(dir: &Path, opts: &BenchOptions, policy: ReleasePolicy) -> anyhow::Result<f64> {
    let blocks = opts.runs as u64;
    let block_bytes = (opts.size_bytes / blocks).max(RECORD_BYTES as u64 * 16);
    // Room for the blocks and their unroll reservations; storage region 0, so execution may
    // evict every cached byte.
    let unified = block_bytes * blocks + block_bytes + 4 * MIB;
    let manager = Arc::new(UnifiedMemoryManager::new(PoolSizes::symmetric(unified, 0)));
    let mapping = Mapping::anonymous(2 * unified + 64 * MIB, "bench-unified")?;
    let alloc = Arc::new(PageAllocator::new(
        mapping.whole().with_name("unified"),
        policy,
    )?);
    let store = MemoryStore::new(Arc::clone(&manager), alloc, None, UnrollConf::default());
    let dirs = Arc::new(DiskBlockManager::new(
        &[dir.to_path_buf()],
        opts.buffer_bytes,
    )?);
    let bm = BlockManager::new(Arc::clone(&store), Arc::clone(&dirs));
    for i in 0..blocks {
        let block = BlockId::Rdd {
            rdd_id: 1,
            split_index: i as u32,
        };
        let data = PartitionData::new(i + 1, block_bytes, RECORD_BYTES as u64);
        let report = bm.put_partition(&block, StorageLevel::MEMORY_AND_DISK, 0, &data)?;
        anyhow::ensure!(report.in_memory, "block {block} did not fit in memory");
        store.release_all_unroll_memory_for_task(0);
    }
    let task = 1;
    let t = Instant::now();
    let got = manager.acquire_execution_memory(unified, task, MemoryMode::OnHeap);
    let on_disk = bm.disk_store().blocks();
    for (_, b) in &on_disk {
        File::open(&b.path)?.sync_all()?;
    }
    let elapsed = t.elapsed();
    anyhow::ensure!(
        on_disk.len() as u64 == blocks && got == unified,
        "eviction dropped {} of {blocks} blocks to disk (granted {got} of {unified})",
        on_disk.len()
    );
    let bytes: u64 = on_disk.iter().map(|(_, b)| b.info.file_bytes).sum();
    for (_, b) in &on_disk {
        drop_cache(&b.path)?;
    }
    manager.release_all_execution_memory_for_task(task);
    for (id, _) in &on_disk {
        bm.remove(id);
    }
    drop(bm);
    drop(store);
    // The block manager's private directory goes with the last reference.
    drop(dirs);
    Ok(per_sec(bytes, elapsed))
}

/// First touch of a fresh anonymous mapping, after a warm-up mapping of the same size.
fn first_touch(size: u64) -> anyhow::Result<f64> {
    let size = size.max(MIB);
    Mapping::anonymous(size, "bench-warmup")?.whole().touch()?;
    let m = Mapping::anonymous(size, "bench-touch")?;
    let r = m.whole();
    let t = Instant::now();
    r.touch()?;
    Ok(per_sec(size, t.elapsed()))
}

/// memcpy of warm memory: bytes copied per second (each byte read once and written once).
fn memcpy_rate(size: u64) -> f64 {
    let n = size.clamp(MIB, 256 * MIB) as usize;
    let src = vec![0x5au8; n];
    let mut dst = vec![0xa5u8; n];
    dst.copy_from_slice(&src); // warm both
    let passes = 4;
    let t = Instant::now();
    for _ in 0..passes {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    per_sec(n as u64 * passes, t.elapsed())
}

/// The human-readable table.
pub fn render(r: &BenchReport) -> String {
    fn gbs(x: f64) -> String {
        if x >= 1e9 {
            format!("{:.2} GB/s", x / 1e9)
        } else {
            format!("{:.0} MB/s", x / 1e6)
        }
    }
    fn line(name: &str, x: &Rate) -> String {
        format!(
            "  {name:<44} {:>11}  ({} .. {})\n",
            gbs(x.median_bytes_per_sec),
            gbs(x.min_bytes_per_sec),
            gbs(x.max_bytes_per_sec)
        )
    }
    fn ratio(name: &str, x: &Ratio) -> String {
        let verdict = match (x.target, x.meets_target) {
            (Some(t), Some(met)) => {
                format!(
                    "  target {:.0}%: {}",
                    t * 100.0,
                    if met { "met" } else { "NOT met" }
                )
            }
            _ => String::new(),
        };
        format!(
            "  {name:<44} {:>10.0}%  ({:.0}% .. {:.0}%){verdict}\n",
            x.median * 100.0,
            x.min * 100.0,
            x.max * 100.0,
        )
    }
    let c = &r.config;
    let mut s = format!(
        "spillway bench: {} on {}, {} MiB in {} files of {} KiB, {} KiB buffer, {} repeats\n\
         median (min .. max over repeats)\n\n",
        c.dir.display(),
        r.host.cpu_label(),
        c.size_bytes / MIB,
        c.runs,
        c.file_bytes / 1024,
        c.buffer_bytes / 1024,
        c.repeats
    );
    let sections: [(&str, Vec<(&str, &Rate)>); 5] = [
        (
            "limits",
            vec![
                ("disk write (32 KiB writes, fsync)", &r.limits.disk_write),
                (
                    "disk read (1 MiB reads, cache dropped)",
                    &r.limits.disk_read,
                ),
                ("first touch (fresh anonymous pages)", &r.limits.first_touch),
                ("memcpy (warm)", &r.limits.memcpy),
            ],
        ),
        (
            "spillway",
            vec![
                (
                    "spill write (56-byte records, fsync)",
                    &r.spillway.spill_write,
                ),
                (
                    "spill read-merge (cache dropped)",
                    &r.spillway.spill_read_merge,
                ),
                (
                    "eviction to disk (MEMORY_AND_DISK, fsync)",
                    &r.spillway.evict,
                ),
                (
                    "eviction + pages given back (madvise)",
                    &r.spillway.evict_and_release,
                ),
            ],
        ),
        (
            "codecs (text-like 56-byte records, raw bytes per CPU second, page cache, no fsync)",
            vec![
                (
                    "lz4 compress alone (the writer's frames)",
                    &r.limits.lz4_compress,
                ),
                ("spill write with lz4", &r.spillway.spill_write_lz4),
                (
                    "snappy compress alone (the writer's frames)",
                    &r.limits.snappy_compress,
                ),
                ("spill write with snappy", &r.spillway.spill_write_snappy),
                (
                    "zstd compress alone (the writer's frames)",
                    &r.limits.zstd_compress,
                ),
                ("spill write with zstd", &r.spillway.spill_write_zstd),
            ],
        ),
        (
            "shuffle (56-byte incompressible records, uncompressed, one task at a time)",
            vec![
                (
                    "shuffle write, bypass writer (fsync)",
                    &r.spillway.shuffle_write_bypass,
                ),
                (
                    "shuffle write, serialized writer (fsync)",
                    &r.spillway.shuffle_write_serialized,
                ),
                (
                    "shuffle read, local (cache dropped)",
                    &r.spillway.shuffle_read_local,
                ),
                (
                    "shuffle read, remote (cache dropped)",
                    &r.spillway.shuffle_read_remote,
                ),
            ],
        ),
        (
            "shuffle codecs (text-like records, bypass writer, raw bytes per CPU second)",
            vec![
                (
                    "lz4 compress alone (the writer's blocks)",
                    &r.limits.shuffle_lz4_compress,
                ),
                ("map output write with lz4", &r.spillway.shuffle_write_lz4),
                (
                    "snappy compress alone (the writer's blocks)",
                    &r.limits.shuffle_snappy_compress,
                ),
                (
                    "map output write with snappy",
                    &r.spillway.shuffle_write_snappy,
                ),
                (
                    "zstd compress alone (the writer's blocks)",
                    &r.limits.shuffle_zstd_compress,
                ),
                ("map output write with zstd", &r.spillway.shuffle_write_zstd),
            ],
        ),
    ];
    let stored = |f: &StoredFraction, what: &str| {
        format!(
            "  stored/raw: lz4 {:.0}%, snappy {:.0}%, zstd {:.0}% ({what})\n",
            f.lz4 * 100.0,
            f.snappy * 100.0,
            f.zstd * 100.0
        )
    };
    for (i, (title, rates)) in sections.iter().enumerate() {
        s += &format!("{}{title}\n", if i == 0 { "" } else { "\n" });
        for (name, x) in rates {
            s += &line(name, x);
        }
        if i == 2 {
            s += &stored(
                &c.codec_stored_fraction,
                "text-like records: an 8-byte key, then words",
            );
        }
        if i == 4 {
            s += &stored(
                &c.shuffle_codec_stored_fraction,
                "8-byte random key, 8-byte value, then words",
            );
        }
    }
    let m = &r.machine;
    let fmt_load = |x: Option<f64>| x.map_or("?".to_string(), |v| format!("{v:.2}"));
    s += &format!(
        "\nmachine: load average {} -> {}",
        fmt_load(m.load_average_1m_start),
        fmt_load(m.load_average_1m_end)
    );
    if let Some(p) = m.cpu_pressure_some {
        s += &format!(", CPU pressure {:.0}% of the run", p * 100.0);
    }
    s += "\n";
    if m.cpu_pressure_some.is_some_and(|p| p > BUSY_CPU_PRESSURE) {
        s += "  other work competed for the CPUs: spillway's side of each ratio paid for it, \
              so the ratios understate what an idle machine gives\n";
    }
    s += "\nratios (within each repeat)\n";
    let q = &r.ratios;
    for (name, x) in [
        ("spill write / disk write", &q.spill_write_vs_disk_write),
        ("spill read-merge / disk read", &q.spill_read_vs_disk_read),
        ("eviction / disk write", &q.evict_vs_disk_write),
        (
            "eviction + giving pages back / disk write",
            &q.evict_and_release_vs_disk_write,
        ),
        (
            "spill write lz4 / lz4 alone",
            &q.spill_write_lz4_vs_lz4_compress,
        ),
        (
            "spill write snappy / snappy alone",
            &q.spill_write_snappy_vs_snappy_compress,
        ),
        (
            "spill write zstd / zstd alone",
            &q.spill_write_zstd_vs_zstd_compress,
        ),
        (
            "shuffle write bypass / disk write",
            &q.shuffle_write_bypass_vs_disk_write,
        ),
        (
            "shuffle write serialized / disk write",
            &q.shuffle_write_serialized_vs_disk_write,
        ),
        (
            "shuffle read local / disk read",
            &q.shuffle_read_local_vs_disk_read,
        ),
        (
            "shuffle read remote / disk read",
            &q.shuffle_read_remote_vs_disk_read,
        ),
        (
            "map output write lz4 / lz4 alone",
            &q.shuffle_write_lz4_vs_shuffle_lz4_compress,
        ),
        (
            "map output write snappy / snappy alone",
            &q.shuffle_write_snappy_vs_shuffle_snappy_compress,
        ),
        (
            "map output write zstd / zstd alone",
            &q.shuffle_write_zstd_vs_shuffle_zstd_compress,
        ),
    ] {
        s += &ratio(name, x);
    }
    s
}

impl crate::exit::Exit for anyhow::Error {
    /// `bench` reports with `anyhow`: bad input when a configuration or scenario error is in
    /// the chain, else a failure of the run.
    fn exit_status(&self) -> crate::exit::ExitStatus {
        let bad = self
            .chain()
            .any(|e| e.is::<crate::conf::ConfError>() || e.is::<crate::scenario::ScenarioError>());
        if bad {
            crate::exit::ExitStatus::BadInput
        } else {
            crate::exit::ExitStatus::Failure
        }
    }
}

#[cfg(test)]
mod exit_tests {
    use crate::exit::Exit;
    #[test]
    fn errors_map_bad_input_to_2_and_the_machine_to_1() {
        let conf = crate::conf::ConfError::MissingEquals("x".into());
        assert_eq!(conf.exit_status().code(), 2);
        let exec =
            crate::executor::ExecutorError::Conf(crate::conf::ConfError::MissingEquals("x".into()));
        assert_eq!(exec.exit_status(), crate::exit::ExitStatus::BadInput);
        let cgroup = crate::pressure::CgroupError::NoCgroup;
        assert_eq!(cgroup.exit_status(), crate::exit::ExitStatus::Failure);
        let wrapped =
            anyhow::Error::from(crate::conf::ConfError::MissingEquals("x".into())).context("bench");
        assert_eq!(wrapped.exit_status(), crate::exit::ExitStatus::BadInput);
        assert_eq!(
            anyhow::anyhow!("disk").exit_status(),
            crate::exit::ExitStatus::Failure
        );
    }
}
