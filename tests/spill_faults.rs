//! Nothing left behind (docs/reliability.md tests 14, 17): a dropped or failed writer deletes its
//! file, and write failures (ENOSPC through `/dev/full` and a failpoint, EFBIG, EDQUOT, EIO,
//! a failed fsync) are typed errors naming the file and the offset.

use std::fs::File;
use std::io;
use std::path::Path;

use spillway::spill::{SpillError, SpillKind, SpillSink, SpillWriter, SpillWriterOptions};

mod skip_support;
use skip_support::skip;

/// A sink that accepts `budget` bytes, then fails with `errno` (after a short write, like a
/// filling disk). `fail_sync` makes `fsync` fail instead.
struct Failpoint {
    file: File,
    budget: u64,
    errno: i32,
    fail_sync: bool,
}

impl SpillSink for Failpoint {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let fits = (buf.len() as u64).min(self.budget) as usize;
        SpillSink::write_all(&mut self.file, &buf[..fits])?;
        self.budget -= fits as u64;
        if fits < buf.len() {
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        Ok(())
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        if self.fail_sync {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.sync()
    }
}

fn opts() -> SpillWriterOptions {
    let mut o = SpillWriterOptions::new(SpillKind::SortRun);
    o.buffer_bytes = 4096;
    o
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

/// Writes 10,000 56-byte records through a failpoint of `budget` bytes; returns the error.
fn write_through_failpoint(dir: &Path, budget: u64, errno: i32, fail_sync: bool) -> SpillError {
    let path = dir.join("fail.spill");
    let mut o = opts();
    o.sync_on_finish = fail_sync;
    let mut w = SpillWriter::create_with_sink(&path, o, |file| {
        Ok(Failpoint {
            file,
            budget,
            errno,
            fail_sync,
        })
    })
    .unwrap();
    let mut err = None;
    for i in 0..10_000u64 {
        if let Err(e) = w.write_record(&[i as u8; 56]) {
            assert!(
                !path.exists(),
                "partial file deleted as soon as the write failed"
            );
            // The writer is now unusable, and says so.
            let again = w.write_record(&[0; 56]).unwrap_err();
            assert!(matches!(again, SpillError::Poisoned { .. }), "{again}");
            err = Some(e);
            break;
        }
    }
    let err = match err {
        Some(e) => e,
        None => w.finish().unwrap_err(),
    };
    assert!(!path.exists(), "partial file deleted");
    assert_eq!(err.path(), Some(path.as_path()));
    assert!(err.to_string().contains("fail.spill"), "{err}");
    err
}

#[test]
fn enospc_at_many_points_is_storage_full_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // File of ~600 KB: fail in the header, the first buffer, mid-way, and in the footer.
    for budget in [0u64, 10, 4095, 4096, 4097, 100_000, 560_000, 600_000] {
        let e = write_through_failpoint(dir.path(), budget, libc::ENOSPC, false);
        match e {
            SpillError::StorageFull { offset, op, .. } => {
                assert_eq!(op, "write", "budget {budget}");
                // The failed write started at a buffer boundary at or before the budget.
                assert!(
                    offset <= budget && offset % 4096 == 0,
                    "budget {budget}: {offset}"
                );
            }
            other => panic!("budget {budget}: {other}"),
        }
        assert_empty(dir.path());
    }
}

#[test]
fn efbig_edquot_eio_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let e = write_through_failpoint(dir.path(), 50_000, libc::EFBIG, false);
    assert!(matches!(e, SpillError::FileTooLarge { .. }), "{e}");
    let e = write_through_failpoint(dir.path(), 50_000, libc::EDQUOT, false);
    assert!(matches!(e, SpillError::QuotaExceeded { .. }), "{e}");
    let e = write_through_failpoint(dir.path(), 50_000, libc::EIO, false);
    let eio = io::Error::from_raw_os_error(libc::EIO).kind();
    assert!(
        matches!(e, SpillError::Io { kind, offset: 49_152, .. } if kind == eio),
        "{e}"
    );
    assert_eq!(e.io_kind(), Some(eio));
    assert_empty(dir.path());
}

#[test]
fn failed_fsync_is_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let e = write_through_failpoint(dir.path(), u64::MAX, libc::EIO, true);
    assert!(matches!(e, SpillError::Io { op: "fsync", .. }), "{e}");
    assert_empty(dir.path());
}

#[test]
fn dev_full_is_storage_full_and_leaves_nothing() {
    if !Path::new("/dev/full").exists() {
        return skip("no /dev/full on this system (the failpoint tests cover ENOSPC)");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.spill");
    // The writer creates and owns `path`, but its bytes go to /dev/full (real ENOSPC).
    let mut w = SpillWriter::create_with_sink(&path, opts(), |_file| {
        std::fs::OpenOptions::new().write(true).open("/dev/full")
    })
    .unwrap();
    let mut result = Ok(());
    for i in 0..1000u32 {
        result = w.write_record(&i.to_le_bytes());
        if result.is_err() {
            break;
        }
    }
    let e = match result {
        Err(e) => e,
        Ok(()) => w.finish().unwrap_err(),
    };
    assert!(
        matches!(e, SpillError::StorageFull { offset: 0, .. }),
        "{e}"
    );
    assert_eq!(e.io_kind(), Some(io::ErrorKind::StorageFull));
    assert!(e.to_string().contains("full.spill"), "{e}");
    assert!(e.to_string().contains("no space left"), "{e}");
    assert_empty(dir.path());
}

#[test]
fn dropped_unfinished_writer_deletes_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.spill");
    let mut w = SpillWriter::create(&path, opts()).unwrap();
    for i in 0..50_000u32 {
        w.write_record(&i.to_le_bytes()).unwrap();
    }
    assert!(path.exists());
    drop(w);
    assert_empty(dir.path());

    // Also when dropped straight after create, and when unwinding from a panic.
    drop(SpillWriter::create(&path, opts()).unwrap());
    assert_empty(dir.path());
    let p = path.clone();
    let r = std::panic::catch_unwind(move || {
        let mut w = SpillWriter::create(&p, opts()).unwrap();
        w.write_record(b"x").unwrap();
        panic!("task failed mid-spill");
    });
    assert!(r.is_err());
    assert_empty(dir.path());
}

#[test]
fn bad_temp_dirs_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Missing directory.
    let missing = dir.path().join("no-such-dir").join("a.spill");
    let e = SpillWriter::create(&missing, opts()).unwrap_err();
    assert!(
        matches!(
            e,
            SpillError::Io {
                op: "create",
                kind: io::ErrorKind::NotFound,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("no-such-dir"), "{e}");
    // A path component that is a file (ENOTDIR).
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let e = SpillWriter::create(file.join("a.spill"), opts()).unwrap_err();
    assert_eq!(e.io_kind(), Some(io::ErrorKind::NotADirectory), "{e}");
    // A sink that cannot be opened: the created file is removed again.
    let path = dir.path().join("nosink.spill");
    let e = SpillWriter::create_with_sink(&path, opts(), |_f| -> io::Result<File> {
        Err(io::Error::from_raw_os_error(libc::EMFILE))
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            SpillError::Io {
                op: "open sink",
                ..
            }
        ),
        "{e}"
    );
    assert!(!path.exists());
}

/// A compressing writer through the same failpoint: ENOSPC in the header, in a compressed
/// frame, and in the footer is `StorageFull` at a write that started at or before the budget,
/// and the partial file is gone.
#[test]
fn enospc_in_a_compressed_file_is_storage_full_and_leaves_nothing() {
    use spillway::codec::{Codec, CodecName};
    let dir = tempfile::tempdir().unwrap();
    for name in [CodecName::Lz4, CodecName::Snappy, CodecName::Zstd] {
        // The file the writer makes when nothing fails: its length bounds the budgets.
        let full = dir.path().join("full.spill");
        let mut o = opts();
        o.codec = Some(Codec::with_defaults(name));
        let mut w = SpillWriter::create(&full, o.clone()).unwrap();
        let record = |i: u64| -> Vec<u8> {
            format!("{i:>12} spill shuffle block record of text ").into_bytes()
        };
        for i in 0..20_000u64 {
            w.write_record(&record(i)).unwrap();
        }
        let len = w.finish().unwrap().file_bytes;
        std::fs::remove_file(&full).unwrap();
        for budget in [0, 10, 40, 4096, len / 2, len - 65, len - 1] {
            let path = dir.path().join("fail.spill");
            // The header is only buffered: creating never fails here.
            let mut w = SpillWriter::create_with_sink(&path, o.clone(), |file| {
                Ok(Failpoint {
                    file,
                    budget,
                    errno: libc::ENOSPC,
                    fail_sync: false,
                })
            })
            .unwrap();
            let failed = (0..20_000u64).find_map(|i| w.write_record(&record(i)).err());
            let e = match failed {
                Some(e) => e,
                None => w.finish().unwrap_err(),
            };
            match e {
                SpillError::StorageFull { offset, .. } => {
                    assert!(offset <= budget, "{name} budget {budget}: {offset}")
                }
                other => panic!("{name} budget {budget}: {other}"),
            }
            assert_empty(dir.path());
        }
    }
}
