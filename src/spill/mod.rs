//! Spill and block files: framed, checksummed records; their writer, verifying reader and k-way merge.
//!
//! One file format serves cached blocks dropped to disk (Spark's `DiskStore`) and the spills of
//! sorts and aggregations (`DiskBlockObjectWriter` under `UnsafeSorterSpillWriter` and
//! `ExternalSorter`, docs/spark-model.md §8.4–§8.5, §9). Unlike Spark's spill files, every byte is covered by a
//! CRC32C and the file carries digests of its records, so a spill that comes back damaged is an
//! error naming the file and offset, never a wrong row.
//!
//! # Format, version 1
//!
//! All integers little-endian. `file = header ‖ frame* ‖ footer`, so
//! `file_bytes = 32 + 12·frames + payload_bytes + 64`.
//!
//! **Header**, 32 bytes at offset 0:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"SPILLWY1"` |
//! | 8 | 2 | format version, `1` |
//! | 10 | 1 | kind: `1` block, `2` sort run, `3` aggregation spill ([`SpillKind`]) |
//! | 11 | 1 | reserved, `0` |
//! | 12 | 4 | fixed record size in bytes; `0` = variable-size records |
//! | 16 | 8 | tag, set by the caller (e.g. a block id hash) |
//! | 24 | 4 | reserved, `0` |
//! | 28 | 4 | CRC32C of bytes 0..28 |
//!
//! **Frame**, a batch of at most `spark.shuffle.spill.batchSize` (10,000) records whose payload
//! is at most 1 MiB (a single larger record gets a frame of its own); never empty:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | payload length `L` in bytes |
//! | 4 | 4 | record count `n` |
//! | 8 | 4 | CRC32C of `all payloads so far, this one last ‖ le32 L ‖ le32 n ‖ le64 frame offset ‖ le32 header CRC` |
//! | 12 | `L` | payload: the `n` records back to back |
//!
//! A variable-size record is `le32 length ‖ bytes`; a fixed-size record is just its bytes
//! (`L = n · size`). The frame CRC continues the running CRC of the payloads before it and
//! covers the frame's header fields, its position in the file and the file's header, so a
//! damaged length, a frame moved, reordered or dropped, or a frame spliced in from another file
//! all fail the check before any of its records is handed out. (Frames are therefore checked in
//! order, as a spill is read; the running CRC at the last frame is the footer's digest.)
//!
//! **Footer**, 64 bytes, always the last bytes of the file (one read finds it):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | marker `b"SPILLEND"` |
//! | 8 | 8 | footer offset (= file length − 64) |
//! | 16 | 8 | record count |
//! | 24 | 8 | payload bytes (all frames) |
//! | 32 | 8 | order-independent digest: wrapping sum of [`record_hash`] of every record |
//! | 40 | 8 | frame count |
//! | 48 | 4 | order-dependent digest: CRC32C of all payloads in file order |
//! | 52 | 4 | largest frame payload (the reader's buffer size) |
//! | 56 | 4 | reserved, `0` |
//! | 60 | 4 | CRC32C of bytes 0..60 |
//!
//! The order-independent digest ([`RecordDigest`]: count + hash sum) is what lets a sort's
//! output be checked against its input, and a merge's output against its runs.
//!
//! # Reading: what each kind of damage gives
//!
//! - empty, or shorter than the header → [`SpillError::Truncated`] (or `BadFormat` when the
//!   bytes present are not a prefix of the magic);
//! - magic unlike ours → `BadFormat`; magic a few bits off, or header CRC wrong →
//!   `ChecksumMismatch` (`header…`);
//! - no footer at the end (cut short, or the writer never finished — e.g. killed mid-spill) →
//!   `Truncated`; a valid footer followed by stray bytes → `BadFormat`; a footer whose CRC or
//!   marker is damaged → `ChecksumMismatch` (`footer`); footer numbers that do not add up to
//!   the file's length → `Corrupt`;
//! - a frame whose CRC fails → `ChecksumMismatch` (`frame`) at the frame's offset, before any of
//!   its records; a frame length running past the frames → `Corrupt`;
//! - at the end, counts or either digest differing from the footer → `Corrupt` /
//!   `ChecksumMismatch`.
//!
//! Records already handed out before an error are always records that were written, in order.
//!
//! # Writing
//!
//! [`SpillWriter`] keeps exactly one buffer of `spark.shuffle.file.buffer` bytes (32 KiB); see
//! [`SpillWriter`] for how frame headers are filled in. A writer dropped before
//! [`SpillWriter::finish`], or one whose write fails, deletes its file. No `fsync` unless
//! [`SpillWriterOptions::sync_on_finish`]: a spill does not outlive the process.

mod error;
mod format;
mod merge;
mod reader;
mod writer;

pub use error::SpillError;
pub use format::{
    FOOTER_BYTES, FRAME_HEADER_BYTES, HEADER_BYTES, RECORD_PREFIX_BYTES, RecordDigest,
    SpillFileInfo, SpillKind, record_hash,
};
pub use merge::{MemoryRun, MergeError, SortedMerge, SortedRun, merge_sorted_runs};
pub use reader::{SpillReader, verify_file};
pub use writer::{
    DEFAULT_BATCH_RECORDS, DEFAULT_BUFFER_BYTES, DEFAULT_MAX_FRAME_PAYLOAD_BYTES, SpillSink,
    SpillWriter, SpillWriterOptions,
};
