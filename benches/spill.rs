//! Spill file throughput: write, read+verify and an 8-way merge of 64 MiB of 56-byte records,
//! each beside a raw-I/O baseline measured in the same run (the ratio is the figure of merit);
//! and, in the group `spill_compressed`, 64 MiB of text-like 56-byte records written and read
//! with each codec beside the codec alone compressing and decompressing the same frames.
//!
//! The files live in the temp dir and stay in the page cache: these are page-cache-hot numbers,
//! an upper bound of the format's CPU cost, not disk bandwidth.
//!
//! `cargo bench --bench spill -- --warm-up-time 1 --measurement-time 4`; results and what they
//! mean in `benches/README.md` (`spill` criterion bench).

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spillway::codec::{Codec, CodecName};
use spillway::spill::{
    DEFAULT_BUFFER_BYTES, RecordDigest, SpillKind, SpillReader, SpillSink, SpillWriter,
    SpillWriterOptions, merge_sorted_runs,
};

const MIB: usize = 1 << 20;
const DATA_BYTES: usize = 64 * MIB;
const RECORD_BYTES: usize = 56;
const RUNS: usize = 8;

/// `n` 56-byte records, back to back; the first 8 bytes of each are a big-endian key.
fn records(n: usize, seed: u64, sorted: bool) -> Vec<u8> {
    let mut x = seed | 1;
    let mut keys: Vec<u64> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect();
    if sorted {
        keys.sort_unstable();
    }
    let mut out = vec![0u8; n * RECORD_BYTES];
    for (r, k) in out.chunks_exact_mut(RECORD_BYTES).zip(keys) {
        r[0..8].copy_from_slice(&k.to_be_bytes());
        for (i, b) in r[8..].iter_mut().enumerate() {
            *b = (k >> (i % 8 * 8)) as u8 ^ i as u8;
        }
    }
    out
}

fn options(fixed: bool) -> SpillWriterOptions {
    let mut o = SpillWriterOptions::new(SpillKind::SortRun);
    o.buffer_bytes = DEFAULT_BUFFER_BYTES; // spark.shuffle.file.buffer = 32k
    if fixed {
        o.fixed_record_bytes = Some(RECORD_BYTES as u32);
    }
    o
}

/// Drops every byte: isolates the writer's CPU cost from the kernel's.
struct NullSink;

impl SpillSink for NullSink {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        black_box(buf);
        Ok(())
    }
    fn write_all_at(&mut self, buf: &[u8], _offset: u64) -> std::io::Result<()> {
        black_box(buf);
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_spill(path: &Path, data: &[u8], fixed: bool) -> u64 {
    let mut w = SpillWriter::create(path, options(fixed)).unwrap();
    for r in data.chunks_exact(RECORD_BYTES) {
        w.write_record(r).unwrap();
    }
    w.finish().unwrap().file_bytes
}

/// Times `f` writing a fresh file `iters` times; the unlink of the previous file is not timed.
fn time_writes(path: &Path, iters: u64, mut f: impl FnMut(&Path)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let _ = std::fs::remove_file(path);
        let t = Instant::now();
        f(path);
        total += t.elapsed();
    }
    let _ = std::fs::remove_file(path);
    total
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let data = records(DATA_BYTES / RECORD_BYTES, 42, false);
    let data_bytes = data.len() as u64;
    let mut g = c.benchmark_group("spill");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data_bytes));

    // Writes.
    let out = dir.path().join("w.spill");
    g.bench_function("raw_write_32KiB", |b| {
        b.iter_custom(|iters| {
            time_writes(&out, iters, |p| {
                let mut f = File::create_new(p).unwrap();
                for chunk in data.chunks(DEFAULT_BUFFER_BYTES) {
                    Write::write_all(&mut f, chunk).unwrap();
                }
            })
        })
    });
    for (name, fixed) in [("write_56B_var", false), ("write_56B_fixed", true)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                time_writes(&out, iters, |p| {
                    black_box(write_spill(p, &data, fixed));
                })
            })
        });
    }

    // The writer's own CPU: framing, copies, CRC and hashes, into a sink that drops the
    // bytes (the file is created but stays empty).
    let mut digest = RecordDigest::default();
    for r in data.chunks_exact(RECORD_BYTES) {
        digest.add(r);
    }
    for (name, known) in [
        ("write_56B_var_null_sink", None),
        ("write_56B_var_null_sink_known_digest", Some(digest)),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                time_writes(&out, iters, |p| {
                    let mut w =
                        SpillWriter::create_with_sink(p, options(false), |_| Ok(NullSink)).unwrap();
                    if let Some(d) = known {
                        w.use_known_digest(d);
                    }
                    for r in data.chunks_exact(RECORD_BYTES) {
                        w.write_record(r).unwrap();
                    }
                    black_box(w.finish().unwrap().file_bytes);
                })
            })
        });
    }

    // Reads (page-cache-hot: the file was just written).
    let file = dir.path().join("r.spill");
    write_spill(&file, &data, false);
    g.bench_function("raw_read_1MiB", |b| {
        let mut buf = vec![0u8; MIB];
        b.iter(|| {
            let mut f = File::open(&file).unwrap();
            let mut n = 0;
            loop {
                let k = f.read(&mut buf).unwrap();
                if k == 0 {
                    break;
                }
                n += k;
            }
            black_box(n)
        })
    });
    g.bench_function("read_verify_56B_var", |b| {
        b.iter(|| {
            let mut r = SpillReader::open(&file).unwrap();
            let mut keys = 0u64;
            while let Some(rec) = r.next_record().unwrap() {
                keys = keys.wrapping_add(u64::from(rec[0]));
            }
            black_box(keys)
        })
    });

    // 8-way merge of 8 sorted runs of 8 MiB each.
    let runs: Vec<PathBuf> = (0..RUNS)
        .map(|i| {
            let p = dir.path().join(format!("run-{i}.spill"));
            let d = records(DATA_BYTES / RUNS / RECORD_BYTES, i as u64 + 1, true);
            write_spill(&p, &d, false);
            p
        })
        .collect();
    g.bench_function("merge_8way_56B_var", |b| {
        b.iter(|| {
            let readers: Vec<SpillReader> =
                runs.iter().map(|p| SpillReader::open(p).unwrap()).collect();
            let mut sum = 0u64;
            let n = merge_sorted_runs(
                readers,
                |r| u64::from_be_bytes(r[0..8].try_into().unwrap()),
                |r| {
                    sum = sum.wrapping_add(r.len() as u64);
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
            black_box((n, sum))
        })
    });
    let merged = dir.path().join("merged.spill");
    g.bench_function("merge_8way_into_spill_writer", |b| {
        b.iter_custom(|iters| {
            time_writes(&merged, iters, |p| {
                let readers: Vec<SpillReader> =
                    runs.iter().map(|p| SpillReader::open(p).unwrap()).collect();
                let mut w = SpillWriter::create(p, options(false)).unwrap();
                merge_sorted_runs(
                    readers,
                    |r| u64::from_be_bytes(r[0..8].try_into().unwrap()),
                    |r| w.write_record(r),
                )
                .unwrap();
                black_box(w.finish().unwrap());
            })
        })
    });
    g.finish();
}

/// `n` text-like 56-byte records, as `spillway bench`'s codec rows use them.
fn text_records(n: usize) -> Vec<u8> {
    spillway::bench::text_records(n)
}

/// Compressed spills: for each codec, the codec alone on the writer's frames (32 KiB of
/// prefixed records each), the writer into a file and into a null sink, and read+verify, all
/// over the same 64 MiB of text-like records; throughput in raw bytes.
fn bench_compressed(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let data = text_records(DATA_BYTES / RECORD_BYTES);
    let mut digest = RecordDigest::default();
    for r in data.chunks_exact(RECORD_BYTES) {
        digest.add(r);
    }
    // The writer's frames: 32 KiB blocks of `le32 length ‖ record`.
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut frame = Vec::new();
    for r in data.chunks_exact(RECORD_BYTES) {
        if frame.len() + 4 + RECORD_BYTES > 32 * 1024 {
            frames.push(std::mem::take(&mut frame));
        }
        frame.extend_from_slice(&(RECORD_BYTES as u32).to_le_bytes());
        frame.extend_from_slice(r);
    }
    frames.push(frame);
    let raw_bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let mut g = c.benchmark_group("spill_compressed");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(raw_bytes));
    let out = dir.path().join("w.spill");
    for name in [CodecName::Lz4, CodecName::Snappy, CodecName::Zstd] {
        let codec = Codec::with_defaults(name);
        let opts = || {
            let mut o = options(false);
            o.codec = Some(codec);
            o
        };
        g.bench_function(format!("{name}_compress_alone"), |b| {
            let mut buf = vec![0u8; codec.max_compressed_len(32 * 1024)];
            b.iter(|| {
                let mut z = codec.compressor();
                let mut stored = 0;
                for f in &frames {
                    stored += z.compress_into(f, &mut buf).unwrap();
                }
                black_box(stored)
            })
        });
        g.bench_function(format!("write_text_{name}"), |b| {
            b.iter_custom(|iters| {
                time_writes(&out, iters, |p| {
                    let mut w = SpillWriter::create(p, opts()).unwrap();
                    w.use_known_digest(digest);
                    for r in data.chunks_exact(RECORD_BYTES) {
                        w.write_record(r).unwrap();
                    }
                    black_box(w.finish().unwrap().file_bytes);
                })
            })
        });
        g.bench_function(format!("write_text_{name}_null_sink"), |b| {
            b.iter_custom(|iters| {
                time_writes(&out, iters, |p| {
                    let mut w = SpillWriter::create_with_sink(p, opts(), |_| Ok(NullSink)).unwrap();
                    w.use_known_digest(digest);
                    for r in data.chunks_exact(RECORD_BYTES) {
                        w.write_record(r).unwrap();
                    }
                    black_box(w.finish().unwrap().file_bytes);
                })
            })
        });
        // Reading: the codec alone decompressing the same blocks, and the reader (CRC,
        // decompression, record hashes, footer) over a file written with the codec.
        let mut z = codec.compressor();
        let blocks: Vec<(Vec<u8>, usize)> = frames
            .iter()
            .map(|f| {
                let mut stored = Vec::new();
                z.compress(f, &mut stored).unwrap();
                (stored, f.len())
            })
            .collect();
        g.bench_function(format!("{name}_decompress_alone"), |b| {
            let mut buf = vec![0u8; 32 * 1024];
            b.iter(|| {
                let mut d = codec.decompressor();
                for (stored, raw) in &blocks {
                    d.decompress_into(stored, &mut buf[..*raw]).unwrap();
                }
                black_box(buf[0])
            })
        });
        let file = dir.path().join(format!("r-{name}.spill"));
        let mut w = SpillWriter::create(&file, opts()).unwrap();
        for r in data.chunks_exact(RECORD_BYTES) {
            w.write_record(r).unwrap();
        }
        w.finish().unwrap();
        g.bench_function(format!("read_verify_text_{name}"), |b| {
            b.iter(|| {
                let mut r = SpillReader::open(&file).unwrap();
                let mut keys = 0u64;
                while let Some(rec) = r.next_record().unwrap() {
                    keys = keys.wrapping_add(u64::from(rec[7]));
                }
                black_box(keys)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_compressed);
criterion_main!(benches);
