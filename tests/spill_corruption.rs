//! Damaged spill files (docs/reliability.md test 13): every bit flip, every truncation, empty files,
//! wrong magic, trailing bytes, moved frames — in uncompressed files and in files compressed
//! with each codec. Each gives its typed error naming the file and an offset, and what the
//! reader yields before the error is a prefix of what was written.

use std::path::{Path, PathBuf};

use spillway::codec::{Codec, CodecName};
use spillway::spill::{
    COMPRESSED_FRAME_HEADER_BYTES, FOOTER_BYTES, FRAME_HEADER_BYTES, HEADER_BYTES, SpillError,
    SpillKind, SpillReader, SpillWriter, SpillWriterOptions,
};

const CODECS: [CodecName; 3] = [CodecName::Lz4, CodecName::Snappy, CodecName::Zstd];

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
    records: Vec<Vec<u8>>,
}

/// A small file of several frames: 3 records per frame, lengths 0..=12.
fn fixture(fixed: Option<u32>) -> Fixture {
    fixture_with(fixed, None)
}

/// A small file of several frames, 3 records per frame. Compressed (`codec`), the records
/// repeat themselves so that the frames really are compressed: the damage then meets the
/// decompressor if the CRC misses it.
fn fixture_with(fixed: Option<u32>, codec: Option<CodecName>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.spill");
    let records: Vec<Vec<u8>> = (0..11u8)
        .map(|i| match (fixed, codec) {
            (Some(n), _) => vec![i ^ 0x5a; n as usize],
            (None, None) => (0..i + 2).map(|j| i.wrapping_mul(31) ^ j).collect(),
            (None, Some(_)) => (0..i as usize * 4 + 20)
                .map(|j| b"spill spill block "[j % 18] ^ i)
                .collect(),
        })
        .collect();
    let mut o = SpillWriterOptions::new(SpillKind::SortRun);
    o.batch_records = 3;
    o.fixed_record_bytes = fixed;
    o.tag = 99;
    o.codec = codec.map(Codec::with_defaults);
    let mut w = SpillWriter::create(&path, o).unwrap();
    for r in &records {
        w.write_record(r).unwrap();
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    Fixture {
        _dir: dir,
        path,
        bytes,
        records,
    }
}

/// Reads everything; returns the records yielded and the error that ended it, if any.
fn read(path: &Path) -> (Vec<Vec<u8>>, Option<SpillError>) {
    let mut out = Vec::new();
    let mut r = match SpillReader::open(path) {
        Ok(r) => r,
        Err(e) => return (out, Some(e)),
    };
    loop {
        match r.next_record() {
            Ok(Some(rec)) => out.push(rec.to_vec()),
            Ok(None) => return (out, None),
            Err(e) => {
                // A failed reader stays failed: it never goes on to yield records.
                assert!(matches!(r.next_record(), Err(SpillError::Poisoned { .. })));
                return (out, Some(e));
            }
        }
    }
}

/// The damaged file must fail, name itself and an offset, and never yield a wrong record.
fn expect_error(f: &Fixture, bytes: &[u8], what: &str) -> SpillError {
    std::fs::write(&f.path, bytes).unwrap();
    let (got, err) = read(&f.path);
    let err = err.unwrap_or_else(|| panic!("{what}: damage not detected"));
    assert!(
        f.records.starts_with(&got),
        "{what}: yielded records that were not written: {got:?}"
    );
    assert_eq!(err.path(), Some(f.path.as_path()), "{what}: {err}");
    assert!(err.offset().is_some(), "{what}: no offset in {err:?}");
    assert!(err.to_string().contains("damaged.spill"), "{what}: {err}");
    err
}

/// (offset, stored length, raw length) of each frame of a compressed file.
fn compressed_frames(bytes: &[u8]) -> Vec<(usize, usize, usize)> {
    let le32 = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
    let mut at = HEADER_BYTES;
    let mut out = Vec::new();
    while at < bytes.len() - FOOTER_BYTES {
        let (stored, raw) = (le32(&bytes[at..]), le32(&bytes[at + 4..]));
        out.push((at, stored, raw));
        at += COMPRESSED_FRAME_HEADER_BYTES + stored;
    }
    out
}

/// The compressed fixtures: every codec, variable and fixed 40-byte records. Each has frames
/// that really are compressed (stored shorter than raw).
fn compressed_fixtures() -> Vec<(String, Fixture)> {
    let mut out = Vec::new();
    for codec in CODECS {
        for fixed in [None, Some(40)] {
            let f = fixture_with(fixed, Some(codec));
            assert_eq!(f.bytes[11], codec.id());
            let frames = compressed_frames(&f.bytes);
            assert!(frames.len() >= 4, "{codec}: {frames:?}");
            assert!(
                frames.iter().any(|&(_, stored, raw)| stored < raw),
                "{codec} {fixed:?}: no frame was compressed: {frames:?}"
            );
            out.push((format!("{codec}, fixed {fixed:?}"), f));
        }
    }
    out
}

/// Flips every bit of `f`'s file in turn: each flip is found, in the part it damaged.
fn check_every_bit_flip(f: &Fixture, label: &str) {
    let len = f.bytes.len();
    let footer_start = len - FOOTER_BYTES;
    for bit in 0..len * 8 {
        let mut b = f.bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let at = bit / 8;
        let what = format!("{label}, flip bit {bit} (byte {at} of {len})");
        let e = expect_error(f, &b, &what);
        match e {
            SpillError::ChecksumMismatch {
                offset, what: part, ..
            } => {
                // The offset names the damaged part: the header, the frame, or the footer.
                if at < HEADER_BYTES {
                    assert_eq!(offset, 0, "{what}");
                    assert!(part.starts_with("header"), "{what}: {part}");
                } else if at >= footer_start {
                    assert_eq!((offset, part), (footer_start as u64, "footer"), "{what}");
                } else {
                    assert_eq!(part, "frame", "{what}");
                    assert!(offset as usize <= at, "{what}: offset {offset}");
                }
            }
            // A damaged frame length may run past the frames before its CRC can be checked.
            SpillError::Corrupt { offset, .. } => {
                assert!((HEADER_BYTES..footer_start).contains(&at), "{what}: {e}");
                assert!(offset as usize <= at, "{what}: offset {offset}");
            }
            other => panic!("{what}: unexpected {other}"),
        }
    }
}

#[test]
fn every_bit_flip_is_detected() {
    for fixed in [None, Some(5)] {
        check_every_bit_flip(&fixture(fixed), &format!("fixed {fixed:?}"));
    }
}

#[test]
fn every_bit_flip_in_a_compressed_file_is_detected() {
    for (label, f) in compressed_fixtures() {
        check_every_bit_flip(&f, &label);
    }
}

#[test]
fn every_byte_of_a_compressed_file_replaced_is_detected() {
    // Whole bytes of the frames changed (not one bit): inside compressed payloads these are
    // what a decompressor would turn into other records, were the CRC not checked first.
    // (Header and footer bytes are the bit-flip test's: a magic or marker changed in many bits
    // is another file, `BadFormat` or `Truncated`.)
    for (label, f) in compressed_fixtures() {
        for at in HEADER_BYTES..f.bytes.len() - FOOTER_BYTES {
            for x in [0xffu8, 0x5a] {
                let mut b = f.bytes.clone();
                b[at] ^= x;
                let what = format!("{label}, byte {at} ^ {x:#x}");
                let e = expect_error(&f, &b, &what);
                assert!(
                    matches!(
                        e,
                        SpillError::ChecksumMismatch { .. } | SpillError::Corrupt { .. }
                    ),
                    "{what}: {e}"
                );
                if let SpillError::Corrupt { ref detail, .. } = e {
                    assert!(
                        !detail.contains("decompress"),
                        "{what}: reached the codec: {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_truncation_is_detected() {
    let mut fixtures = vec![("uncompressed".to_string(), fixture(None))];
    fixtures.extend(compressed_fixtures());
    for (label, f) in fixtures {
        for cut in 0..f.bytes.len() {
            let what = format!("{label}: cut at {cut}");
            let e = expect_error(&f, &f.bytes[..cut], &what);
            match e {
                SpillError::Truncated { offset, .. } => assert_eq!(offset, cut as u64, "{what}"),
                other => panic!("{what}: unexpected {other}"),
            }
        }
    }
}

#[test]
fn empty_file() {
    let f = fixture(None);
    let e = expect_error(&f, &[], "empty");
    assert!(matches!(e, SpillError::Truncated { offset: 0, .. }), "{e}");
    assert!(e.to_string().contains("empty file"), "{e}");
}

#[test]
fn wrong_magic_is_bad_format() {
    let f = fixture(None);
    let mut b = f.bytes.clone();
    b[0..8].copy_from_slice(b"PAR1\0\0\0\0");
    let e = expect_error(&f, &b, "wrong magic");
    assert!(matches!(e, SpillError::BadFormat { offset: 0, .. }), "{e}");
    // Not a spill file at all, shorter than a header.
    let e = expect_error(&f, b"hello", "short text file");
    assert!(matches!(e, SpillError::BadFormat { offset: 0, .. }), "{e}");
}

#[test]
fn trailing_bytes_after_the_footer() {
    let f = fixture(None);
    let len = f.bytes.len() as u64;
    for extra in [1usize, 7, 64, 65, 1000] {
        let mut b = f.bytes.clone();
        b.extend(std::iter::repeat_n(0xA5, extra));
        let e = expect_error(&f, &b, &format!("{extra} trailing bytes"));
        assert!(
            matches!(e, SpillError::BadFormat { offset, .. } if offset == len),
            "{extra}: {e}"
        );
    }
}

#[test]
fn swapped_frames_are_detected_before_their_records() {
    // Fixed-size records: all full frames have the same length and can be swapped in place.
    let f = fixture(Some(5));
    let frame = FRAME_HEADER_BYTES + 3 * 5;
    let (a, b) = (HEADER_BYTES, HEADER_BYTES + frame);
    let mut bytes = f.bytes.clone();
    let first = bytes[a..a + frame].to_vec();
    bytes.copy_within(b..b + frame, a);
    bytes[b..b + frame].copy_from_slice(&first);
    let e = expect_error(&f, &bytes, "swapped frames");
    assert!(
        matches!(e, SpillError::ChecksumMismatch { offset, what: "frame", .. } if offset == a as u64),
        "{e}"
    );

    // A frame copied over another (same length, its own CRC intact) fails at its new place.
    let mut bytes = f.bytes.clone();
    bytes.copy_within(a..a + frame, b);
    let e = expect_error(&f, &bytes, "duplicated frame");
    assert!(
        matches!(e, SpillError::ChecksumMismatch { offset, what: "frame", .. } if offset == b as u64),
        "{e}"
    );
    assert_eq!(
        read(&f.path).0,
        f.records[..3],
        "the intact first frame is read"
    );
}

#[test]
fn frame_from_another_file_is_detected() {
    // Same layout and records, different tag: frames are bound to their file's header.
    let f = fixture(Some(5));
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.spill");
    let mut o = SpillWriterOptions::new(SpillKind::SortRun);
    o.batch_records = 3;
    o.fixed_record_bytes = Some(5);
    o.tag = 100;
    let mut w = SpillWriter::create(&other, o).unwrap();
    for r in &f.records {
        w.write_record(r).unwrap();
    }
    w.finish().unwrap();
    let other_bytes = std::fs::read(&other).unwrap();
    let mut bytes = f.bytes.clone();
    let n = bytes.len() - HEADER_BYTES - FOOTER_BYTES;
    bytes[HEADER_BYTES..HEADER_BYTES + n]
        .copy_from_slice(&other_bytes[HEADER_BYTES..HEADER_BYTES + n]);
    let e = expect_error(&f, &bytes, "spliced frames");
    assert!(
        matches!(e, SpillError::ChecksumMismatch { what: "frame", .. }),
        "{e}"
    );
}

#[test]
fn unfinished_writer_file_copied_aside_reads_as_truncated() {
    // What a reader finds after a crash mid-spill (test 18): the bytes flushed so far, no
    // footer. (The writer itself deletes its file on drop; copy it while the writer lives.)
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.spill");
    let mut o = SpillWriterOptions::new(SpillKind::SortRun);
    o.buffer_bytes = 64;
    let mut w = SpillWriter::create(&path, o).unwrap();
    for i in 0..100u32 {
        w.write_record(&i.to_le_bytes()).unwrap();
    }
    let copy = dir.path().join("crashed.spill");
    std::fs::copy(&path, &copy).unwrap();
    drop(w);
    let e = SpillReader::open(&copy).unwrap_err();
    assert!(matches!(e, SpillError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("never finished"), "{e}");
}

#[test]
fn swapped_and_spliced_compressed_frames_are_detected() {
    for codec in CODECS {
        let f = fixture_with(Some(40), Some(codec));
        let frames = compressed_frames(&f.bytes);
        let size = |i: usize| COMPRESSED_FRAME_HEADER_BYTES + frames[i].1;
        // Two frames of the same stored size swap in place.
        let (i, j) = (0..frames.len())
            .flat_map(|i| (i + 1..frames.len()).map(move |j| (i, j)))
            .find(|&(i, j)| size(i) == size(j))
            .unwrap_or_else(|| panic!("{codec}: no two frames of one size: {frames:?}"));
        let (a, b, n) = (frames[i].0, frames[j].0, size(i));
        let mut bytes = f.bytes.clone();
        let first = bytes[a..a + n].to_vec();
        bytes.copy_within(b..b + n, a);
        bytes[b..b + n].copy_from_slice(&first);
        let e = expect_error(&f, &bytes, &format!("{codec}: swapped frames {i}, {j}"));
        assert!(
            matches!(e, SpillError::ChecksumMismatch { offset, what: "frame", .. } if offset == a as u64),
            "{codec}: {e}"
        );

        // The same records compressed into a file with another tag: its frames are bound
        // to their own header.
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.spill");
        let mut o = SpillWriterOptions::new(SpillKind::SortRun);
        o.batch_records = 3;
        o.fixed_record_bytes = Some(40);
        o.tag = 100;
        o.codec = Some(Codec::with_defaults(codec));
        let mut w = SpillWriter::create(&other, o).unwrap();
        for r in &f.records {
            w.write_record(r).unwrap();
        }
        w.finish().unwrap();
        let other_bytes = std::fs::read(&other).unwrap();
        assert_eq!(other_bytes.len(), f.bytes.len(), "{codec}: the same layout");
        let mut bytes = f.bytes.clone();
        let n = bytes.len() - HEADER_BYTES - FOOTER_BYTES;
        bytes[HEADER_BYTES..HEADER_BYTES + n]
            .copy_from_slice(&other_bytes[HEADER_BYTES..HEADER_BYTES + n]);
        let e = expect_error(&f, &bytes, &format!("{codec}: spliced frames"));
        assert!(
            matches!(e, SpillError::ChecksumMismatch { what: "frame", offset, .. } if offset == HEADER_BYTES as u64),
            "{codec}: {e}"
        );
    }
}
