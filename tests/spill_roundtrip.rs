//! Spill files round trip: records, frame boundaries, `SpillFileInfo` numbers and file size.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use proptest::prelude::*;
use spillway::spill::{
    FOOTER_BYTES, FRAME_HEADER_BYTES, HEADER_BYTES, RecordDigest, SpillError, SpillFileInfo,
    SpillKind, SpillReader, SpillWriter, SpillWriterOptions, verify_file,
};

/// Deterministic records of varied length (0..=max_len) and content.
fn records(n: usize, max_len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x as usize) % (max_len + 1);
            (0..len).map(|j| (x >> (j % 56)) as u8 ^ i as u8).collect()
        })
        .collect()
}

fn write(path: &Path, opts: SpillWriterOptions, recs: &[Vec<u8>]) -> SpillFileInfo {
    let mut w = SpillWriter::create(path, opts).unwrap();
    for r in recs {
        w.write_record(r).unwrap();
    }
    w.finish().unwrap()
}

fn read_all(path: &Path) -> (Vec<Vec<u8>>, SpillFileInfo) {
    let mut out = Vec::new();
    let info = SpillReader::open(path)
        .unwrap()
        .for_each_record(|r| {
            out.push(r.to_vec());
            Ok::<(), SpillError>(())
        })
        .unwrap();
    (out, info)
}

/// Writes, reads back, and checks every number the writer and reader report.
fn round_trip(opts: SpillWriterOptions, recs: &[Vec<u8>]) -> SpillFileInfo {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.spill");
    let written = write(&path, opts.clone(), recs);
    let (read, info) = read_all(&path);
    assert_eq!(read, recs);

    let prefix = if opts.fixed_record_bytes.is_some() {
        0
    } else {
        4
    };
    let payload: u64 = recs.iter().map(|r| r.len() as u64 + prefix).sum();
    let mut digest = RecordDigest::default();
    recs.iter().for_each(|r| digest.add(r));
    let file_len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(written.path, path);
    assert_eq!(written.kind, opts.kind);
    assert_eq!(written.tag, opts.tag);
    assert_eq!(written.records, recs.len() as u64);
    assert_eq!(written.payload_bytes, payload);
    assert_eq!(written.digest(), digest);
    assert_eq!(written.file_bytes, file_len);
    assert_eq!(
        file_len,
        (HEADER_BYTES + FOOTER_BYTES) as u64 + written.frames * FRAME_HEADER_BYTES as u64 + payload
    );
    let mut crc = 0u32;
    // The order-dependent digest is the CRC32C of the payload stream, whatever the framing.
    for r in recs {
        if prefix != 0 {
            crc = crc32c::crc32c_append(crc, &(r.len() as u32).to_le_bytes());
        }
        crc = crc32c::crc32c_append(crc, r);
    }
    assert_eq!(written.payload_crc32c, crc);
    // The reader reports what the writer did, except the writer's own timing.
    assert_eq!(
        info,
        SpillFileInfo {
            write_ns: 0,
            ..written.clone()
        }
    );
    assert_eq!(verify_file(&path).unwrap(), info);
    written
}

fn opts(kind: SpillKind) -> SpillWriterOptions {
    SpillWriterOptions::new(kind)
}

#[test]
fn zero_records() {
    let info = round_trip(opts(SpillKind::SortRun), &[]);
    assert_eq!((info.records, info.frames), (0, 0));
    assert_eq!(info.file_bytes, (HEADER_BYTES + FOOTER_BYTES) as u64);
}

#[test]
fn one_record_and_one_empty_record() {
    let info = round_trip(opts(SpillKind::Block), &[b"hello".to_vec()]);
    assert_eq!((info.records, info.frames, info.payload_bytes), (1, 1, 9));
    let info = round_trip(opts(SpillKind::Block), &[Vec::new()]);
    assert_eq!((info.records, info.frames, info.payload_bytes), (1, 1, 4));
}

#[test]
fn many_frames_with_spark_defaults() {
    // 25,000 records with the 10,000-record batch: frames of 10k, 10k, 5k.
    let recs = records(25_000, 120, 7);
    let mut o = opts(SpillKind::AggregationSpill);
    o.tag = 0x1234_5678_9abc_def0;
    let info = round_trip(o, &recs);
    assert_eq!(info.frames, 3);
}

#[test]
fn records_exactly_at_batch_boundaries() {
    for n in [9, 10, 11, 19, 20, 21, 30] {
        let recs = records(n, 40, n as u64);
        let mut o = opts(SpillKind::SortRun);
        o.batch_records = 10;
        let info = round_trip(o, &recs);
        assert_eq!(info.frames, n.div_ceil(10) as u64, "n={n}");
    }
}

#[test]
fn frame_payload_cap_and_oversized_records() {
    // Fixed 100-byte records, cap 1000 bytes: exactly 10 per frame.
    let recs: Vec<Vec<u8>> = (0..35u8).map(|i| vec![i; 100]).collect();
    let mut o = opts(SpillKind::SortRun);
    o.fixed_record_bytes = Some(100);
    o.max_frame_payload_bytes = 1000;
    let info = round_trip(o, &recs);
    assert_eq!((info.frames, info.max_frame_payload_bytes), (4, 1000));
    assert_eq!(info.payload_bytes, 3500);

    // A record larger than the cap gets a frame of its own; neighbours are not merged into it.
    let recs = vec![vec![1u8; 10], vec![2u8; 5000], vec![3u8; 10]];
    let mut o = opts(SpillKind::Block);
    o.max_frame_payload_bytes = 1000;
    let info = round_trip(o, &recs);
    assert_eq!((info.frames, info.max_frame_payload_bytes), (3, 5004));
}

#[test]
fn tiny_and_odd_buffers_patch_frame_headers_across_flushes() {
    // Buffers smaller than a frame force frame headers to be patched with pwrite, and buffers
    // of odd sizes make headers straddle a flush.
    let recs = records(500, 70, 3);
    for buffer_bytes in [12, 13, 17, 64, 100, 1000, 4096] {
        let mut o = opts(SpillKind::SortRun);
        o.buffer_bytes = buffer_bytes;
        o.batch_records = 7;
        round_trip(o, &recs);
    }
}

#[test]
fn fixed_size_records_and_sync() {
    let recs: Vec<Vec<u8>> = (0..20_000u32)
        .map(|i| {
            let mut r = [0u8; 56];
            r[..4].copy_from_slice(&i.to_be_bytes());
            r.to_vec()
        })
        .collect();
    let mut o = opts(SpillKind::SortRun);
    o.fixed_record_bytes = Some(56);
    o.sync_on_finish = true;
    let info = round_trip(o, &recs);
    assert_eq!(info.payload_bytes, 20_000 * 56);
    assert_eq!(info.fixed_record_bytes, 56);
}

#[test]
fn wrong_size_record_is_refused_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.spill");
    let mut o = opts(SpillKind::SortRun);
    o.fixed_record_bytes = Some(8);
    let mut w = SpillWriter::create(&path, o).unwrap();
    w.write_record(&[1; 8]).unwrap();
    let e = w.write_record(&[1; 9]).unwrap_err();
    assert!(matches!(
        e,
        SpillError::RecordSize {
            len: 9,
            expected: 8,
            ..
        }
    ));
    assert!(e.to_string().contains("f.spill"), "{e}");
    w.write_record(&[2; 8]).unwrap();
    let info = w.finish().unwrap();
    assert_eq!(info.records, 2);
    assert_eq!(read_all(&path).0, vec![vec![1; 8], vec![2; 8]]);
}

#[test]
fn file_is_new_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.spill");
    let info = write(&path, opts(SpillKind::Block), &[b"x".to_vec()]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // An existing file is never overwritten, and never deleted by the failed create.
    let e = SpillWriter::create(&path, opts(SpillKind::Block)).unwrap_err();
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::AlreadyExists), "{e}");
    assert_eq!(verify_file(&path).unwrap().records, info.records);
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(SpillKind::Block);
    o.batch_records = 0;
    let e = SpillWriter::create(dir.path().join("a"), o).unwrap_err();
    assert!(
        e.to_string().contains("spark.shuffle.spill.batchSize"),
        "{e}"
    );
    let mut o = opts(SpillKind::Block);
    o.buffer_bytes = 0;
    let e = SpillWriter::create(dir.path().join("b"), o).unwrap_err();
    assert!(e.to_string().contains("spark.shuffle.file.buffer"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn next_record_is_zero_copy_and_ends_verified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.spill");
    let recs = records(100, 30, 11);
    write(&path, opts(SpillKind::SortRun), &recs);
    let mut r = SpillReader::open(&path).unwrap();
    assert_eq!(r.info().records, 100);
    let mut i = 0;
    while let Some(rec) = r.next_record().unwrap() {
        assert_eq!(rec, &recs[i][..]);
        i += 1;
    }
    assert_eq!(i, 100);
    assert_eq!(r.next_record().unwrap(), None, "stays at the end");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_records_any_framing_round_trip(
        recs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..300),
        buffer_bytes in 12usize..2000,
        batch_records in 1u32..50,
        max_frame_payload_bytes in 1u32..3000,
    ) {
        let mut o = opts(SpillKind::SortRun);
        o.buffer_bytes = buffer_bytes;
        o.batch_records = batch_records;
        o.max_frame_payload_bytes = max_frame_payload_bytes;
        round_trip(o, &recs);
    }
}

/// A digest given by the caller replaces the writer's own hashing; a wrong one never reaches a
/// finished file unnoticed.
#[test]
fn known_digest_is_carried_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(5_000, 80, 7);
    let mut digest = RecordDigest::default();
    for r in &recs {
        digest.add(r);
    }
    let write_with = |name: &str, given: RecordDigest| {
        let path = dir.path().join(name);
        let mut w = SpillWriter::create(&path, opts(SpillKind::SortRun)).unwrap();
        w.use_known_digest(given);
        for r in &recs {
            w.write_record(r).unwrap();
        }
        (path, w.finish())
    };

    // The right digest: the footer carries it and the file reads back verified.
    let (path, info) = write_with("right", digest);
    let info = info.unwrap();
    assert_eq!(
        (info.records, info.record_hash_sum),
        (digest.records, digest.hash_sum)
    );
    assert_eq!(verify_file(&path).unwrap().record_hash_sum, digest.hash_sum);

    // A wrong count fails `finish` in every build, and the file is gone.
    let short = RecordDigest {
        records: digest.records - 1,
        ..digest
    };
    let (path, info) = write_with("count", short);
    let e = info.unwrap_err();
    assert!(matches!(e, SpillError::ChecksumMismatch { .. }), "{e}");
    assert!(!path.exists());

    // A wrong hash sum: builds with debug assertions catch it at `finish`; others write the
    // claimed digest, which the first read then refuses.
    let wrong = RecordDigest {
        hash_sum: digest.hash_sum ^ 1,
        ..digest
    };
    let (path, info) = write_with("hash", wrong);
    if cfg!(debug_assertions) {
        assert!(matches!(info, Err(SpillError::ChecksumMismatch { .. })));
        assert!(!path.exists());
    } else {
        info.unwrap();
        let e = verify_file(&path).unwrap_err();
        assert!(matches!(e, SpillError::ChecksumMismatch { .. }), "{e}");
    }
}
