//! Fuzzes `SpillReader` over arbitrary file contents (docs/reliability.md item 13): every byte
//! string is a typed error or a file read to its verified end, never a panic, a hang or an
//! allocation beyond the file's size. libFuzzer's comparison tracing can plant the CRCs it
//! sees compared, so this target gets past the checksums into the frame logic.
//! Oracle: a file read to its end yielded exactly the records its footer counts.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use spillway::spill::SpillReader;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
}

fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("input.spill");
    {
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(data).expect("write");
    }
    let mut reader = match SpillReader::open(&path) {
        Ok(r) => r,
        Err(e) => {
            let _ = (e.to_string(), e.offset(), e.path());
            return;
        }
    };
    // The reader allocates buffers of the largest stored frame; the footer checks bound it by
    // the file's length. (A compressed file's records may be larger than the file: its record
    // buffer grows only for frames whose CRC passed.)
    let compressed = reader.info().codec.is_some();
    assert!(reader.info().max_stored_frame_bytes as usize <= data.len());
    if !compressed {
        assert!(reader.info().max_frame_payload_bytes as usize <= data.len());
    }
    let mut records = 0u64;
    let mut bytes = 0usize;
    loop {
        match reader.next_record() {
            Ok(Some(r)) => {
                records += 1;
                bytes += r.len();
                assert!(
                    compressed || bytes <= data.len(),
                    "records larger than the file"
                );
                assert!(
                    bytes as u64 <= reader.info().payload_bytes,
                    "more than the footer says"
                );
            }
            Ok(None) => {
                assert_eq!(records, reader.info().records);
                break;
            }
            Err(e) => {
                let _ = e.to_string();
                // A failed reader stays failed.
                assert!(reader.next_record().is_err());
                break;
            }
        }
    }
});
