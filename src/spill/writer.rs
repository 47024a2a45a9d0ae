//! `SpillWriter`: frames records through one buffer of `spark.shuffle.file.buffer` bytes.
//!
//! Uncompressed, memory is exactly that buffer: a frame's 12-byte header is reserved in the
//! byte stream when the frame starts and filled in when it ends, in the buffer if it is still
//! there, else with one `pwrite` at its offset (one per frame larger than the buffer). Each
//! record costs two `memcpy`s into the buffer and one [`record_hash`]; the running CRC32C runs
//! once over each buffer before it is written, and a frame's CRC is that running CRC at the
//! frame's end. No syscall and no allocation per record.
//!
//! With a codec ([`SpillWriterOptions::codec`]) the records of the open frame gather in a
//! frame buffer of one codec block (`min(max_frame_payload_bytes, block_bytes)` + 1 bytes,
//! the same fast path fills it); when the frame ends it is compressed straight into the file
//! buffer behind its header — which is `spark.shuffle.file.buffer` plus room for one frame, and
//! is written out once it holds a `spark.shuffle.file.buffer`'s worth — and the CRC runs over
//! the compressed bytes where they lie. So a compressing writer holds two buffers, the frame
//! and the file buffer, like Spark's `LZ4BlockOutputStream` over its `BufferedOutputStream`
//! (which copies the compressed block once more), and allocates nothing per frame: only a
//! record larger than a block grows the buffers, for its own frame.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::error::SpillError;
use super::format::{
    COMPRESSED_FRAME_HEADER_BYTES, FOOTER_BYTES, FRAME_HEADER_BYTES, Footer, HEADER_BYTES, Header,
    RECORD_PREFIX_BYTES, RecordDigest, SpillFileInfo, SpillKind, encode_compressed_frame_header,
    encode_frame_header, frame_crc, frame_header_bytes, record_hash,
};
use crate::codec::{Codec, Compressor};

/// `spark.shuffle.file.buffer` default, 32 KiB.
pub const DEFAULT_BUFFER_BYTES: usize = 32 * 1024;
/// `spark.shuffle.spill.batchSize` default: records per frame.
pub const DEFAULT_BATCH_RECORDS: u32 = 10_000;
/// Frame payload cap (a record larger than this gets a frame of its own). Matches
/// `spark.unsafe.sorter.spill.reader.buffer.size` (1 MiB), the read buffer of Spark's
/// `UnsafeSorterSpillReader`.
pub const DEFAULT_MAX_FRAME_PAYLOAD_BYTES: u32 = 1024 * 1024;

/// How a [`SpillWriter`] lays out and writes its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillWriterOptions {
    pub kind: SpillKind,
    /// Stored in the header for the caller (e.g. a block id hash).
    pub tag: u64,
    /// `Some(n)`: every record is exactly `n` bytes and carries no length prefix.
    pub fixed_record_bytes: Option<u32>,
    /// `spark.shuffle.file.buffer` in bytes (default 32 KiB): the write buffer, and the size of
    /// every `write` call but the last.
    pub buffer_bytes: usize,
    /// `spark.shuffle.spill.batchSize` (default 10,000): records per frame at most.
    pub batch_records: u32,
    /// Payload bytes per frame at most (default 1 MiB), unless one record is larger.
    pub max_frame_payload_bytes: u32,
    /// `fsync` before `finish` returns. Off by default: a spill does not outlive the process
    /// (Spark's `spark.shuffle.sync` is false too).
    pub sync_on_finish: bool,
    /// Compress each frame with this codec (`None`, the default: frames are stored as they
    /// are, and the file is byte for byte what writers before codecs wrote). A frame then
    /// holds at most `codec.block_bytes` raw bytes, as Spark's codecs compress a block at a
    /// time; a larger record still gets a frame of its own.
    pub codec: Option<Codec>,
}

impl SpillWriterOptions {
    /// Spark's defaults for a file of `kind`.
    pub fn new(kind: SpillKind) -> Self {
        Self {
            kind,
            tag: 0,
            fixed_record_bytes: None,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            batch_records: DEFAULT_BATCH_RECORDS,
            max_frame_payload_bytes: DEFAULT_MAX_FRAME_PAYLOAD_BYTES,
            sync_on_finish: false,
            codec: None,
        }
    }

    /// The most raw payload bytes a frame holds (unless one record is larger): the frame
    /// cap, and with a codec also its block size.
    pub fn frame_cap_bytes(&self) -> u32 {
        match self.codec {
            Some(c) => self
                .max_frame_payload_bytes
                .min(u32::try_from(c.block_bytes).unwrap_or(u32::MAX)),
            None => self.max_frame_payload_bytes,
        }
    }

    fn validate(&self) -> Result<(), SpillError> {
        let bad = |name, value: u64, reason| {
            Err(SpillError::InvalidOption {
                name,
                value,
                reason,
            })
        };
        if self.buffer_bytes < FRAME_HEADER_BYTES || self.buffer_bytes > i32::MAX as usize {
            return bad(
                "spark.shuffle.file.buffer",
                self.buffer_bytes as u64,
                "must be between 12 bytes and 2 GiB",
            );
        }
        if self.batch_records == 0 {
            return bad("spark.shuffle.spill.batchSize", 0, "must be positive");
        }
        if self.max_frame_payload_bytes == 0 {
            return bad("max_frame_payload_bytes", 0, "must be positive");
        }
        if let Some(c) = self.codec
            && c.block_bytes == 0
        {
            return bad("codec block_bytes", 0, "must be positive");
        }
        if self.fixed_record_bytes == Some(0) {
            return bad(
                "fixed_record_bytes",
                0,
                "must be positive (None = variable)",
            );
        }
        Ok(())
    }
}

/// `dst.copy_from_slice(src)` without a call to `memcpy` for short slices (a 56-byte record
/// is four 16-byte moves), which is most of a spill's records.
#[inline(always)]
pub(crate) fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    assert_eq!(dst.len(), n, "copy_short: lengths differ");
    if n > 64 {
        dst.copy_from_slice(src);
    } else if n >= 16 {
        let mut i = 0;
        while i + 16 <= n {
            dst[i..i + 16].copy_from_slice(&src[i..i + 16]);
            i += 16;
        }
        if i < n {
            dst[n - 16..].copy_from_slice(&src[n - 16..]);
        }
    } else if n >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..].copy_from_slice(&src[n - 4..]);
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// Where a [`SpillWriter`]'s bytes go: the file it created, or a wrapper around it (a
/// failpoint, a throttle). Appends are sequential; `write_all_at` patches an earlier offset.
pub trait SpillSink {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
}

impl SpillSink for File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

/// Writes one spill file. Create it, [`write_record`](Self::write_record) any number of
/// records, then [`finish`](Self::finish). The file is deleted if the writer is dropped
/// unfinished or any write fails: no partial file is ever left behind.
pub struct SpillWriter<S: SpillSink = File> {
    path: PathBuf,
    /// `None` once finished or failed.
    sink: Option<S>,
    /// Finished or failed: nothing left to delete on drop.
    done: bool,
    opts: SpillWriterOptions,
    fixed: u32,
    header_crc: u32,
    /// Raw payload bytes per frame at most ([`SpillWriterOptions::frame_cap_bytes`]).
    frame_cap: u32,
    /// Uncompressed: the file buffer, `buffer_bytes` long. With a codec: the open frame's raw
    /// records, `frame_cap + 1` long (so `end < buf.len()` is `end <= frame_cap`, and the
    /// fast path below serves both). `buf[..len]` is filled.
    buf: Box<[u8]>,
    len: usize,
    /// File offset of `buf[0]` (uncompressed only).
    buf_offset: u64,
    /// With a codec: the compressor and the file buffer; `None`: frames stored as they are.
    z: Option<Box<Compressed>>,
    // The open frame (`frame_records == 0`: none).
    frame_offset: u64,
    frame_records: u32,
    frame_payload: u32,
    /// `buf[crc_from..]` is payload of the open frame not yet in `payload_crc32c`.
    crc_from: usize,
    crc_active: bool,
    // Totals.
    records: u64,
    payload_bytes: u64,
    stored_bytes: u64,
    max_stored: u32,
    frames: u64,
    payload_crc32c: u32,
    record_hash_sum: u64,
    /// The caller's digest of the records to come ([`Self::use_known_digest`]).
    known: Option<RecordDigest>,
    max_frame_payload: u32,
    write_ns: u64,
}

/// What a compressing writer holds besides its frame buffer.
struct Compressed {
    compressor: Compressor,
    /// The file buffer: header, frame headers, stored payloads, footer.
    file: FileBuf,
}

/// A compressing writer's file buffer: `buffer_bytes` plus room for one more frame (its header
/// and the codec's bound for a block), so that a frame is compressed straight into it, with no
/// copy of the compressed bytes. It is written out once it holds `buffer_bytes` or more, so
/// every write but the last is at least `spark.shuffle.file.buffer` long.
struct FileBuf {
    out: Box<[u8]>,
    out_len: usize,
    /// File offset of `out[0]`.
    out_offset: u64,
    /// `buffer_bytes`: written out once it holds this much.
    flush_at: usize,
    /// `out`'s length for a frame of one block (a frame with a record larger than a block
    /// grows it; the next write shrinks it back).
    normal_len: usize,
}

/// A failure inside a compressing writer's frame, before the writer is told.
enum FrameFailure {
    Codec(u64, crate::codec::CodecError),
    Io(&'static str, u64, io::Error),
}

impl FileBuf {
    fn new(buffer_bytes: usize, codec: &Codec, frame_cap: usize) -> FileBuf {
        let normal_len =
            buffer_bytes + COMPRESSED_FRAME_HEADER_BYTES + codec.max_compressed_len(frame_cap);
        FileBuf {
            out: vec![0u8; normal_len].into_boxed_slice(),
            out_len: 0,
            out_offset: 0,
            flush_at: buffer_bytes,
            normal_len,
        }
    }

    /// Appends `bytes` (the file header, the footer) to the buffer, writing it out each time
    /// it fills.
    fn emit<S: SpillSink>(
        &mut self,
        sink: &mut S,
        write_ns: &mut u64,
        mut bytes: &[u8],
    ) -> Result<(), FrameFailure> {
        loop {
            let free = self.out.len() - self.out_len;
            let k = bytes.len().min(free);
            self.out[self.out_len..self.out_len + k].copy_from_slice(&bytes[..k]);
            self.out_len += k;
            bytes = &bytes[k..];
            if self.out_len >= self.flush_at {
                self.flush(sink, write_ns)?;
            }
            if bytes.is_empty() {
                return Ok(());
            }
        }
    }

    /// Room for `bytes` more at the end of the buffer: written out first if they do not fit,
    /// and grown if they would not fit an empty buffer.
    fn reserve<S: SpillSink>(
        &mut self,
        sink: &mut S,
        write_ns: &mut u64,
        bytes: usize,
    ) -> Result<(), FrameFailure> {
        if self.out.len() - self.out_len < bytes {
            self.flush(sink, write_ns)?;
            if self.out.len() < bytes {
                self.out = vec![0u8; bytes].into_boxed_slice();
            }
        }
        Ok(())
    }

    /// Writes the buffer to the sink (and gives back the room a large record took).
    fn flush<S: SpillSink>(
        &mut self,
        sink: &mut S,
        write_ns: &mut u64,
    ) -> Result<(), FrameFailure> {
        if self.out_len == 0 {
            return Ok(());
        }
        let t = Instant::now();
        let r = sink.write_all(&self.out[..self.out_len]);
        *write_ns += t.elapsed().as_nanos() as u64;
        r.map_err(|e| FrameFailure::Io("write", self.out_offset, e))?;
        self.out_offset += self.out_len as u64;
        self.out_len = 0;
        if self.out.len() > self.normal_len {
            self.out = vec![0u8; self.normal_len].into_boxed_slice();
        }
        Ok(())
    }
}

impl SpillWriter<File> {
    /// Creates `path` (it must not exist; mode 0600) and writes the header into the buffer.
    pub fn create(path: impl AsRef<Path>, opts: SpillWriterOptions) -> Result<Self, SpillError> {
        Self::create_with_sink(path, opts, Ok)
    }
}

impl<S: SpillSink> SpillWriter<S> {
    /// Like [`create`](SpillWriter::create), with the created file handed to `wrap` to build
    /// the sink (a failpoint in tests). The writer still owns `path` and deletes it on failure.
    pub fn create_with_sink(
        path: impl AsRef<Path>,
        opts: SpillWriterOptions,
        wrap: impl FnOnce(File) -> io::Result<S>,
    ) -> Result<Self, SpillError> {
        opts.validate()?;
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| SpillError::io(&path, "create", 0, e))?;
        let sink = match wrap(file) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(SpillError::io(&path, "open sink", 0, e));
            }
        };
        let fixed = opts.fixed_record_bytes.unwrap_or(0);
        let (header, header_crc) = Header {
            kind: opts.kind,
            fixed_record_bytes: fixed,
            tag: opts.tag,
            codec: opts.codec.map(|c| c.name),
        }
        .encode();
        let frame_cap = opts.frame_cap_bytes();
        let (buf_len, z) = match opts.codec {
            Some(codec) => (
                frame_cap as usize + 1,
                Some(Box::new(Compressed {
                    compressor: codec.compressor(),
                    file: FileBuf::new(opts.buffer_bytes, &codec, frame_cap as usize),
                })),
            ),
            None => (opts.buffer_bytes, None),
        };
        let mut w = SpillWriter {
            path,
            sink: Some(sink),
            done: false,
            fixed,
            header_crc,
            frame_cap,
            buf: vec![0u8; buf_len].into_boxed_slice(),
            len: 0,
            opts,
            buf_offset: 0,
            z,
            frame_offset: 0,
            frame_records: 0,
            frame_payload: 0,
            crc_from: 0,
            crc_active: false,
            records: 0,
            payload_bytes: 0,
            stored_bytes: 0,
            max_stored: 0,
            frames: 0,
            payload_crc32c: 0,
            record_hash_sum: 0,
            known: None,
            max_frame_payload: 0,
            write_ns: 0,
        };
        w.put_file(&header)?;
        Ok(w)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes in the file once everything written so far reaches it (footer excluded; with a
    /// codec, the open frame too: its size is known once it is compressed).
    pub fn bytes_written(&self) -> u64 {
        match &self.z {
            Some(z) => z.file.out_offset + z.file.out_len as u64,
            None => self.buf_offset + self.len as u64,
        }
    }

    /// Takes the digest of the records about to be written from the caller, who computed it
    /// when they were produced (a sorter as records are inserted, the memory store as a block
    /// is cached): the writer then does not hash each record again, and the footer carries
    /// this digest. Call before the first record. Nothing is trusted blindly: the count is
    /// checked at [`finish`](Self::finish), every reader checks the records against the digest,
    /// so a record that changed in memory since fails its read, and builds with debug
    /// assertions (the tests) hash anyway and check the sum at `finish`.
    pub fn use_known_digest(&mut self, digest: RecordDigest) {
        assert_eq!(self.records, 0, "use_known_digest before the first record");
        self.known = Some(digest);
    }

    /// Appends one record. On error the file is already deleted and the writer is unusable.
    #[inline]
    pub fn write_record(&mut self, record: &[u8]) -> Result<(), SpillError> {
        // Fast path, most records: the open frame takes one more and the buffer has room for
        // it whole, so no frame starts or ends and nothing is written out.
        let len = record.len();
        let prefix = if self.fixed == 0 {
            RECORD_PREFIX_BYTES
        } else {
            0
        };
        let framed = len + prefix;
        let end = self.len + framed;
        if self.frame_records != 0
            && self.frame_records < self.opts.batch_records
            && self.frame_payload as usize + framed <= self.frame_cap as usize
            && end < self.buf.len()
            && (self.fixed == 0 || len == self.fixed as usize)
            && self.sink.is_some()
        {
            let dst = &mut self.buf[self.len..end];
            if prefix != 0 {
                dst[..RECORD_PREFIX_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
            }
            copy_short(&mut dst[prefix..], record);
            self.len = end;
            self.count(record, framed as u32);
            return Ok(());
        }
        self.write_record_slow(record)
    }

    #[inline(never)]
    fn write_record_slow(&mut self, record: &[u8]) -> Result<(), SpillError> {
        if self.sink.is_none() {
            return Err(self.poisoned());
        }
        let len = record.len();
        let record_bytes = if self.fixed != 0 {
            if len != self.fixed as usize {
                return Err(SpillError::RecordSize {
                    path: self.path.clone(),
                    len,
                    expected: self.fixed,
                });
            }
            len as u64
        } else {
            len as u64 + RECORD_PREFIX_BYTES as u64
        };
        if record_bytes > u64::from(u32::MAX) {
            return Err(SpillError::RecordTooLarge {
                path: self.path.clone(),
                len,
                max: u64::from(u32::MAX) - RECORD_PREFIX_BYTES as u64,
            });
        }
        if self.frame_records > 0
            && (self.frame_records == self.opts.batch_records
                || u64::from(self.frame_payload) + record_bytes > u64::from(self.frame_cap))
        {
            self.end_frame()?;
        }
        if self.frame_records == 0 {
            self.begin_frame()?;
        }
        if self.z.is_some() {
            self.stage_raw(record)?;
        } else {
            if self.fixed == 0 {
                self.put(&(len as u32).to_le_bytes())?;
            }
            self.put(record)?;
        }
        self.count(record, record_bytes as u32);
        Ok(())
    }

    /// With a codec: appends a record (with its prefix) to the open frame's raw buffer, which
    /// grows only when one record is larger than a block (its frame holds nothing else).
    fn stage_raw(&mut self, record: &[u8]) -> Result<(), SpillError> {
        let prefix = if self.fixed == 0 {
            RECORD_PREFIX_BYTES
        } else {
            0
        };
        let end = self.len + prefix + record.len();
        if end >= self.buf.len() {
            debug_assert_eq!(self.len, 0, "only a lone record outgrows a frame");
            let mut grown = vec![0u8; end + 1];
            grown[..self.len].copy_from_slice(&self.buf[..self.len]);
            self.buf = grown.into_boxed_slice();
        }
        if prefix != 0 {
            self.buf[self.len..self.len + prefix]
                .copy_from_slice(&(record.len() as u32).to_le_bytes());
        }
        self.buf[self.len + prefix..end].copy_from_slice(record);
        self.len = end;
        Ok(())
    }

    /// Counts a record just buffered (`framed` bytes with its prefix) in its frame and the
    /// totals, and hashes it unless the caller gave the digest.
    #[inline(always)]
    fn count(&mut self, record: &[u8], framed: u32) {
        self.frame_records += 1;
        self.frame_payload += framed;
        self.records += 1;
        if self.known.is_none() || cfg!(debug_assertions) {
            self.record_hash_sum = self.record_hash_sum.wrapping_add(record_hash(record));
        }
    }

    /// Ends the last frame, writes the footer, flushes (and `fsync`s if asked) and closes.
    /// On error the file is deleted.
    pub fn finish(mut self) -> Result<SpillFileInfo, SpillError> {
        if self.sink.is_none() {
            return Err(self.poisoned());
        }
        if self.frame_records > 0 {
            self.end_frame()?;
        }
        if let Some(known) = self.known {
            // The count always; the sum where every record was hashed anyway (debug builds).
            let (stored, computed) = if self.records != known.records {
                (known.records, self.records)
            } else {
                (known.hash_sum, self.record_hash_sum)
            };
            if stored != computed && (self.records != known.records || cfg!(debug_assertions)) {
                let err = SpillError::ChecksumMismatch {
                    path: self.path.clone(),
                    offset: self.bytes_written(),
                    what: "records against the digest given by the caller",
                    stored,
                    computed,
                };
                return Err(self.fail(err));
            }
            self.record_hash_sum = known.hash_sum;
        }
        let footer_offset = self.bytes_written();
        let footer = Footer {
            footer_offset,
            records: self.records,
            payload_bytes: self.payload_bytes,
            record_hash_sum: self.record_hash_sum,
            frames: self.frames,
            payload_crc32c: self.payload_crc32c,
            max_frame_payload_bytes: self.max_frame_payload,
            // 0 in an uncompressed file: those stay byte for byte what they were.
            max_stored_frame_bytes: if self.z.is_some() { self.max_stored } else { 0 },
        };
        self.put_file(&footer.encode())?;
        self.flush_file()?;
        if self.opts.sync_on_finish {
            let t = Instant::now();
            let r = self.sink.as_mut().expect("sink present").sync();
            self.write_ns += t.elapsed().as_nanos() as u64;
            if let Err(e) = r {
                // A failed fsync means the data may be lost: never retry and trust it.
                return Err(self.fail(SpillError::io(&self.path, "fsync", footer_offset, e)));
            }
        }
        self.sink = None; // close
        self.done = true;
        let file_bytes = footer_offset + FOOTER_BYTES as u64;
        let codec = self.opts.codec.map(|c| c.name);
        debug_assert_eq!(
            file_bytes,
            HEADER_BYTES as u64
                + self.frames * frame_header_bytes(codec) as u64
                + self.stored_bytes
                + FOOTER_BYTES as u64,
            "file = header + frames + footer"
        );
        Ok(SpillFileInfo {
            path: self.path.clone(),
            kind: self.opts.kind,
            tag: self.opts.tag,
            fixed_record_bytes: self.fixed,
            records: self.records,
            codec,
            payload_bytes: self.payload_bytes,
            stored_payload_bytes: self.stored_bytes,
            frames: self.frames,
            file_bytes,
            max_frame_payload_bytes: self.max_frame_payload,
            max_stored_frame_bytes: self.max_stored,
            payload_crc32c: self.payload_crc32c,
            record_hash_sum: self.record_hash_sum,
            write_ns: self.write_ns,
        })
    }

    fn begin_frame(&mut self) -> Result<(), SpillError> {
        self.frame_offset = self.bytes_written();
        if self.z.is_some() {
            // The header goes out with the compressed payload, when the frame ends.
            debug_assert_eq!(self.len, 0);
            return Ok(());
        }
        self.crc_active = false;
        self.put(&[0u8; FRAME_HEADER_BYTES])?;
        self.crc_from = self.len;
        self.crc_active = true;
        Ok(())
    }

    fn end_frame(&mut self) -> Result<(), SpillError> {
        if self.z.is_some() {
            return self.end_compressed_frame();
        }
        self.payload_crc32c =
            crc32c::crc32c_append(self.payload_crc32c, &self.buf[self.crc_from..self.len]);
        self.crc_from = self.len;
        self.crc_active = false;
        let stored = frame_crc(
            self.payload_crc32c,
            self.frame_payload,
            None,
            self.frame_records,
            self.frame_offset,
            self.header_crc,
        );
        let header = encode_frame_header(self.frame_payload, self.frame_records, stored);
        self.patch(self.frame_offset, &header)?;
        self.frame_ended(self.frame_payload);
        Ok(())
    }

    /// Counts the frame just written (`stored` bytes on disk) and closes it.
    fn frame_ended(&mut self, stored: u32) {
        self.frames += 1;
        self.payload_bytes += u64::from(self.frame_payload);
        self.stored_bytes += u64::from(stored);
        self.max_frame_payload = self.max_frame_payload.max(self.frame_payload);
        self.max_stored = self.max_stored.max(stored);
        self.frame_records = 0;
        self.frame_payload = 0;
    }

    /// Compresses the open frame straight into the file buffer, behind its header. A frame
    /// that does not shrink is stored as it is (stored length = raw length), as Spark's
    /// `LZ4BlockOutputStream` stores such a block raw.
    fn end_compressed_frame(&mut self) -> Result<(), SpillError> {
        debug_assert_eq!(self.len, self.frame_payload as usize);
        let raw_len = self.len;
        let result = {
            let z = self.z.as_deref_mut().expect("a compressing writer");
            let sink = self.sink.as_mut().expect("sink present");
            let raw = &self.buf[..raw_len];
            let bound = z
                .compressor
                .codec()
                .max_compressed_len(raw_len)
                .max(raw_len);
            let f = &mut z.file;
            f.reserve(
                sink,
                &mut self.write_ns,
                COMPRESSED_FRAME_HEADER_BYTES + bound,
            )
            .and_then(|()| {
                let (header, payload) =
                    f.out[f.out_len..].split_at_mut(COMPRESSED_FRAME_HEADER_BYTES);
                let n = z
                    .compressor
                    .compress_into(raw, &mut payload[..bound])
                    .map_err(|e| FrameFailure::Codec(self.frame_offset, e))?;
                let stored = if n < raw_len {
                    n
                } else {
                    payload[..raw_len].copy_from_slice(raw);
                    raw_len
                };
                self.payload_crc32c =
                    crc32c::crc32c_append(self.payload_crc32c, &payload[..stored]);
                let crc = frame_crc(
                    self.payload_crc32c,
                    stored as u32,
                    Some(raw_len as u32),
                    self.frame_records,
                    self.frame_offset,
                    self.header_crc,
                );
                header.copy_from_slice(&encode_compressed_frame_header(
                    stored as u32,
                    raw_len as u32,
                    self.frame_records,
                    crc,
                ));
                f.out_len += COMPRESSED_FRAME_HEADER_BYTES + stored;
                Ok(stored as u32)
            })
            .and_then(|stored| {
                if f.out_len >= f.flush_at {
                    f.flush(sink, &mut self.write_ns)?;
                }
                Ok(stored)
            })
        };
        let stored = match result {
            Ok(stored) => stored,
            Err(f) => return Err(self.frame_failure(f)),
        };
        debug_assert_eq!(
            self.bytes_written(),
            self.frame_offset + (COMPRESSED_FRAME_HEADER_BYTES as u64) + u64::from(stored)
        );
        self.frame_ended(stored);
        self.len = 0;
        // Back to one block's frame buffer after a record larger than a block.
        let cap = self.frame_cap as usize;
        if self.buf.len() > cap + 1 {
            self.buf = vec![0u8; cap + 1].into_boxed_slice();
        }
        Ok(())
    }

    fn frame_failure(&mut self, f: FrameFailure) -> SpillError {
        let err = match f {
            FrameFailure::Codec(offset, source) => SpillError::Codec {
                path: self.path.clone(),
                offset,
                source,
            },
            FrameFailure::Io(op, offset, e) => SpillError::io(&self.path, op, offset, e),
        };
        self.fail(err)
    }

    /// Appends header or footer bytes to the file: into the file buffer (uncompressed), or
    /// the compressing writer's file buffer.
    fn put_file(&mut self, bytes: &[u8]) -> Result<(), SpillError> {
        let Some(z) = self.z.as_deref_mut() else {
            return self.put(bytes);
        };
        let sink = self.sink.as_mut().expect("sink present");
        match z.file.emit(sink, &mut self.write_ns, bytes) {
            Ok(()) => Ok(()),
            Err(f) => Err(self.frame_failure(f)),
        }
    }

    /// Writes out whatever the file buffer holds.
    fn flush_file(&mut self) -> Result<(), SpillError> {
        let Some(z) = self.z.as_deref_mut() else {
            return self.flush_buf();
        };
        let sink = self.sink.as_mut().expect("sink present");
        match z.file.flush(sink, &mut self.write_ns) {
            Ok(()) => Ok(()),
            Err(f) => Err(self.frame_failure(f)),
        }
    }

    /// Appends bytes to the buffer, writing it out each time it fills (uncompressed only).
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<(), SpillError> {
        let end = self.len + bytes.len();
        if end < self.buf.len() {
            copy_short(&mut self.buf[self.len..end], bytes);
            self.len = end;
            return Ok(());
        }
        self.put_slow(bytes)
    }

    /// `put` when the bytes reach the end of the buffer.
    #[inline(never)]
    fn put_slow(&mut self, mut bytes: &[u8]) -> Result<(), SpillError> {
        loop {
            let free = self.buf.len() - self.len;
            if bytes.len() < free {
                self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
                self.len += bytes.len();
                return Ok(());
            }
            self.buf[self.len..].copy_from_slice(&bytes[..free]);
            self.len += free;
            bytes = &bytes[free..];
            self.flush_buf()?;
        }
    }

    /// Writes the buffer to the sink (after adding its payload bytes to the frame CRC).
    fn flush_buf(&mut self) -> Result<(), SpillError> {
        if self.len == 0 {
            return Ok(());
        }
        if self.crc_active {
            self.payload_crc32c =
                crc32c::crc32c_append(self.payload_crc32c, &self.buf[self.crc_from..self.len]);
        }
        self.crc_from = 0;
        let t = Instant::now();
        let r = self
            .sink
            .as_mut()
            .expect("sink present")
            .write_all(&self.buf[..self.len]);
        self.write_ns += t.elapsed().as_nanos() as u64;
        if let Err(e) = r {
            return Err(self.fail(SpillError::io(&self.path, "write", self.buf_offset, e)));
        }
        self.buf_offset += self.len as u64;
        self.len = 0;
        Ok(())
    }

    /// Overwrites `bytes` at file offset `offset`: the part already written with `pwrite`,
    /// the part still buffered in place.
    fn patch(&mut self, offset: u64, bytes: &[u8]) -> Result<(), SpillError> {
        let written = (self.buf_offset.saturating_sub(offset) as usize).min(bytes.len());
        if written > 0 {
            let t = Instant::now();
            let r = self
                .sink
                .as_mut()
                .expect("sink present")
                .write_all_at(&bytes[..written], offset);
            self.write_ns += t.elapsed().as_nanos() as u64;
            if let Err(e) = r {
                return Err(self.fail(SpillError::io(&self.path, "pwrite", offset, e)));
            }
        }
        if written < bytes.len() {
            let at = (offset + written as u64 - self.buf_offset) as usize;
            self.buf[at..at + bytes.len() - written].copy_from_slice(&bytes[written..]);
        }
        Ok(())
    }

    /// Closes and deletes the partial file; returns `err` for the caller to propagate.
    fn fail(&mut self, err: SpillError) -> SpillError {
        self.discard();
        err
    }

    fn discard(&mut self) {
        if !self.done {
            self.sink = None;
            self.done = true;
            // Best effort: the error being reported matters more than a failed unlink.
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn poisoned(&self) -> SpillError {
        SpillError::Poisoned {
            path: self.path.clone(),
            role: "writer",
        }
    }
}

impl<S: SpillSink> Drop for SpillWriter<S> {
    fn drop(&mut self) {
        self.discard();
    }
}

impl<S: SpillSink> std::fmt::Debug for SpillWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillWriter")
            .field("path", &self.path)
            .field("records", &self.records)
            .field("bytes_written", &self.bytes_written())
            .finish_non_exhaustive()
    }
}
