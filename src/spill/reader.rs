//! `SpillReader`: validates header and footer, then streams CRC-checked frames, zero-copy.
//!
//! One `pread` per frame reads its payload together with the next frame's header into a buffer
//! of the largest frame (+ 12 bytes, allocated once). A frame's records are handed out only
//! after its CRC matched; at the end the counts and both digests are checked against the
//! footer. Any damage is an error naming the file and the offset, never a wrong record.
//!
//! A compressed file's frame is read the same way into a second buffer, its CRC checked over
//! the stored (compressed) bytes, then decompressed into the record buffer (a frame stored raw
//! is swapped in instead, without a copy). Both buffers start at the largest stored frame; the
//! record buffer grows to the largest raw frame as frames that passed their CRC need it, then
//! nothing more is allocated.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::SpillError;
use super::format::{
    COMPRESSED_FRAME_HEADER_BYTES, FOOTER_BYTES, FOOTER_MARKER, FRAME_HEADER_BYTES, Footer,
    FooterProblem, HEADER_BYTES, Header, HeaderProblem, MAGIC, RECORD_PREFIX_BYTES, SpillFileInfo,
    decode_frame_header, frame_crc, frame_header_bytes, le32, record_hash,
};
use crate::codec::{Codec, Decompressor};

/// The least a reader asks the kernel to read ahead of the frame it holds (small frames get
/// several frames' worth).
const READ_AHEAD_BYTES: u64 = 1 << 20;

/// `posix_fadvise`, best effort: advice that fails changes nothing but speed.
fn advise(file: &File, offset: u64, len: u64, advice: rustix::fs::Advice) {
    let _ = rustix::fs::fadvise(file, offset, std::num::NonZeroU64::new(len), advice);
}

/// How far back from the end of a file without a valid footer the reader looks for one
/// followed by stray bytes, to tell "trailing garbage" from "truncated".
const TAIL_SCAN_BYTES: u64 = 4096;

/// Reads and verifies one spill file.
pub struct SpillReader {
    path: PathBuf,
    file: File,
    /// As the footer states it; checked against the records when the end is reached.
    info: SpillFileInfo,
    header_crc: u32,
    footer_offset: u64,
    /// 12, or 16 in a compressed file.
    frame_header_bytes: usize,
    /// The current frame's records (its raw payload). Uncompressed: the frame is read here,
    /// then (if another frame follows) the next frame's header.
    buf: Vec<u8>,
    /// Compressed: the frame as stored, then the next frame's header; as long as `buf`, so
    /// that a frame stored raw is swapped into `buf` instead of copied. Empty otherwise.
    stored: Vec<u8>,
    decompressor: Option<Decompressor>,
    /// Next record starts at `buf[pos]`; the current frame's payload is `buf[..payload_end]`.
    pos: usize,
    payload_end: usize,
    frame_records_left: u32,
    /// File offset of the current frame's header.
    frame_offset: u64,
    /// File offset of the next frame's header (== `footer_offset` after the last frame).
    next_frame_offset: u64,
    /// The next frame's header (its first `frame_header_bytes`).
    next_header: [u8; COMPRESSED_FRAME_HEADER_BYTES],
    /// The record last returned by `advance`.
    current: (usize, usize),
    // What has been seen so far.
    records: u64,
    payload_bytes: u64,
    stored_bytes: u64,
    frames: u64,
    payload_crc32c: u32,
    record_hash_sum: u64,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    /// All records read and the footer's numbers matched.
    Verified,
    Failed,
}

impl SpillReader {
    /// Opens `path` and validates its header and footer; no record is read yet.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SpillError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| SpillError::io(&path, "open", 0, e))?;
        let len = file
            .metadata()
            .map_err(|e| SpillError::io(&path, "stat", 0, e))?
            .len();

        // Header.
        let truncated = |offset, detail: &str| SpillError::Truncated {
            path: path.clone(),
            offset,
            detail: detail.to_string(),
        };
        if len == 0 {
            return Err(truncated(0, "empty file"));
        }
        if len < HEADER_BYTES as u64 {
            let mut b = vec![0u8; len as usize];
            read_at(&file, &path, &mut b, 0)?;
            let n = b.len().min(MAGIC.len());
            if b[..n] != MAGIC[..n] {
                return Err(SpillError::BadFormat {
                    path,
                    offset: 0,
                    detail: format!(
                        "{len}-byte file that does not start with {:?}",
                        String::from_utf8_lossy(&MAGIC)
                    ),
                });
            }
            return Err(truncated(len, "file ends inside the 32-byte header"));
        }
        let mut hb = [0u8; HEADER_BYTES];
        read_at(&file, &path, &mut hb, 0)?;
        let (header, header_crc) = Header::decode(&hb).map_err(|p| match p {
            HeaderProblem::NotSpill => SpillError::BadFormat {
                path: path.clone(),
                offset: 0,
                detail: format!(
                    "magic {:?} is not {:?}",
                    String::from_utf8_lossy(&hb[0..8]),
                    String::from_utf8_lossy(&MAGIC)
                ),
            },
            HeaderProblem::DamagedMagic => SpillError::ChecksumMismatch {
                path: path.clone(),
                offset: 0,
                what: "header magic",
                stored: u64::from_le_bytes(hb[0..8].try_into().expect("8 bytes")),
                computed: u64::from_le_bytes(MAGIC),
            },
            HeaderProblem::Checksum { stored, computed } => SpillError::ChecksumMismatch {
                path: path.clone(),
                offset: 0,
                what: "header",
                stored: stored.into(),
                computed: computed.into(),
            },
            HeaderProblem::Format(offset, detail) => SpillError::BadFormat {
                path: path.clone(),
                offset,
                detail,
            },
        })?;

        // Footer: the last FOOTER_BYTES, found with one read.
        let min_len = (HEADER_BYTES + FOOTER_BYTES) as u64;
        if len < min_len {
            return Err(truncated(
                len,
                "no footer: the file is shorter than header + footer",
            ));
        }
        let tail_len = (len - HEADER_BYTES as u64).min(FOOTER_BYTES as u64 + TAIL_SCAN_BYTES);
        let mut tail = vec![0u8; tail_len as usize];
        read_at(&file, &path, &mut tail, len - tail_len)?;
        let footer = match Footer::decode(&tail[tail.len() - FOOTER_BYTES..]) {
            Ok(f) => f,
            Err(FooterProblem::Checksum { stored, computed }) => {
                return Err(SpillError::ChecksumMismatch {
                    path,
                    offset: len - FOOTER_BYTES as u64,
                    what: "footer",
                    stored: stored.into(),
                    computed: computed.into(),
                });
            }
            Err(FooterProblem::Missing) => {
                return Err(missing_footer(path, len, &tail));
            }
        };
        let footer_offset = len - FOOTER_BYTES as u64;
        let corrupt = |offset, detail: String| SpillError::Corrupt {
            path: path.clone(),
            offset,
            detail,
        };
        if footer.footer_offset != footer_offset {
            return Err(corrupt(
                footer_offset,
                format!(
                    "the footer says it starts at offset {}, but it is at {footer_offset}",
                    footer.footer_offset
                ),
            ));
        }
        let frame_area = footer_offset - HEADER_BYTES as u64;
        let codec = header.codec;
        let fh = frame_header_bytes(codec) as u64;
        let headers = footer.frames.checked_mul(fh);
        let fixed = header.fixed_record_bytes;
        let fixed_ok = fixed == 0
            || footer.records.checked_mul(u64::from(fixed)) == Some(footer.payload_bytes);
        let var_ok = fixed != 0
            || footer.records.checked_mul(RECORD_PREFIX_BYTES as u64) <= Some(footer.payload_bytes);
        // What the frames hold on disk; in a compressed file each frame stores at most its raw
        // bytes (a frame that does not shrink is stored raw) and at least one byte.
        let stored_total = headers.and_then(|h| frame_area.checked_sub(h));
        let (max_stored, stored_ok) = match (codec, stored_total) {
            (_, None) => (0, false),
            (None, Some(stored)) => (
                footer.max_frame_payload_bytes,
                stored == footer.payload_bytes && footer.max_stored_frame_bytes == 0,
            ),
            (Some(_), Some(stored)) => {
                let m = footer.max_stored_frame_bytes;
                (
                    m,
                    stored <= footer.payload_bytes
                        && stored >= footer.frames
                        && u64::from(m) <= stored
                        && m <= footer.max_frame_payload_bytes
                        && (m == 0) == (footer.frames == 0),
                )
            }
        };
        if !stored_ok
            || !fixed_ok
            || !var_ok
            || u64::from(footer.max_frame_payload_bytes) > footer.payload_bytes
            || (footer.frames == 0) != (footer.records == 0)
            || footer.frames > footer.records
        {
            return Err(corrupt(
                footer_offset,
                format!(
                    "footer numbers do not add up: {} frames, {} records, {} payload bytes \
                     (largest frame {}, largest stored {}) in {frame_area} bytes of frames, \
                     fixed record size {fixed}, codec {}",
                    footer.frames,
                    footer.records,
                    footer.payload_bytes,
                    footer.max_frame_payload_bytes,
                    footer.max_stored_frame_bytes,
                    codec.map_or("none", |c| c.short_name())
                ),
            ));
        }

        let info = SpillFileInfo {
            path: path.clone(),
            kind: header.kind,
            tag: header.tag,
            fixed_record_bytes: fixed,
            records: footer.records,
            codec,
            payload_bytes: footer.payload_bytes,
            stored_payload_bytes: stored_total.expect("checked above"),
            frames: footer.frames,
            file_bytes: len,
            max_frame_payload_bytes: footer.max_frame_payload_bytes,
            max_stored_frame_bytes: max_stored,
            payload_crc32c: footer.payload_crc32c,
            record_hash_sum: footer.record_hash_sum,
            write_ns: 0,
        };
        let fh = fh as usize;
        let mut next_header = [0u8; COMPRESSED_FRAME_HEADER_BYTES];
        if footer.frames > 0 {
            read_at(&file, &path, &mut next_header[..fh], HEADER_BYTES as u64)?;
        }
        // Reads are sequential; the first frame is needed next.
        advise(&file, 0, 0, rustix::fs::Advice::Sequential);
        // Uncompressed: one buffer of the largest frame, at most the file's length. Compressed:
        // two of the largest stored frame (bounded by the file too); the record buffer grows
        // to a frame's raw length only once that frame passed its CRC, so a footer's claim
        // alone never makes the reader allocate more than the file holds.
        let io_len = max_stored as usize + fh;
        let reader = SpillReader {
            buf: vec![0u8; io_len],
            stored: if codec.is_some() {
                vec![0u8; io_len]
            } else {
                Vec::new()
            },
            decompressor: codec.map(|name| Codec::with_defaults(name).decompressor()),
            frame_header_bytes: fh,
            path,
            file,
            info,
            header_crc,
            footer_offset,
            pos: 0,
            payload_end: 0,
            frame_records_left: 0,
            frame_offset: HEADER_BYTES as u64,
            next_frame_offset: HEADER_BYTES as u64,
            next_header,
            current: (0, 0),
            records: 0,
            payload_bytes: 0,
            stored_bytes: 0,
            frames: 0,
            payload_crc32c: 0,
            record_hash_sum: 0,
            state: State::Reading,
        };
        reader.read_ahead((HEADER_BYTES + fh) as u64);
        Ok(reader)
    }

    /// Asks the kernel to start reading the frame that follows (its pages come in while the
    /// current frame's records are consumed). A k-way merge reads k files a frame at a time;
    /// without this every frame read waits for the disk with the CPU idle.
    fn read_ahead(&self, from: u64) {
        let end = self.footer_offset + FOOTER_BYTES as u64;
        if from < end {
            let len = (u64::from(self.info.max_stored_frame_bytes)
                + self.frame_header_bytes as u64)
                .max(READ_AHEAD_BYTES)
                .min(end - from);
            advise(&self.file, from, len, rustix::fs::Advice::WillNeed);
        }
    }

    /// The file as its header and footer describe it (`file_bytes` is the actual length).
    /// Trust the numbers once [`next_record`](Self::next_record) has returned `None`: then they
    /// have been checked against every record.
    pub fn info(&self) -> &SpillFileInfo {
        &self.info
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next record, borrowed from the reader's frame buffer; `None` once all records were
    /// read and verified against the footer.
    #[inline]
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, SpillError> {
        if self.advance()? {
            Ok(Some(self.current_record()))
        } else {
            Ok(None)
        }
    }

    /// Calls `f` on every record, then returns the verified file info. Stops at the first
    /// error, from the file or from `f`.
    pub fn for_each_record<E: From<SpillError>>(
        mut self,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<SpillFileInfo, E> {
        while let Some(r) = self.next_record()? {
            f(r)?;
        }
        Ok(self.info.clone())
    }

    /// Moves to the next record; `false` at the (verified) end.
    pub(crate) fn advance(&mut self) -> Result<bool, SpillError> {
        match self.state {
            State::Reading => {}
            State::Verified => return Ok(false),
            State::Failed => {
                return Err(SpillError::Poisoned {
                    path: self.path.clone(),
                    role: "reader",
                });
            }
        }
        match self.step() {
            Ok(more) => Ok(more),
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    #[inline]
    pub(crate) fn current_record(&self) -> &[u8] {
        &self.buf[self.current.0..self.current.1]
    }

    #[inline]
    fn step(&mut self) -> Result<bool, SpillError> {
        loop {
            if self.frame_records_left > 0 {
                let (start, end) = self.record_bounds();
                self.frame_records_left -= 1;
                self.pos = end;
                self.current = (start, end);
                self.records += 1;
                return Ok(true);
            }
            // `frame_hash_sum` checked that the frame's records fill it exactly.
            debug_assert_eq!(self.pos, self.payload_end);
            if self.next_frame_offset == self.footer_offset {
                self.check_totals()?;
                self.state = State::Verified;
                return Ok(false);
            }
            self.load_frame()?;
        }
    }

    /// Bounds of the next record in the current frame (whose layout `frame_hash_sum` checked
    /// when it was loaded).
    #[inline]
    fn record_bounds(&self) -> (usize, usize) {
        let fixed = self.info.fixed_record_bytes as usize;
        let (start, len) = if fixed != 0 {
            (self.pos, fixed)
        } else {
            let len = le32(&self.buf[self.pos..]) as usize;
            (self.pos + RECORD_PREFIX_BYTES, len)
        };
        debug_assert!(start + len <= self.payload_end);
        (start, start + len)
    }

    /// Reads the frame at `next_frame_offset` (and the header after it), checks its CRC and,
    /// in a compressed file, decompresses it into the record buffer.
    fn load_frame(&mut self) -> Result<(), SpillError> {
        let offset = self.next_frame_offset;
        let fh = self.frame_header_bytes;
        let compressed = self.decompressor.is_some();
        let h = decode_frame_header(&self.next_header[..fh], compressed);
        let payload_start = offset + fh as u64;
        let payload_end = payload_start + u64::from(h.stored);
        if h.stored > self.info.max_stored_frame_bytes
            || h.raw > self.info.max_frame_payload_bytes
            || h.stored > h.raw
            || payload_end > self.footer_offset
        {
            return Err(self.corrupt(
                offset,
                format!(
                    "frame header claims {} stored and {} raw payload bytes; the largest frame \
                     is {} stored, {} raw, and the frames end at offset {}",
                    h.stored,
                    h.raw,
                    self.info.max_stored_frame_bytes,
                    self.info.max_frame_payload_bytes,
                    self.footer_offset
                ),
            ));
        }
        let after = self.footer_offset - payload_end;
        if after != 0 && after < fh as u64 {
            return Err(self.corrupt(
                offset,
                format!(
                    "frame header claims {} payload bytes, leaving {after} bytes before the \
                     footer at offset {}",
                    h.stored, self.footer_offset
                ),
            ));
        }
        let extra = if after == 0 { 0 } else { fh };
        let n = h.stored as usize;
        let io = if compressed {
            &mut self.stored
        } else {
            &mut self.buf
        };
        read_at(&self.file, &self.path, &mut io[..n + extra], payload_start)?;
        let running = crc32c::crc32c_append(self.payload_crc32c, &io[..n]);
        let raw_len = compressed.then_some(h.raw);
        let computed = frame_crc(
            running,
            h.stored,
            raw_len,
            h.records,
            offset,
            self.header_crc,
        );
        if computed != h.crc {
            return Err(SpillError::ChecksumMismatch {
                path: self.path.clone(),
                offset,
                what: "frame",
                stored: h.crc.into(),
                computed: computed.into(),
            });
        }
        if extra != 0 {
            self.next_header[..fh].copy_from_slice(&io[n..n + extra]);
        }
        if extra != 0 {
            self.read_ahead(payload_end + fh as u64);
        }
        self.frame_offset = offset;
        let raw = h.raw as usize;
        if let Some(d) = self.decompressor.as_mut() {
            if h.stored == h.raw {
                // Stored raw (it did not shrink): the bytes are the records. (Both buffers
                // are at least the largest stored frame, so either serves the next read.)
                std::mem::swap(&mut self.buf, &mut self.stored);
            } else if let Err(e) = {
                if self.buf.len() < raw {
                    self.buf.resize(raw, 0);
                }
                d.decompress_into(&self.stored[..n], &mut self.buf[..raw])
            } {
                // Its CRC matched: these are the bytes the writer stored, and they are not a
                // block of the header's codec.
                return Err(self.corrupt(
                    payload_start,
                    format!(
                        "the frame at offset {offset} passed its CRC but does not decompress \
                         to its {raw} bytes: {e}"
                    ),
                ));
            }
        }
        self.frame_hash_sum(raw, h.records)?;
        self.payload_crc32c = running;
        self.payload_bytes += u64::from(h.raw);
        self.stored_bytes += u64::from(h.stored);
        self.frames += 1;
        self.next_frame_offset = payload_end;
        self.pos = 0;
        self.payload_end = raw;
        self.frame_records_left = h.records;
        Ok(())
    }

    /// The file offset to name for raw byte `pos` of the current frame: its own place in an
    /// uncompressed file; the frame's offset in a compressed one (raw bytes have no place on
    /// disk there).
    fn raw_offset(&self, pos: usize) -> u64 {
        if self.decompressor.is_some() {
            self.frame_offset
        } else {
            self.frame_offset + (FRAME_HEADER_BYTES + pos) as u64
        }
    }

    /// Walks the frame just loaded (`buf[..n]`, `records` records): checks that its records
    /// fill it exactly and adds their hashes to the running sum. Hashing a whole frame in one
    /// tight loop lets the CPU overlap one record's hash with the next, instead of putting each
    /// hash's multiply chain between a merge's comparisons.
    fn frame_hash_sum(&mut self, n: usize, records: u32) -> Result<(), SpillError> {
        let fixed = self.info.fixed_record_bytes as usize;
        let mut sum = 0u64;
        let mut pos = 0usize;
        if let Some(fit) = n.checked_div(fixed) {
            let frame = &self.buf[..n];
            let whole = (records as usize).min(fit);
            for r in frame[..whole * fixed].chunks_exact(fixed) {
                sum = sum.wrapping_add(record_hash(r));
            }
            pos = whole * fixed;
            if whole < records as usize {
                return Err(self.frame_overrun(pos, records - whole as u32, n));
            }
        } else {
            for i in 0..records {
                let bounds = if n - pos < RECORD_PREFIX_BYTES {
                    None
                } else {
                    let len = le32(&self.buf[pos..]) as usize;
                    let start = pos + RECORD_PREFIX_BYTES;
                    (n - start >= len).then_some((start, start + len))
                };
                let Some((start, end)) = bounds else {
                    return Err(self.frame_overrun(pos, records - i, n));
                };
                sum = sum.wrapping_add(record_hash(&self.buf[start..end]));
                pos = end;
            }
        }
        if pos != n {
            return Err(self.corrupt(
                self.raw_offset(pos),
                format!(
                    "{} raw bytes after the last record of the frame at offset {}",
                    n - pos,
                    self.frame_offset
                ),
            ));
        }
        self.record_hash_sum = self.record_hash_sum.wrapping_add(sum);
        Ok(())
    }

    /// A record at `pos` of the frame just loaded runs past its end.
    fn frame_overrun(&self, pos: usize, left: u32, n: usize) -> SpillError {
        self.corrupt(
            self.raw_offset(pos),
            format!(
                "record at raw byte {pos} runs past the end of the frame at offset {} ({left} \
                 records left, {} bytes)",
                self.frame_offset,
                n - pos
            ),
        )
    }

    /// At the end: what was read must be what the footer promised.
    fn check_totals(&self) -> Result<(), SpillError> {
        let at = self.footer_offset;
        let i = &self.info;
        if (
            self.records,
            self.payload_bytes,
            self.stored_bytes,
            self.frames,
        ) != (i.records, i.payload_bytes, i.stored_payload_bytes, i.frames)
        {
            return Err(self.corrupt(
                at,
                format!(
                    "read {} records, {} payload bytes ({} stored) in {} frames; the footer \
                     says {}, {} ({}), {}",
                    self.records,
                    self.payload_bytes,
                    self.stored_bytes,
                    self.frames,
                    i.records,
                    i.payload_bytes,
                    i.stored_payload_bytes,
                    i.frames
                ),
            ));
        }
        let mismatch = |what, stored: u64, computed: u64| SpillError::ChecksumMismatch {
            path: self.path.clone(),
            offset: at,
            what,
            stored,
            computed,
        };
        if self.payload_crc32c != i.payload_crc32c {
            return Err(mismatch(
                "payload crc32c",
                i.payload_crc32c.into(),
                self.payload_crc32c.into(),
            ));
        }
        if self.record_hash_sum != i.record_hash_sum {
            return Err(mismatch(
                "record hash sum",
                i.record_hash_sum,
                self.record_hash_sum,
            ));
        }
        Ok(())
    }

    fn corrupt(&self, offset: u64, detail: String) -> SpillError {
        SpillError::Corrupt {
            path: self.path.clone(),
            offset,
            detail,
        }
    }
}

impl std::fmt::Debug for SpillReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillReader")
            .field("path", &self.path)
            .field("records_read", &self.records)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Reads every record of `path`, checking every frame and the footer's numbers; returns the
/// verified info.
pub fn verify_file(path: impl AsRef<Path>) -> Result<SpillFileInfo, SpillError> {
    SpillReader::open(path)?.for_each_record(|_| Ok::<(), SpillError>(()))
}

fn read_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<(), SpillError> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            SpillError::Truncated {
                path: path.to_path_buf(),
                offset,
                detail: format!(
                    "the file ended while reading {} bytes (it shrank while open)",
                    buf.len()
                ),
            }
        } else {
            SpillError::io(path, "read", offset, e)
        }
    })
}

/// The error for a file whose last bytes are not a footer: a valid footer a little earlier
/// means bytes were appended after it; otherwise the file was cut short or never finished.
fn missing_footer(path: PathBuf, len: u64, tail: &[u8]) -> SpillError {
    let tail_start = len - tail.len() as u64;
    let last_start = tail.len() - FOOTER_BYTES;
    for start in (0..last_start).rev() {
        let candidate = &tail[start..start + FOOTER_BYTES];
        if candidate[0..8] != FOOTER_MARKER {
            continue;
        }
        if let Ok(f) = Footer::decode(candidate) {
            let at = tail_start + start as u64;
            if f.footer_offset == at {
                let end = at + FOOTER_BYTES as u64;
                return SpillError::BadFormat {
                    path,
                    offset: end,
                    detail: format!("{} bytes after the footer that ends here", len - end),
                };
            }
        }
    }
    SpillError::Truncated {
        path,
        offset: len,
        detail: "no footer at the end: the file was cut short or its writer never finished".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecName;
    use crate::spill::format::{COMPRESSED_FRAME_HEADER_BYTES, encode_compressed_frame_header};
    use crate::spill::{SpillKind, SpillWriter, SpillWriterOptions};

    /// A compressed frame whose CRC is right but whose bytes are not a block of the codec (what
    /// only a writer's bug makes): `Corrupt` naming the frame, and no record handed out.
    #[test]
    fn a_frame_with_a_valid_crc_that_does_not_decompress_is_corrupt() {
        for name in [CodecName::Lz4, CodecName::Snappy, CodecName::Zstd] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bug.spill");
            let mut o = SpillWriterOptions::new(SpillKind::SortRun);
            o.codec = Some(Codec::with_defaults(name));
            let mut w = SpillWriter::create(&path, o).unwrap();
            for _ in 0..100 {
                w.write_record(b"spill spill spill spill spill").unwrap();
            }
            w.finish().unwrap();
            let mut b = std::fs::read(&path).unwrap();
            let at = HEADER_BYTES;
            let (stored, raw, n) = (le32(&b[at..]), le32(&b[at + 4..]), le32(&b[at + 8..]));
            assert!(stored < raw, "{name}: the frame is compressed");
            let payload = at + COMPRESSED_FRAME_HEADER_BYTES;
            b[payload..payload + stored as usize].fill(0xff);
            // Re-seal the frame and the footer as a buggy writer would have written them.
            let header_crc = le32(&b[28..32]);
            let running = crc32c::crc32c(&b[payload..payload + stored as usize]);
            let crc = frame_crc(running, stored, Some(raw), n, at as u64, header_crc);
            b[at..payload].copy_from_slice(&encode_compressed_frame_header(stored, raw, n, crc));
            let f = b.len() - FOOTER_BYTES;
            b[f + 48..f + 52].copy_from_slice(&running.to_le_bytes());
            let fcrc = crc32c::crc32c(&b[f..f + 60]);
            b[f + 60..f + 64].copy_from_slice(&fcrc.to_le_bytes());
            std::fs::write(&path, &b).unwrap();

            let mut r = SpillReader::open(&path).unwrap();
            let e = r.next_record().unwrap_err();
            assert!(
                matches!(e, SpillError::Corrupt { offset, .. } if offset == payload as u64),
                "{name}: {e}"
            );
            assert!(e.to_string().contains("does not decompress"), "{name}: {e}");
        }
    }
}
