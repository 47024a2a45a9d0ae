//! Writes records with `SpillWriter` (any options), damages the file the ways a disk or a
//! crash does (bit flips, truncation, zeroed, removed or duplicated ranges, appended bytes),
//! then reads it with `SpillReader`. Half the inputs give the writer the records' digest
//! (`use_known_digest`) instead of letting it hash them; three quarters compress the file with
//! one of the codecs (lz4, snappy, zstd, any block size).
//! Oracle (docs/reliability.md item 13, "never wrong rows"): the records handed out are always a
//! prefix of the records written, in order; a file read to its verified end gave all of them;
//! an undamaged file always reads back in full.
//!
//! The damage is accidental by construction: the fuzzer chooses where, not what bytes, so it
//! cannot forge a CRC (the format detects damage, not an adversary).
#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use spillway::codec::{Codec, CodecName};
use spillway::spill::{RecordDigest, SpillKind, SpillReader, SpillWriter, SpillWriterOptions};

#[derive(Debug, Arbitrary)]
enum Damage {
    FlipBit { pos: u32, bit: u8 },
    Truncate { len: u32 },
    Zero { pos: u32, len: u8 },
    Remove { pos: u32, len: u16 },
    Duplicate { pos: u32, len: u16 },
    Append { byte: u8, len: u16 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    kind: u8,
    tag: u64,
    fixed: Option<u8>,
    buffer_bytes: u16,
    batch_records: u8,
    max_frame_payload_bytes: u16,
    /// 0: uncompressed; 1, 2, 3: lz4, snappy, zstd.
    codec: u8,
    codec_block_bytes: u16,
    records: Vec<Vec<u8>>,
    /// Repeats each record this many times (bigger files from small inputs).
    repeat: u8,
    damage: Vec<Damage>,
}

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
}

fn damage(bytes: &mut Vec<u8>, d: &Damage) {
    let n = bytes.len();
    if n == 0 {
        return;
    }
    match *d {
        Damage::FlipBit { pos, bit } => bytes[pos as usize % n] ^= 1 << (bit % 8),
        Damage::Truncate { len } => bytes.truncate(len as usize % (n + 1)),
        Damage::Zero { pos, len } => {
            let s = pos as usize % n;
            let e = (s + len as usize).min(n);
            bytes[s..e].fill(0);
        }
        Damage::Remove { pos, len } => {
            let s = pos as usize % n;
            let e = (s + len as usize).min(n);
            bytes.drain(s..e);
        }
        Damage::Duplicate { pos, len } => {
            let s = pos as usize % n;
            let e = (s + len as usize).min(n);
            let copy = bytes[s..e].to_vec();
            bytes.splice(e..e, copy);
        }
        Damage::Append { byte, len } => bytes.extend(std::iter::repeat_n(byte, len as usize)),
    }
}

fuzz_target!(|input: Input| {
    static N: AtomicU64 = AtomicU64::new(0);
    let kind = match input.kind % 3 {
        0 => SpillKind::Block,
        1 => SpillKind::SortRun,
        _ => SpillKind::AggregationSpill,
    };
    let fixed = input.fixed.map(|f| u32::from(f.max(1)));
    let mut opts = SpillWriterOptions::new(kind);
    opts.tag = input.tag;
    opts.fixed_record_bytes = fixed;
    opts.buffer_bytes = usize::from(input.buffer_bytes.max(12));
    opts.batch_records = u32::from(input.batch_records.max(1));
    opts.max_frame_payload_bytes = u32::from(input.max_frame_payload_bytes.max(1));
    opts.codec = CodecName::from_id(input.codec % 4).map(|name| Codec {
        block_bytes: usize::from(input.codec_block_bytes.max(1)),
        ..Codec::with_defaults(name)
    });

    let mut written: Vec<Vec<u8>> = Vec::new();
    for r in input.records.iter().take(512) {
        let mut r = r.clone();
        if let Some(f) = fixed {
            r.resize(f as usize, 0xA5);
        }
        for _ in 0..=input.repeat % 8 {
            written.push(r.clone());
        }
    }

    let path = dir()
        .path()
        .join(format!("{}.spill", N.fetch_add(1, Ordering::Relaxed)));
    let mut w = SpillWriter::create(&path, opts).expect("create");
    // Half the inputs (by the tag's low bit) hand the writer the records' digest, as a sorter
    // and the memory store do; the file must read back the same either way.
    if input.tag & 1 == 1 {
        let mut digest = RecordDigest::default();
        for r in &written {
            digest.add(r);
        }
        w.use_known_digest(digest);
    }
    for r in &written {
        w.write_record(r).expect("write");
    }
    let info = w.finish().expect("finish");
    assert_eq!(info.records, written.len() as u64);

    let original = std::fs::read(&path).expect("read back");
    let mut bytes = original.clone();
    for d in input.damage.iter().take(8) {
        damage(&mut bytes, d);
    }
    std::fs::write(&path, &bytes).expect("rewrite");

    let mut got = 0usize;
    let mut complete = false;
    if let Ok(mut reader) = SpillReader::open(&path) {
        loop {
            match reader.next_record() {
                Ok(Some(r)) => {
                    assert!(got < written.len(), "record {got} was never written");
                    assert_eq!(
                        r,
                        &written[got][..],
                        "record {got} differs from the one written"
                    );
                    got += 1;
                }
                Ok(None) => {
                    complete = true;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    std::fs::remove_file(&path).expect("remove");
    if complete {
        assert_eq!(got, written.len(), "a verified file lost records");
    }
    if bytes == original {
        assert!(complete, "an undamaged file failed to read");
    }
});
