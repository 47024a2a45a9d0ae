//! `SpillReader`: validates header and footer, then streams CRC-checked frames, zero-copy.
//!
//! One `pread` per frame reads its payload together with the next frame's header into a buffer
//! of the largest frame (+ 12 bytes, allocated once). A frame's records are handed out only
//! after its CRC matched; at the end the counts and both digests are checked against the
//! footer. Any damage is an error naming the file and the offset, never a wrong record.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::SpillError;
use super::format::{
    FOOTER_BYTES, FOOTER_MARKER, FRAME_HEADER_BYTES, Footer, FooterProblem, HEADER_BYTES, Header,
    HeaderProblem, MAGIC, RECORD_PREFIX_BYTES, SpillFileInfo, decode_frame_header, frame_crc, le32,
    record_hash,
};

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
    /// Current frame payload, then (if another frame follows) the next frame's header.
    buf: Vec<u8>,
    /// Next record starts at `buf[pos]`; the current frame's payload is `buf[..payload_end]`.
    pos: usize,
    payload_end: usize,
    frame_records_left: u32,
    /// File offset of the current frame's header.
    frame_offset: u64,
    /// File offset of the next frame's header (== `footer_offset` after the last frame).
    next_frame_offset: u64,
    next_header: [u8; FRAME_HEADER_BYTES],
    /// The record last returned by `advance`.
    current: (usize, usize),
    // What has been seen so far.
    records: u64,
    payload_bytes: u64,
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
        let expected_area = footer
            .frames
            .checked_mul(FRAME_HEADER_BYTES as u64)
            .and_then(|f| f.checked_add(footer.payload_bytes));
        let fixed = header.fixed_record_bytes;
        let fixed_ok = fixed == 0
            || footer.records.checked_mul(u64::from(fixed)) == Some(footer.payload_bytes);
        let var_ok = fixed != 0
            || footer.records.checked_mul(RECORD_PREFIX_BYTES as u64) <= Some(footer.payload_bytes);
        if expected_area != Some(frame_area)
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
                     (largest frame {}) in {frame_area} bytes of frames, fixed record size {fixed}",
                    footer.frames,
                    footer.records,
                    footer.payload_bytes,
                    footer.max_frame_payload_bytes
                ),
            ));
        }

        let info = SpillFileInfo {
            path: path.clone(),
            kind: header.kind,
            tag: header.tag,
            fixed_record_bytes: fixed,
            records: footer.records,
            payload_bytes: footer.payload_bytes,
            frames: footer.frames,
            file_bytes: len,
            max_frame_payload_bytes: footer.max_frame_payload_bytes,
            payload_crc32c: footer.payload_crc32c,
            record_hash_sum: footer.record_hash_sum,
            write_ns: 0,
        };
        let mut next_header = [0u8; FRAME_HEADER_BYTES];
        if footer.frames > 0 {
            read_at(&file, &path, &mut next_header, HEADER_BYTES as u64)?;
        }
        // Reads are sequential; the first frame is needed next.
        advise(&file, 0, 0, rustix::fs::Advice::Sequential);
        let reader = SpillReader {
            buf: vec![0u8; footer.max_frame_payload_bytes as usize + FRAME_HEADER_BYTES],
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
            frames: 0,
            payload_crc32c: 0,
            record_hash_sum: 0,
            state: State::Reading,
        };
        reader.read_ahead(HEADER_BYTES as u64 + FRAME_HEADER_BYTES as u64);
        Ok(reader)
    }

    /// Asks the kernel to start reading the frame that follows (its pages come in while the
    /// current frame's records are consumed). A k-way merge reads k files a frame at a time;
    /// without this every frame read waits for the disk with the CPU idle.
    fn read_ahead(&self, from: u64) {
        let end = self.footer_offset + FOOTER_BYTES as u64;
        if from < end {
            let len = (u64::from(self.info.max_frame_payload_bytes) + FRAME_HEADER_BYTES as u64)
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

    /// Reads the frame at `next_frame_offset` (and the header after it) and checks its CRC.
    fn load_frame(&mut self) -> Result<(), SpillError> {
        let offset = self.next_frame_offset;
        let (payload_bytes, records, stored) = decode_frame_header(&self.next_header);
        let payload_start = offset + FRAME_HEADER_BYTES as u64;
        let payload_end = payload_start + u64::from(payload_bytes);
        if payload_bytes > self.info.max_frame_payload_bytes || payload_end > self.footer_offset {
            return Err(self.corrupt(
                offset,
                format!(
                    "frame header claims {payload_bytes} payload bytes; the largest frame is {} \
                     and the frames end at offset {}",
                    self.info.max_frame_payload_bytes, self.footer_offset
                ),
            ));
        }
        let after = self.footer_offset - payload_end;
        if after != 0 && after < FRAME_HEADER_BYTES as u64 {
            return Err(self.corrupt(
                offset,
                format!(
                    "frame header claims {payload_bytes} payload bytes, leaving {after} bytes \
                     before the footer at offset {}",
                    self.footer_offset
                ),
            ));
        }
        let extra = if after == 0 { 0 } else { FRAME_HEADER_BYTES };
        let n = payload_bytes as usize;
        read_at(
            &self.file,
            &self.path,
            &mut self.buf[..n + extra],
            payload_start,
        )?;
        let running = crc32c::crc32c_append(self.payload_crc32c, &self.buf[..n]);
        let computed = frame_crc(running, payload_bytes, records, offset, self.header_crc);
        if computed != stored {
            return Err(SpillError::ChecksumMismatch {
                path: self.path.clone(),
                offset,
                what: "frame",
                stored: stored.into(),
                computed: computed.into(),
            });
        }
        if extra != 0 {
            self.next_header.copy_from_slice(&self.buf[n..n + extra]);
            self.read_ahead(payload_end + FRAME_HEADER_BYTES as u64);
        }
        self.frame_offset = offset;
        self.frame_hash_sum(n, records)?;
        self.payload_crc32c = running;
        self.payload_bytes += u64::from(payload_bytes);
        self.frames += 1;
        self.next_frame_offset = payload_end;
        self.pos = 0;
        self.payload_end = n;
        self.frame_records_left = records;
        Ok(())
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
                self.frame_offset + (FRAME_HEADER_BYTES + pos) as u64,
                format!(
                    "{} bytes after the last record of the frame at offset {}",
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
            self.frame_offset + (FRAME_HEADER_BYTES + pos) as u64,
            format!(
                "record runs past the end of the frame at offset {} ({left} records left, {} \
                 bytes)",
                self.frame_offset,
                n - pos
            ),
        )
    }

    /// At the end: what was read must be what the footer promised.
    fn check_totals(&self) -> Result<(), SpillError> {
        let at = self.footer_offset;
        let i = &self.info;
        if (self.records, self.payload_bytes, self.frames) != (i.records, i.payload_bytes, i.frames)
        {
            return Err(self.corrupt(
                at,
                format!(
                    "read {} records, {} payload bytes in {} frames; the footer says {}, {}, {}",
                    self.records,
                    self.payload_bytes,
                    self.frames,
                    i.records,
                    i.payload_bytes,
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
