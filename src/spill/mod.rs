//! Spill and block files: framed, checksummed records; their writer, verifying reader and k-way merge.
//!
//! One file format serves cached blocks dropped to disk (Spark's `DiskStore`) and the spills of
//! sorts and aggregations (`DiskBlockObjectWriter` under `UnsafeSorterSpillWriter` and
//! `ExternalSorter`, docs/spark-model.md §8.4–§8.5, §9). Unlike Spark's spill files, every byte is covered by a
//! CRC32C and the file carries digests of its records, so a spill that comes back damaged is an
//! error naming the file and offset, never a wrong row. Like Spark's, a file may be compressed
//! a block at a time with the codec of `spark.io.compression.codec` (docs/spark-model.md §19):
//! the sort and aggregation spills are when `spark.shuffle.spill.compress` is true (the
//! default); cached blocks on disk are not (yet).
//!
//! # Format, version 1
//!
//! All integers little-endian. `file = header ‖ frame* ‖ footer`. An uncompressed file (codec
//! byte 0) is `file_bytes = 32 + 12·frames + payload_bytes + 64`, byte for byte what spillway
//! wrote before files could be compressed; a compressed one is
//! `file_bytes = 32 + 16·frames + stored_payload_bytes + 64`. Compression is the codec byte and
//! a wider frame header, not a new version: a reader from before codecs rejects a compressed
//! file as `BadFormat` (its reserved byte 11 is not 0), and this reader rejects a codec byte it
//! does not know the same way.
//!
//! **Header**, 32 bytes at offset 0:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"SPILLWY1"` |
//! | 8 | 2 | format version, `1` |
//! | 10 | 1 | kind: `1` block, `2` sort run, `3` aggregation spill ([`SpillKind`]) |
//! | 11 | 1 | codec ([`CodecName::id`](crate::codec::CodecName::id)): `0` none, `1` lz4, `2` snappy, `3` zstd; any other → `BadFormat` |
//! | 12 | 4 | fixed record size in bytes; `0` = variable-size records |
//! | 16 | 8 | tag, set by the caller (e.g. a block id hash) |
//! | 24 | 4 | reserved, `0` |
//! | 28 | 4 | CRC32C of bytes 0..28 |
//!
//! **Frame**, a batch of at most `spark.shuffle.spill.batchSize` (10,000) records whose raw
//! payload is at most 1 MiB — and, in a compressed file, at most the codec's block
//! (`spark.io.compression.lz4.blockSize`, `….snappy.blockSize`, `….zstd.bufferSize`: 32 KiB by
//! default), as Spark's codecs compress 32 KiB at a time (a single larger record gets a frame
//! of its own); never empty. Uncompressed (codec byte 0):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | payload length `L` in bytes |
//! | 4 | 4 | record count `n` |
//! | 8 | 4 | CRC32C of `all payloads so far, this one last ‖ le32 L ‖ le32 n ‖ le64 frame offset ‖ le32 header CRC` |
//! | 12 | `L` | payload: the `n` records back to back |
//!
//! Compressed (codec byte not 0):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | stored length `S` in bytes |
//! | 4 | 4 | raw length `R`: the payload's bytes once decompressed (`S ≤ R`) |
//! | 8 | 4 | record count `n` |
//! | 12 | 4 | CRC32C of `all stored payloads so far, this one last ‖ le32 S ‖ le32 R ‖ le32 n ‖ le64 frame offset ‖ le32 header CRC` |
//! | 16 | `S` | stored payload: the `n` records back to back, compressed as one block of the codec; when that does not shrink them (`S = R`), the records as they are |
//!
//! A variable-size record is `le32 length ‖ bytes`; a fixed-size record is just its bytes
//! (`R = L = n · size`). The frame CRC continues the running CRC of the stored payloads before
//! it and covers the frame's header fields, its position in the file and the file's header,
//! so a damaged length, a frame moved, reordered or dropped, or a frame spliced in from another
//! file all fail the check before any of its records is handed out — and, compressed, before a
//! byte of it is decompressed: the CRC is over the stored bytes. (Frames are therefore checked
//! in order, as a spill is read; the running CRC at the last frame is the footer's digest.)
//!
//! **Footer**, 64 bytes, always the last bytes of the file (one read finds it):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | marker `b"SPILLEND"` |
//! | 8 | 8 | footer offset (= file length − 64) |
//! | 16 | 8 | record count |
//! | 24 | 8 | raw payload bytes (all frames, before compression) |
//! | 32 | 8 | order-independent digest: wrapping sum of [`record_hash`] of every raw record |
//! | 40 | 8 | frame count |
//! | 48 | 4 | order-dependent digest: CRC32C of all **stored** payloads in file order |
//! | 52 | 4 | largest raw frame payload (the reader's record buffer) |
//! | 56 | 4 | largest stored frame payload in a compressed file; `0` uncompressed |
//! | 60 | 4 | CRC32C of bytes 0..60 |
//!
//! The stored payload bytes are not in the footer: they are what the frames leave of the file
//! (`footer offset − 32 − 16·frames`), and the reader checks that the frames it walks add up
//! to them. The order-dependent CRC is over the stored bytes so that one CRC pass per frame
//! serves the frame check and the digest, before decompression; the raw records are covered
//! by the record count and the order-independent hash sum, which the reader recomputes from
//! the decompressed records.
//!
//! **Where this differs from Spark's bytes.** Spark's `LZ4BlockOutputStream` writes a 21-byte
//! block header (magic `LZ4Block`, a token with the method and level, compressed and raw
//! lengths, and an xxHash32 of the raw block), snappy's stream and zstd's frames their own;
//! spillway's frame header carries the stored and raw lengths, the record count and a CRC32C of
//! the stored bytes chained across frames and bound to the file. The compressed blocks
//! themselves are the codecs' (lz4 block format, snappy raw format, a zstd frame per block,
//! each block on its own: zstd does not keep its window across blocks as Spark's stream does),
//! and a block that does not shrink is stored raw for every codec, as `LZ4BlockOutputStream`
//! does for lz4. Spark wraps the serialized stream; spillway compresses its frames of records.
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
//!   its records (and before it is decompressed); a frame length running past the frames →
//!   `Corrupt`; a compressed frame whose CRC matched but whose bytes do not decompress to its
//!   raw length (a writer's bug, not damage) → `Corrupt`;
//! - at the end, counts or either digest differing from the footer → `Corrupt` /
//!   `ChecksumMismatch`.
//!
//! Records already handed out before an error are always records that were written, in order.
//!
//! # Writing
//!
//! [`SpillWriter`] keeps exactly one buffer of `spark.shuffle.file.buffer` bytes (32 KiB); see
//! [`SpillWriter`] for how frame headers are filled in. With a codec
//! ([`SpillWriterOptions::codec`]) it also keeps a frame buffer of one block, and its file
//! buffer has room for one compressed frame more, so that frames are compressed straight into
//! it; both are allocated once. A writer dropped before
//! [`SpillWriter::finish`], or one whose write fails, deletes its file. No `fsync` unless
//! [`SpillWriterOptions::sync_on_finish`]: a spill does not outlive the process.

mod error;
mod format;
mod merge;
mod reader;
mod writer;

pub use error::SpillError;
pub use format::{
    COMPRESSED_FRAME_HEADER_BYTES, FOOTER_BYTES, FRAME_HEADER_BYTES, HEADER_BYTES,
    RECORD_PREFIX_BYTES, RecordDigest, SpillFileInfo, SpillKind, frame_header_bytes, record_hash,
};
pub use merge::{MemoryRun, MergeError, SortedMerge, SortedRun, merge_sorted_runs};
pub use reader::{SpillReader, verify_file};
pub(crate) use writer::copy_short;
pub use writer::{
    DEFAULT_BATCH_RECORDS, DEFAULT_BUFFER_BYTES, DEFAULT_MAX_FRAME_PAYLOAD_BYTES, SpillSink,
    SpillWriter, SpillWriterOptions,
};
