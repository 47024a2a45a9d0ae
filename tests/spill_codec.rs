//! Compressed spill files (docs/spark-model.md §19): every codec round trips fixed and
//! variable records through `SpillWriter` and `SpillReader`, frames are cut at the codec's
//! block (a larger record gets its own), compressible data shrinks, incompressible data is
//! stored raw, and the file is exactly `32 + 16·frames + stored + 64` bytes with the codec in
//! header byte 11. Damage to compressed files is in `tests/spill_corruption.rs`.

use std::path::Path;

use proptest::prelude::*;
use spillway::codec::{Codec, CodecName};
use spillway::spill::{
    COMPRESSED_FRAME_HEADER_BYTES, FOOTER_BYTES, HEADER_BYTES, RecordDigest, SpillError,
    SpillFileInfo, SpillKind, SpillReader, SpillWriter, SpillWriterOptions, verify_file,
};

const CODECS: [CodecName; 3] = [CodecName::Lz4, CodecName::Snappy, CodecName::Zstd];

/// Text-like records: words from a small vocabulary, lengths 0..=max_len.
fn text_records(n: usize, max_len: usize, seed: u64) -> Vec<Vec<u8>> {
    const WORDS: [&str; 12] = [
        "spark ",
        "executor ",
        "memory ",
        "spill ",
        "shuffle ",
        "task ",
        "page ",
        "block ",
        "storage ",
        "unified ",
        "off-heap ",
        "sorter ",
    ];
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let len = next() as usize % (max_len + 1);
            let mut r = Vec::with_capacity(len + 16);
            while r.len() < len {
                r.extend_from_slice(WORDS[next() as usize % WORDS.len()].as_bytes());
            }
            r.truncate(len);
            r
        })
        .collect()
}

/// Random (incompressible) records of `len` bytes.
fn random_records(n: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect()
        })
        .collect()
}

fn codec(name: CodecName, block_bytes: usize) -> Codec {
    Codec {
        block_bytes,
        ..Codec::with_defaults(name)
    }
}

fn options(codec: Codec, fixed: Option<u32>) -> SpillWriterOptions {
    let mut o = SpillWriterOptions::new(SpillKind::SortRun);
    o.codec = Some(codec);
    o.fixed_record_bytes = fixed;
    o.tag = 0xc0de;
    o
}

/// One frame as the file stores it.
#[derive(Debug, Clone, Copy)]
struct Frame {
    stored: u32,
    raw: u32,
    records: u32,
}

/// Walks a compressed file's frames from its bytes (independently of the reader).
fn frames(bytes: &[u8]) -> Vec<Frame> {
    let le32 = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().unwrap());
    let end = bytes.len() - FOOTER_BYTES;
    let mut at = HEADER_BYTES;
    let mut out = Vec::new();
    while at < end {
        let f = Frame {
            stored: le32(&bytes[at..]),
            raw: le32(&bytes[at + 4..]),
            records: le32(&bytes[at + 8..]),
        };
        at += COMPRESSED_FRAME_HEADER_BYTES + f.stored as usize;
        out.push(f);
    }
    assert_eq!(at, end, "frames end at the footer");
    out
}

/// The stored payloads in file order, concatenated.
fn stored_stream(bytes: &[u8]) -> Vec<u8> {
    let mut at = HEADER_BYTES;
    let mut out = Vec::new();
    for f in frames(bytes) {
        let start = at + COMPRESSED_FRAME_HEADER_BYTES;
        out.extend_from_slice(&bytes[start..start + f.stored as usize]);
        at = start + f.stored as usize;
    }
    out
}

/// Writes, reads back, and checks every number and every frame; returns the info and frames.
fn round_trip(opts: SpillWriterOptions, recs: &[Vec<u8>]) -> (SpillFileInfo, Vec<Frame>) {
    let codec = opts.codec.expect("a codec");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.spill");
    let mut w = SpillWriter::create(&path, opts.clone()).unwrap();
    for r in recs {
        w.write_record(r).unwrap();
    }
    let written = w.finish().unwrap();

    // Records come back as written, and the reader reports what the writer did.
    let mut read = Vec::new();
    let info = SpillReader::open(&path)
        .unwrap()
        .for_each_record(|r| {
            read.push(r.to_vec());
            Ok::<(), SpillError>(())
        })
        .unwrap();
    assert_eq!(read, recs, "{}", codec.name);
    assert_eq!(
        info,
        SpillFileInfo {
            write_ns: 0,
            ..written.clone()
        }
    );
    assert_eq!(verify_file(&path).unwrap(), info);

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes[11], codec.name.id(), "header byte 11 is the codec");
    assert_eq!(written.codec, Some(codec.name));
    let prefix = if opts.fixed_record_bytes.is_some() {
        0
    } else {
        4
    };
    let raw: u64 = recs.iter().map(|r| r.len() as u64 + prefix).sum();
    let mut digest = RecordDigest::default();
    recs.iter().for_each(|r| digest.add(r));
    assert_eq!(
        written.digest(),
        digest,
        "the digests are over the raw records"
    );
    assert_eq!(written.payload_bytes, raw);
    assert_eq!(written.file_bytes, bytes.len() as u64);
    assert_eq!(
        written.file_bytes,
        (HEADER_BYTES + FOOTER_BYTES) as u64
            + written.frames * COMPRESSED_FRAME_HEADER_BYTES as u64
            + written.stored_payload_bytes
    );

    // Each frame: never more stored than raw, at most one block of raw bytes unless it holds
    // a single record larger than that, and the frame numbers add up to the footer's.
    let fs = frames(&bytes);
    assert_eq!(fs.len() as u64, written.frames);
    let cap = opts.frame_cap_bytes() as u64;
    for f in &fs {
        assert!(f.stored <= f.raw, "{f:?}");
        assert!(f.records >= 1, "{f:?}");
        assert!(
            u64::from(f.raw) <= cap || f.records == 1,
            "{}: frame of {} raw bytes over a {cap}-byte block: {f:?}",
            codec.name,
            f.raw
        );
    }
    let sum = |g: fn(&Frame) -> u32| fs.iter().map(|f| u64::from(g(f))).sum::<u64>();
    assert_eq!(sum(|f| f.raw), written.payload_bytes);
    assert_eq!(sum(|f| f.stored), written.stored_payload_bytes);
    assert_eq!(sum(|f| f.records), written.records);
    assert_eq!(
        u64::from(written.max_frame_payload_bytes),
        fs.iter().map(|f| u64::from(f.raw)).max().unwrap_or(0)
    );
    assert_eq!(
        u64::from(written.max_stored_frame_bytes),
        fs.iter().map(|f| u64::from(f.stored)).max().unwrap_or(0)
    );
    // The order-dependent digest is the CRC32C of the stored payload stream.
    assert_eq!(
        written.payload_crc32c,
        crc32c::crc32c(&stored_stream(&bytes))
    );
    (written, fs)
}

#[test]
fn every_codec_round_trips_variable_text_records_and_compresses_them() {
    let recs = text_records(20_000, 120, 1);
    for name in CODECS {
        let (info, fs) = round_trip(options(Codec::with_defaults(name), None), &recs);
        assert!(fs.len() > 30, "{name}: 32 KiB frames, {} of them", fs.len());
        assert!(
            info.stored_payload_bytes * 2 < info.payload_bytes,
            "{name}: text should at least halve: {} of {}",
            info.stored_payload_bytes,
            info.payload_bytes
        );
    }
}

#[test]
fn every_codec_round_trips_fixed_records() {
    // 56-byte text-like records (as a sort spills them) and 24-byte aggregation entries.
    let text: Vec<Vec<u8>> = text_records(10_000, 200, 2)
        .into_iter()
        .filter(|r| r.len() >= 56)
        .map(|r| r[..56].to_vec())
        .collect();
    assert!(text.len() > 5_000);
    let entries: Vec<Vec<u8>> = (0..30_000u64)
        .map(|k| {
            [k, k % 7 + 1, k * 3 % 1000]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    for name in CODECS {
        let (info, _) = round_trip(options(Codec::with_defaults(name), Some(56)), &text);
        assert!(info.stored_payload_bytes < info.payload_bytes, "{name}");
        let (info, fs) = round_trip(options(Codec::with_defaults(name), Some(24)), &entries);
        assert!(info.stored_payload_bytes < info.payload_bytes, "{name}");
        // Fixed records fill a 32 KiB block with whole records: 1365 of 24 bytes.
        assert!(
            fs[..fs.len() - 1].iter().all(|f| f.raw == 1365 * 24),
            "{name}"
        );
    }
}

#[test]
fn incompressible_frames_are_stored_raw() {
    let recs = random_records(3_000, 56, 3);
    for name in CODECS {
        let (info, fs) = round_trip(options(Codec::with_defaults(name), Some(56)), &recs);
        assert!(fs.iter().all(|f| f.stored == f.raw), "{name}: {fs:?}");
        assert_eq!(info.stored_payload_bytes, info.payload_bytes, "{name}");
    }
}

#[test]
fn a_record_larger_than_a_block_gets_a_frame_of_its_own() {
    let mut recs = text_records(500, 100, 4);
    let big: Vec<u8> = text_records(8_000, 60, 6)
        .concat()
        .into_iter()
        .take(100_000)
        .collect();
    assert_eq!(big.len(), 100_000);
    let random_big = random_records(1, 70_000, 7).pop().unwrap();
    recs.insert(250, big.clone());
    recs.insert(251, random_big.clone());
    recs.push(Vec::new());
    for name in CODECS {
        for block in [32 * 1024, 4096] {
            let (info, fs) = round_trip(options(codec(name, block), None), &recs);
            let lone = |len: usize| {
                fs.iter()
                    .any(|f| f.records == 1 && f.raw as usize == len + 4)
            };
            assert!(lone(big.len()), "{name} {block}: {fs:?}");
            assert!(lone(random_big.len()), "{name} {block}");
            assert_eq!(info.max_frame_payload_bytes as usize, big.len() + 4);
            // After the large records the frames are one block again.
            let last = fs.last().unwrap();
            assert!(last.raw as usize <= block, "{name} {block}: {last:?}");
        }
    }
}

#[test]
fn frames_are_cut_at_the_smaller_of_the_block_and_the_frame_cap() {
    let recs = text_records(5_000, 80, 8);
    for name in CODECS {
        // Block below the frame cap: the block cuts.
        let (_, fs) = round_trip(options(codec(name, 1000), None), &recs);
        assert!(fs.iter().all(|f| f.raw <= 1000), "{name}");
        assert!(
            fs.iter().filter(|f| f.raw > 900).count() > fs.len() / 2,
            "{name}"
        );
        // Frame cap below the block: the cap cuts. Batch size still applies.
        let mut o = options(codec(name, 64 * 1024), None);
        o.max_frame_payload_bytes = 2000;
        o.batch_records = 17;
        let (_, fs) = round_trip(o, &recs);
        assert!(
            fs.iter().all(|f| f.raw <= 2000 && f.records <= 17),
            "{name}"
        );
    }
}

#[test]
fn zero_records_and_one_empty_record() {
    for name in CODECS {
        let (info, fs) = round_trip(options(Codec::with_defaults(name), None), &[]);
        assert!(fs.is_empty());
        assert_eq!(info.file_bytes, (HEADER_BYTES + FOOTER_BYTES) as u64);
        let (info, fs) = round_trip(options(Codec::with_defaults(name), None), &[Vec::new()]);
        assert_eq!((fs.len(), info.payload_bytes), (1, 4));
    }
}

#[test]
fn tiny_file_buffers_and_a_known_digest() {
    // A file buffer smaller than a compressed frame: headers and payloads straddle flushes.
    let recs = text_records(3_000, 90, 9);
    let mut digest = RecordDigest::default();
    recs.iter().for_each(|r| digest.add(r));
    for name in CODECS {
        for buffer_bytes in [12, 13, 100, 4096] {
            let mut o = options(Codec::with_defaults(name), None);
            o.buffer_bytes = buffer_bytes;
            round_trip(o, &recs);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known.spill");
        let mut w = SpillWriter::create(&path, options(Codec::with_defaults(name), None)).unwrap();
        w.use_known_digest(digest);
        for r in &recs {
            w.write_record(r).unwrap();
        }
        let info = w.finish().unwrap();
        assert_eq!(info.digest(), digest);
        assert_eq!(verify_file(&path).unwrap().digest(), digest);
    }
}

#[test]
fn an_uncompressed_writer_writes_what_it_always_wrote() {
    // `codec: None` is the format from before codecs: codec byte 0, 12-byte frame headers.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.spill");
    let recs = text_records(1_000, 50, 10);
    let mut w = SpillWriter::create(&path, SpillWriterOptions::new(SpillKind::Block)).unwrap();
    for r in &recs {
        w.write_record(r).unwrap();
    }
    let info = w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes[11], 0);
    assert_eq!(info.codec, None);
    assert_eq!(info.stored_payload_bytes, info.payload_bytes);
    assert_eq!(
        info.file_bytes,
        (HEADER_BYTES + FOOTER_BYTES) as u64 + 12 * info.frames + info.payload_bytes
    );
    assert_eq!(
        &bytes[bytes.len() - 8..bytes.len() - 4],
        &[0; 4],
        "footer 56..60 is 0"
    );
}

#[test]
fn an_unknown_codec_byte_is_bad_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unknown.spill");
    let mut w =
        SpillWriter::create(&path, options(Codec::with_defaults(CodecName::Lz4), None)).unwrap();
    w.write_record(b"record").unwrap();
    w.finish().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    for id in [4u8, 9, 255] {
        bytes[11] = id;
        let crc = crc32c::crc32c(&bytes[0..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let e = SpillReader::open(&path).unwrap_err();
        assert!(
            matches!(e, SpillError::BadFormat { offset: 11, .. }),
            "codec byte {id}: {e}"
        );
        assert!(e.to_string().contains(&format!("codec byte {id}")), "{e}");
    }
}

#[test]
fn a_zero_block_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = SpillWriter::create(
        dir.path().join("a"),
        options(codec(CodecName::Lz4, 0), None),
    )
    .unwrap_err();
    assert!(matches!(e, SpillError::InvalidOption { .. }), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

fn any_codec() -> impl Strategy<Value = CodecName> {
    prop_oneof![
        Just(CodecName::Lz4),
        Just(CodecName::Snappy),
        Just(CodecName::Zstd)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn any_records_any_codec_any_framing_round_trip(
        name in any_codec(),
        text in proptest::collection::vec((0usize..400, any::<bool>()), 0..300),
        seed in any::<u64>(),
        block_bytes in 1usize..3000,
        buffer_bytes in 12usize..2000,
        batch_records in 1u32..50,
        max_frame_payload_bytes in 1u32..4000,
    ) {
        // Records that compress and records that do not, interleaved.
        let recs: Vec<Vec<u8>> = text
            .iter()
            .enumerate()
            .map(|(i, &(len, compressible))| {
                let s = seed.wrapping_add(i as u64);
                if compressible {
                    text_records(40, 60, s).concat().into_iter().take(len).collect()
                } else {
                    random_records(1, len, s).pop().unwrap()
                }
            })
            .collect();
        let mut o = options(codec(name, block_bytes), None);
        o.buffer_bytes = buffer_bytes;
        o.batch_records = batch_records;
        o.max_frame_payload_bytes = max_frame_payload_bytes;
        round_trip(o, &recs);
    }
}

#[test]
fn reading_a_compressed_run_is_zero_copy_per_record_and_ends_verified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.spill");
    let recs = text_records(10_000, 70, 12);
    let mut w =
        SpillWriter::create(&path, options(Codec::with_defaults(CodecName::Lz4), None)).unwrap();
    for r in &recs {
        w.write_record(r).unwrap();
    }
    w.finish().unwrap();
    let mut r = SpillReader::open(Path::new(&path)).unwrap();
    let mut i = 0;
    while let Some(rec) = r.next_record().unwrap() {
        assert_eq!(rec, &recs[i][..]);
        i += 1;
    }
    assert_eq!(i, recs.len());
    assert_eq!(r.next_record().unwrap(), None, "stays at the end");
}
