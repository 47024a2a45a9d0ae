//! `SpillError`: every way writing, reading or merging a spill file can fail, naming file and offset.

use std::io;
use std::path::{Path, PathBuf};

/// An error from the spill writer, reader or merge. Every variant names the file; those that
/// concern a place in the file name the byte offset. I/O variants keep the `io::Error`.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// ENOSPC (`io::ErrorKind::StorageFull`): the disk (or its inodes) ran out.
    #[error("spill file {path}: no space left on device ({op} at offset {offset})", path = path.display())]
    StorageFull {
        path: PathBuf,
        op: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// EFBIG (`io::ErrorKind::FileTooLarge`), e.g. over `RLIMIT_FSIZE` with SIGXFSZ ignored.
    #[error("spill file {path}: file too large ({op} at offset {offset})", path = path.display())]
    FileTooLarge {
        path: PathBuf,
        op: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// EDQUOT (`io::ErrorKind::QuotaExceeded`).
    #[error("spill file {path}: disk quota exceeded ({op} at offset {offset})", path = path.display())]
    QuotaExceeded {
        path: PathBuf,
        op: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// EACCES/EPERM, or EROFS (`ReadOnlyFilesystem`); `kind` says which.
    #[error("spill file {path}: permission denied ({op}, {kind:?}): {source}", path = path.display())]
    PermissionDenied {
        path: PathBuf,
        op: &'static str,
        kind: io::ErrorKind,
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure.
    #[error("spill file {path}: {op} at offset {offset} failed ({kind:?}): {source}", path = path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        offset: u64,
        kind: io::ErrorKind,
        #[source]
        source: io::Error,
    },
    /// Not a spill file (wrong magic, unknown version or kind, bytes after the footer).
    #[error("spill file {path}: bad format at offset {offset}: {detail}", path = path.display())]
    BadFormat {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// The file ends early: empty, cut inside the header, or no footer (cut short, or its writer
    /// never finished). `offset` is where the bytes ran out.
    #[error("spill file {path}: truncated at offset {offset}: {detail}", path = path.display())]
    Truncated {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// A stored checksum or digest disagrees with the bytes. `what` is `header`, `frame`,
    /// `footer`, `payload crc32c` or `record hash sum`; `offset` is where that part starts.
    #[error(
        "spill file {path}: {what} checksum mismatch at offset {offset}: stored {stored:#x}, computed {computed:#x}",
        path = path.display()
    )]
    ChecksumMismatch {
        path: PathBuf,
        offset: u64,
        what: &'static str,
        stored: u64,
        computed: u64,
    },
    /// The structure disagrees with itself although the checksums that cover it passed (or
    /// before they can be checked: a frame length that runs past the frames), e.g. a record
    /// length running out of its frame, or record counts that differ from the footer's.
    #[error("spill file {path}: corrupt at offset {offset}: {detail}", path = path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// A record whose length differs from the file's fixed record size.
    #[error(
        "spill file {path}: record of {len} bytes, but the file holds fixed {expected}-byte records",
        path = path.display()
    )]
    RecordSize {
        path: PathBuf,
        len: usize,
        expected: u32,
    },
    /// A record longer than a frame can hold (a u32 payload length).
    #[error("spill file {path}: record of {len} bytes exceeds the {max}-byte limit", path = path.display())]
    RecordTooLarge { path: PathBuf, len: usize, max: u64 },
    /// A writer or reader used after it returned an error.
    #[error("spill file {path}: this {role} failed earlier and cannot be used", path = path.display())]
    Poisoned { path: PathBuf, role: &'static str },
    /// A frame failed to compress (the writer's codec refused it; the file is deleted).
    #[error("spill file {path}: cannot compress the frame at offset {offset}: {source}", path = path.display())]
    Codec {
        path: PathBuf,
        offset: u64,
        #[source]
        source: crate::codec::CodecError,
    },
    /// A writer option out of range.
    #[error("spill writer option {name} = {value} is invalid: {reason}")]
    InvalidOption {
        name: &'static str,
        value: u64,
        reason: &'static str,
    },
    /// Writing or reading stopped because the process received a signal
    /// ([`crate::interrupt`]); a writer dropped unfinished deletes its file.
    #[error(transparent)]
    Interrupted(#[from] crate::interrupt::Interrupted),
}

impl SpillError {
    /// Classifies an I/O error on `path` (`op` at `offset`) into its typed variant.
    pub(crate) fn io(path: &Path, op: &'static str, offset: u64, source: io::Error) -> Self {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::StorageFull => Self::StorageFull {
                path,
                op,
                offset,
                source,
            },
            io::ErrorKind::FileTooLarge => Self::FileTooLarge {
                path,
                op,
                offset,
                source,
            },
            io::ErrorKind::QuotaExceeded => Self::QuotaExceeded {
                path,
                op,
                offset,
                source,
            },
            kind @ (io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem) => {
                Self::PermissionDenied {
                    path,
                    op,
                    kind,
                    source,
                }
            }
            kind => Self::Io {
                path,
                op,
                offset,
                kind,
                source,
            },
        }
    }

    /// The file the error is about (`None` for [`SpillError::InvalidOption`] and
    /// [`SpillError::Interrupted`]).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::StorageFull { path, .. }
            | Self::FileTooLarge { path, .. }
            | Self::QuotaExceeded { path, .. }
            | Self::PermissionDenied { path, .. }
            | Self::Io { path, .. }
            | Self::BadFormat { path, .. }
            | Self::Truncated { path, .. }
            | Self::ChecksumMismatch { path, .. }
            | Self::Corrupt { path, .. }
            | Self::RecordSize { path, .. }
            | Self::RecordTooLarge { path, .. }
            | Self::Codec { path, .. }
            | Self::Poisoned { path, .. } => Some(path),
            Self::InvalidOption { .. } | Self::Interrupted(_) => None,
        }
    }

    /// The byte offset in the file the error is about, where there is one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::StorageFull { offset, .. }
            | Self::FileTooLarge { offset, .. }
            | Self::QuotaExceeded { offset, .. }
            | Self::Io { offset, .. }
            | Self::BadFormat { offset, .. }
            | Self::Truncated { offset, .. }
            | Self::ChecksumMismatch { offset, .. }
            | Self::Codec { offset, .. }
            | Self::Corrupt { offset, .. } => Some(*offset),
            _ => None,
        }
    }

    /// The `io::ErrorKind` of an I/O failure.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Self::StorageFull { source, .. }
            | Self::FileTooLarge { source, .. }
            | Self::QuotaExceeded { source, .. }
            | Self::PermissionDenied { source, .. }
            | Self::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}
