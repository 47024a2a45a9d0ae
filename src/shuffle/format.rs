//! The bytes of a map output: partition segments of checksummed (and compressed) blocks, and
//! the index file.
//!
//! # Segment
//!
//! A map task's data file is its reduce partitions' bytes back to back, partition `r` at
//! `[offset[r], offset[r+1])` of the index. A partition's bytes are one or more **segments**
//! (more than one when the serialized-sort writer concatenated the partition's pieces from
//! several spills, as Spark's fast merge does); an empty partition has no bytes at all. A
//! segment is `block* ‖ trailer`, all integers little-endian:
//!
//! | field | size | meaning |
//! |---|---|---|
//! | `raw_len` | 4 | bytes of the block's records before compression (never `u32::MAX`) |
//! | `stored_len` | 4 | bytes that follow (compressed, or `raw_len` when not) |
//! | `records` | 4 | records in the block |
//! | `crc` | 4 | CRC32C of `stored ‖ raw_len ‖ stored_len ‖ records ‖ le32 block number ‖ le64 tag` |
//! | stored | `stored_len` | the block |
//!
//! and the trailer, 28 bytes: `le32 u32::MAX ‖ le32 blocks ‖ le64 records ‖ le64 record hash
//! sum ‖ le32 CRC32C of the 24 bytes before ‖ le64 tag`. A record in a block is
//! `le32 length ‖ bytes` (Kryo writes a length before a byte array too). The **tag** is the
//! shuffle block id's hash: a block or trailer moved in from another map output or partition
//! fails its CRC; a block dropped or reordered fails on its number; the trailer's counts and
//! order-independent digest ([`RecordDigest`]) are checked against the records read. So a
//! damaged, truncated or misplaced byte is a [`SegmentError`] naming the block, never a wrong
//! record.
//!
//! A block holds at most the codec's block size of raw bytes (Spark's lz4 stream compresses
//! 32 KiB at a time) — without compression `spark.shuffle.file.buffer` — unless one record is
//! larger (that block holds it alone): the writer ends a block before the record that would
//! take it past the size.
//!
//! # Index
//!
//! `IndexShuffleBlockResolver`'s file: `reduce_partitions + 1` offsets as big-endian `i64`
//! (Java's `DataOutputStream.writeLong`), the first 0 and the last the data file's length,
//! followed by spillway's CRC32C of them (4 bytes, big-endian).

use std::io::{self, BufRead, Write};

use crate::codec::{Codec, CodecError, Compressor, Decompressor};
use crate::spill::RecordDigest;

/// Bytes of a block header.
pub const BLOCK_HEADER_BYTES: usize = 16;
/// Bytes of a segment trailer.
pub const TRAILER_BYTES: usize = 28;
/// The `raw_len` value that marks a trailer.
const TRAILER_MARK: u32 = u32::MAX;
/// Bytes of the length before each record.
pub const RECORD_PREFIX_BYTES: usize = 4;

/// The tag binding a segment to its shuffle block (`shuffle_<s>_<map>_<reduce>`).
pub fn segment_tag(shuffle: u32, map: u32, reduce: u32) -> u64 {
    let mut s = (u64::from(shuffle) << 40) ^ (u64::from(map) << 20) ^ u64::from(reduce);
    crate::data::splitmix64(&mut s)
}

fn block_crc(stored: &[u8], raw_len: u32, stored_len: u32, records: u32, n: u32, tag: u64) -> u32 {
    let mut c = crc32c::crc32c(stored);
    let mut tail = [0u8; 24];
    tail[0..4].copy_from_slice(&raw_len.to_le_bytes());
    tail[4..8].copy_from_slice(&stored_len.to_le_bytes());
    tail[8..12].copy_from_slice(&records.to_le_bytes());
    tail[12..16].copy_from_slice(&n.to_le_bytes());
    tail[16..24].copy_from_slice(&tag.to_le_bytes());
    c = crc32c::crc32c_append(c, &tail);
    c
}

fn trailer_crc(body: &[u8], tag: u64) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(body), &tag.to_le_bytes())
}

/// Writes the segments of one map output's partitions, a partition at a time, into a sink
/// (a temporary file, a spill file, the data file). Keeps one block buffer (the block's header
/// room, then its records) and, with a codec, one compressed block buffer (header room, then
/// the compressed block), both allocated once and reused for every segment, so that a block
/// goes to the sink as one `write_all` of header and bytes and no block is copied or zeroed
/// on its way. The writer digests every record it writes (the digest [`SegmentWriter::end`]
/// returns): its callers take their digests from it rather than hashing each record again.
pub struct SegmentWriter {
    /// Boxed: its tables would make the writer kilobytes long, and the bypass writer keeps
    /// one per partition side by side, whose hot fields should share cache lines and pages.
    compressor: Option<Box<Compressor>>,
    block_bytes: usize,
    /// `BLOCK_HEADER_BYTES` of room, then the open block's records up to `len`.
    block: Vec<u8>,
    len: usize,
    /// With a codec: `BLOCK_HEADER_BYTES` of room, then room for a compressed block.
    stored: Vec<u8>,
    block_records: u32,
    // The open segment.
    tag: u64,
    blocks: u32,
    digest: RecordDigest,
    /// Bytes this segment has put into the sink so far.
    segment_bytes: u64,
    open: bool,
}

impl SegmentWriter {
    /// A writer compressing with `codec` (or not), cutting blocks at `block_bytes` raw bytes
    /// when not compressing.
    pub fn new(codec: Option<Codec>, uncompressed_block_bytes: usize) -> SegmentWriter {
        let block_bytes = codec
            .map_or(uncompressed_block_bytes, |c| c.block_bytes)
            .max(1);
        SegmentWriter {
            compressor: codec.map(|c| Box::new(c.compressor())),
            block_bytes,
            block: vec![0; BLOCK_HEADER_BYTES + block_bytes],
            len: BLOCK_HEADER_BYTES,
            stored: match codec {
                Some(c) => vec![0; BLOCK_HEADER_BYTES + c.max_compressed_len(block_bytes)],
                None => Vec::new(),
            },
            block_records: 0,
            tag: 0,
            blocks: 0,
            digest: RecordDigest::default(),
            segment_bytes: 0,
            open: false,
        }
    }

    /// Starts the segment of a partition.
    pub fn begin(&mut self, tag: u64) {
        debug_assert!(!self.open, "a segment is open");
        self.tag = tag;
        self.blocks = 0;
        self.digest = RecordDigest::default();
        self.segment_bytes = 0;
        self.len = BLOCK_HEADER_BYTES;
        self.block_records = 0;
        self.open = true;
    }

    /// Whether a segment is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Appends one record to the open segment.
    #[inline]
    pub fn write_record(&mut self, sink: &mut impl Write, record: &[u8]) -> io::Result<()> {
        debug_assert!(self.open);
        let end = self.len + RECORD_PREFIX_BYTES + record.len();
        // Most records: the open block has room (the block cap is the buffer's length).
        if end <= self.block.len() && self.block_records != 0 {
            self.put(record, end);
            return Ok(());
        }
        self.write_record_slow(sink, record)
    }

    #[inline(always)]
    fn put(&mut self, record: &[u8], end: usize) {
        let dst = &mut self.block[self.len..end];
        dst[..RECORD_PREFIX_BYTES].copy_from_slice(&(record.len() as u32).to_le_bytes());
        crate::spill::copy_short(&mut dst[RECORD_PREFIX_BYTES..], record);
        self.len = end;
        self.block_records += 1;
        self.digest.add(record);
    }

    /// A record that starts a block, or does not fit the open one: ends the open block, and
    /// grows the buffer for a record larger than a block (its block holds nothing else).
    #[inline(never)]
    fn write_record_slow(&mut self, sink: &mut impl Write, record: &[u8]) -> io::Result<()> {
        let framed = RECORD_PREFIX_BYTES + record.len();
        if self.block_records != 0 && self.len + framed > BLOCK_HEADER_BYTES + self.block_bytes {
            self.flush_block(sink)?;
        }
        let end = self.len + framed;
        if end > self.block.len() {
            debug_assert_eq!(self.block_records, 0, "only a lone record outgrows a block");
            self.block.resize(end, 0);
        } else if self.block.len() > BLOCK_HEADER_BYTES + self.block_bytes
            && self.block_records == 0
            && end <= BLOCK_HEADER_BYTES + self.block_bytes
        {
            // Back to the block size after a large record.
            self.block.truncate(BLOCK_HEADER_BYTES + self.block_bytes);
            self.block.shrink_to_fit();
        }
        self.put(record, end);
        // A block over the cap (one large record) holds nothing else.
        if self.len > BLOCK_HEADER_BYTES + self.block_bytes {
            self.flush_block(sink)?;
        }
        Ok(())
    }

    fn flush_block(&mut self, sink: &mut impl Write) -> io::Result<()> {
        let raw = &self.block[BLOCK_HEADER_BYTES..self.len];
        let raw_len = u32::try_from(raw.len())
            .ok()
            .filter(|&l| l != TRAILER_MARK)
            .ok_or_else(|| io::Error::other("a shuffle block of 4 GiB or more"))?;
        let out: &mut [u8] = match self.compressor.as_mut() {
            Some(c) => {
                let bound = BLOCK_HEADER_BYTES + c.codec().max_compressed_len(raw.len());
                if self.stored.len() < bound {
                    self.stored.resize(bound, 0);
                }
                let n = c
                    .compress_into(raw, &mut self.stored[BLOCK_HEADER_BYTES..])
                    .map_err(io::Error::other)?;
                &mut self.stored[..BLOCK_HEADER_BYTES + n]
            }
            None => &mut self.block[..self.len],
        };
        let (h, stored) = out.split_at_mut(BLOCK_HEADER_BYTES);
        let stored_len = stored.len() as u32;
        let crc = block_crc(
            stored,
            raw_len,
            stored_len,
            self.block_records,
            self.blocks,
            self.tag,
        );
        h[0..4].copy_from_slice(&raw_len.to_le_bytes());
        h[4..8].copy_from_slice(&stored_len.to_le_bytes());
        h[8..12].copy_from_slice(&self.block_records.to_le_bytes());
        h[12..16].copy_from_slice(&crc.to_le_bytes());
        sink.write_all(out)?;
        self.segment_bytes += out.len() as u64;
        self.blocks += 1;
        self.len = BLOCK_HEADER_BYTES;
        self.block_records = 0;
        Ok(())
    }

    /// Ends the open segment: its last block and the trailer. Returns the segment's bytes and
    /// the digest of its records; a segment without records writes nothing (an empty
    /// partition has no bytes, as in Spark).
    pub fn end(&mut self, sink: &mut impl Write) -> io::Result<(u64, RecordDigest)> {
        debug_assert!(self.open);
        self.open = false;
        if self.digest.records == 0 {
            return Ok((0, self.digest));
        }
        if self.block_records != 0 {
            self.flush_block(sink)?;
        }
        let mut t = [0u8; TRAILER_BYTES];
        t[0..4].copy_from_slice(&TRAILER_MARK.to_le_bytes());
        t[4..8].copy_from_slice(&self.blocks.to_le_bytes());
        t[8..16].copy_from_slice(&self.digest.records.to_le_bytes());
        t[16..24].copy_from_slice(&self.digest.hash_sum.to_le_bytes());
        let crc = trailer_crc(&t[0..24], self.tag);
        t[24..28].copy_from_slice(&crc.to_le_bytes());
        sink.write_all(&t)?;
        self.segment_bytes += TRAILER_BYTES as u64;
        Ok((self.segment_bytes, self.digest))
    }
}

/// Why a partition's bytes did not read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("I/O error at byte {offset} of the block: {detail}")]
    Io { offset: u64, detail: String },
    #[error("corrupt at byte {offset} of the block: {detail}")]
    Corrupt { offset: u64, detail: String },
    #[error("truncated at byte {offset} of the block: {detail}")]
    Truncated { offset: u64, detail: String },
}

impl SegmentError {
    fn corrupt(offset: u64, detail: impl Into<String>) -> SegmentError {
        SegmentError::Corrupt {
            offset,
            detail: detail.into(),
        }
    }
}

/// Where the open block's records are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// In the source's buffer (`BufRead::fill_buf`), not yet consumed: no copy at all.
    Source,
    /// Copied into `scratch`: the block was not whole in the source's buffer.
    Scratch,
    /// Decompressed into `raw`.
    Raw,
}

/// Reads the records of one partition's bytes (one or more segments) from a stream of exactly
/// `len` bytes, verifying every block's checksum before handing out its records, each record's
/// place in its block as it is handed out, and the digest of the segment's records against its
/// trailer.
///
/// A block that lies whole in the source's buffer is read where it is (an in-memory source is
/// never copied; a `BufReader` is copied once, by the kernel into its buffer); one that does
/// not is copied into a buffer the reader keeps, and a compressed block is decompressed into
/// another. Neither buffer is cleared or zeroed per block.
pub struct SegmentReader<R: BufRead> {
    source: R,
    len: u64,
    pos: u64,
    tag: u64,
    decompressor: Option<Decompressor>,
    scratch: Vec<u8>,
    raw: Vec<u8>,
    /// Where the open block's records are, and the bytes it holds in the source's buffer.
    held: Held,
    held_bytes: usize,
    /// The open block's raw length and offset; its next record at `at`, its records left.
    block_len: usize,
    block_start: u64,
    at: usize,
    block_records_left: u32,
    // The open segment.
    blocks: u32,
    digest: RecordDigest,
    /// All segments so far.
    total: RecordDigest,
    done: bool,
}

impl<R: BufRead> SegmentReader<R> {
    /// A reader of `len` bytes of `source` written with `codec` under `tag`.
    pub fn new(source: R, len: u64, tag: u64, codec: Option<Codec>) -> SegmentReader<R> {
        SegmentReader {
            source,
            len,
            pos: 0,
            tag,
            decompressor: codec.map(|c| c.decompressor()),
            scratch: Vec::new(),
            raw: Vec::new(),
            held: Held::Scratch,
            held_bytes: 0,
            block_len: 0,
            block_start: 0,
            at: 0,
            block_records_left: 0,
            blocks: 0,
            digest: RecordDigest::default(),
            total: RecordDigest::default(),
            done: len == 0,
        }
    }

    /// Records and digest of the segments read to their trailer (all of them once
    /// `next_record` gave `None`).
    pub fn verified(&self) -> RecordDigest {
        self.total
    }

    fn io_error(&self, e: io::Error, what: &str) -> SegmentError {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => SegmentError::Truncated {
                offset: self.pos,
                detail: format!("the source ended inside {what}"),
            },
            _ => SegmentError::Io {
                offset: self.pos,
                detail: e.to_string(),
            },
        }
    }

    fn check_room(&self, n: usize, what: &str) -> Result<(), SegmentError> {
        if self.pos + n as u64 > self.len {
            return Err(SegmentError::Truncated {
                offset: self.pos,
                detail: format!(
                    "{what} of {n} bytes runs past the block's {} bytes",
                    self.len
                ),
            });
        }
        Ok(())
    }

    /// Reads `out.len()` bytes (a header or a trailer) into `out`.
    fn read_small(&mut self, out: &mut [u8], what: &str) -> Result<(), SegmentError> {
        self.check_room(out.len(), what)?;
        self.source
            .read_exact(out)
            .map_err(|e| self.io_error(e, what))?;
        self.pos += out.len() as u64;
        Ok(())
    }

    /// Makes the next `n` bytes of the source the open block's: held in the source's buffer
    /// when they are all there, else copied into `scratch`.
    fn take_block(&mut self, n: usize) -> Result<(), SegmentError> {
        self.check_room(n, "a block")?;
        let whole = match self.source.fill_buf() {
            Ok(buf) => buf.len() >= n,
            Err(e) => return Err(self.io_error(e, "a block")),
        };
        if whole {
            self.held = Held::Source;
            self.held_bytes = n;
        } else {
            if self.scratch.len() < n {
                self.scratch.resize(n, 0);
            }
            let mut scratch = std::mem::take(&mut self.scratch);
            let read = self.source.read_exact(&mut scratch[..n]);
            self.scratch = scratch;
            read.map_err(|e| self.io_error(e, "a block"))?;
            self.held = Held::Scratch;
            self.held_bytes = 0;
        }
        self.pos += n as u64;
        Ok(())
    }

    /// The open block's stored bytes (`n` of them), wherever they are held.
    #[inline]
    fn stored(&mut self, n: usize) -> Result<&[u8], SegmentError> {
        match self.held {
            Held::Source => match self.source.fill_buf() {
                Ok(buf) => Ok(&buf[..n]),
                Err(e) => Err(SegmentError::Io {
                    offset: self.pos,
                    detail: e.to_string(),
                }),
            },
            Held::Scratch => Ok(&self.scratch[..n]),
            Held::Raw => Ok(&self.raw[..n]),
        }
    }

    /// Gives the source back the bytes the finished block held in its buffer.
    fn release_block(&mut self) {
        if self.held == Held::Source && self.held_bytes > 0 {
            self.source.consume(self.held_bytes);
        }
        self.held_bytes = 0;
        self.held = Held::Scratch;
    }

    /// Reads the next block (or trailer, then the next segment's first block). `false` at the
    /// end of the bytes.
    fn next_block(&mut self) -> Result<bool, SegmentError> {
        self.release_block();
        loop {
            if self.pos == self.len {
                if self.blocks != 0 || self.digest.records != 0 {
                    return Err(SegmentError::Truncated {
                        offset: self.pos,
                        detail: "the bytes end inside a segment (no trailer)".into(),
                    });
                }
                return Ok(false);
            }
            let start = self.pos;
            let mut h = [0u8; BLOCK_HEADER_BYTES];
            self.read_small(&mut h[..4], "a block header")?;
            let raw_len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
            if raw_len == TRAILER_MARK {
                let mut t = [0u8; TRAILER_BYTES];
                t[0..4].copy_from_slice(&h[0..4]);
                self.read_small(&mut t[4..], "a segment trailer")?;
                let stored_crc = u32::from_le_bytes(t[24..28].try_into().expect("4 bytes"));
                if stored_crc != trailer_crc(&t[0..24], self.tag) {
                    return Err(SegmentError::corrupt(
                        start,
                        "segment trailer checksum mismatch",
                    ));
                }
                let blocks = u32::from_le_bytes(t[4..8].try_into().expect("4 bytes"));
                let records = u64::from_le_bytes(t[8..16].try_into().expect("8 bytes"));
                let hash_sum = u64::from_le_bytes(t[16..24].try_into().expect("8 bytes"));
                if blocks != self.blocks
                    || records != self.digest.records
                    || hash_sum != self.digest.hash_sum
                {
                    return Err(SegmentError::corrupt(
                        start,
                        format!(
                            "segment trailer says {blocks} blocks, {records} records (digest \
                             {hash_sum:#x}); read {} blocks, {} records (digest {:#x})",
                            self.blocks, self.digest.records, self.digest.hash_sum
                        ),
                    ));
                }
                self.total = self.total.combine(self.digest);
                self.blocks = 0;
                self.digest = RecordDigest::default();
                continue;
            }
            self.read_small(&mut h[4..], "a block header")?;
            let stored_len = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
            let records = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
            let plain = self.decompressor.is_none();
            if (plain && stored_len != raw_len)
                || records == 0
                || u64::from(records) * RECORD_PREFIX_BYTES as u64 > u64::from(raw_len)
            {
                return Err(SegmentError::corrupt(
                    start,
                    format!(
                        "block header does not add up: {raw_len} raw bytes, {stored_len} stored, \
                         {records} records"
                    ),
                ));
            }
            let n = stored_len as usize;
            self.take_block(n)?;
            let (number, tag) = (self.blocks, self.tag);
            let stored = self.stored(n)?;
            if crc != block_crc(stored, raw_len, stored_len, records, number, tag) {
                return Err(SegmentError::corrupt(start, "block checksum mismatch"));
            }
            let raw_len = raw_len as usize;
            if self.decompressor.is_some() {
                if self.raw.len() < raw_len {
                    self.raw.resize(raw_len, 0);
                }
                let mut raw = std::mem::take(&mut self.raw);
                let mut d = self.decompressor.take().expect("checked above");
                let result = self.stored(n).and_then(|stored| {
                    d.decompress_into(stored, &mut raw[..raw_len])
                        .map_err(|e: CodecError| SegmentError::corrupt(start, e.to_string()))
                });
                self.decompressor = Some(d);
                self.raw = raw;
                result?;
                self.release_block();
                self.held = Held::Raw;
            }
            self.block_len = raw_len;
            self.block_start = start;
            self.blocks += 1;
            self.at = 0;
            self.block_records_left = records;
            return Ok(true);
        }
    }

    /// The next record, verified; `None` once every segment's trailer matched.
    #[inline]
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, SegmentError> {
        if self.done {
            return Ok(None);
        }
        while self.block_records_left == 0 {
            if !self.next_block()? {
                self.done = true;
                return Ok(None);
            }
        }
        let block: &[u8] = match self.held {
            Held::Source => match self.source.fill_buf() {
                Ok(buf) => &buf[..self.block_len],
                Err(e) => {
                    return Err(SegmentError::Io {
                        offset: self.pos,
                        detail: e.to_string(),
                    });
                }
            },
            Held::Scratch => &self.scratch[..self.block_len],
            Held::Raw => &self.raw[..self.block_len],
        };
        let at = self.at;
        let bad = |detail| SegmentError::corrupt(self.block_start, detail);
        let Some(prefix) = block.get(at..at + RECORD_PREFIX_BYTES) else {
            return Err(bad("a record runs past its block"));
        };
        let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        let start = at + RECORD_PREFIX_BYTES;
        let Some(record) = block.get(start..start + len) else {
            return Err(bad("a record runs past its block"));
        };
        self.at = start + len;
        self.block_records_left -= 1;
        if self.block_records_left == 0 && self.at != self.block_len {
            return Err(bad("a block holds bytes beyond its records"));
        }
        self.digest.add(record);
        Ok(Some(record))
    }
}

/// The index file's bytes for these partition lengths.
pub fn encode_index(lengths: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity((lengths.len() + 1) * 8 + 4);
    let mut offset = 0u64;
    out.extend_from_slice(&0i64.to_be_bytes());
    for l in lengths {
        offset += l;
        out.extend_from_slice(&(offset as i64).to_be_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The partition offsets of an index file (`partitions + 1` of them), checked: its length, its
/// checksum, a first offset of 0 and offsets that never decrease.
pub fn index_offsets(bytes: &[u8], partitions: u32) -> Result<Vec<u64>, String> {
    let want = (partitions as usize + 1) * 8 + 4;
    if bytes.len() != want {
        return Err(format!(
            "index file of {} bytes, expected {want} for {partitions} partitions",
            bytes.len()
        ));
    }
    let (body, crc) = bytes.split_at(want - 4);
    let stored = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
    if stored != crc32c::crc32c(body) {
        return Err("index file checksum mismatch".into());
    }
    let offsets: Vec<u64> = body
        .chunks_exact(8)
        .map(|c| i64::from_be_bytes(c.try_into().expect("8 bytes")) as u64)
        .collect();
    if offsets[0] != 0 || offsets.windows(2).any(|w| w[1] < w[0]) {
        return Err("index offsets do not start at 0 and grow".into());
    }
    Ok(offsets)
}

/// [`index_offsets`], and the last offset must be the data file's length.
pub fn decode_index(bytes: &[u8], partitions: u32, data_len: u64) -> Result<Vec<u64>, String> {
    let offsets = index_offsets(bytes, partitions)?;
    if *offsets.last().expect("n+1 offsets") != data_len {
        return Err(format!(
            "index offsets do not describe a data file of {data_len} bytes"
        ));
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecName;

    fn write_segments(codec: Option<Codec>, parts: &[Vec<Vec<u8>>]) -> (Vec<u8>, Vec<u64>) {
        let mut w = SegmentWriter::new(codec, 1000);
        let mut out = Vec::new();
        let mut lengths = Vec::new();
        for (r, records) in parts.iter().enumerate() {
            w.begin(segment_tag(1, 2, r as u32));
            for rec in records {
                w.write_record(&mut out, rec).unwrap();
            }
            lengths.push(w.end(&mut out).unwrap().0);
        }
        (out, lengths)
    }

    fn records(n: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut s = seed + i as u64;
                (0..len)
                    .map(|j| {
                        if j % 3 == 0 {
                            b'a'
                        } else {
                            crate::data::splitmix64(&mut s) as u8
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn read_all(
        bytes: &[u8],
        tag: u64,
        codec: Option<Codec>,
    ) -> Result<Vec<Vec<u8>>, SegmentError> {
        let mut r = SegmentReader::new(bytes, bytes.len() as u64, tag, codec);
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn segments_round_trip_with_every_codec_and_empty_partitions_have_no_bytes() {
        let parts = vec![records(500, 40, 1), vec![], records(3, 5000, 9)];
        for codec in [
            None,
            Some(Codec::with_defaults(CodecName::Lz4)),
            Some(Codec::with_defaults(CodecName::Snappy)),
            Some(Codec::with_defaults(CodecName::Zstd)),
        ] {
            let (bytes, lengths) = write_segments(codec, &parts);
            assert_eq!(lengths[1], 0);
            let mut at = 0usize;
            for (r, want) in parts.iter().enumerate() {
                let seg = &bytes[at..at + lengths[r] as usize];
                assert_eq!(
                    &read_all(seg, segment_tag(1, 2, r as u32), codec).unwrap(),
                    want
                );
                at += lengths[r] as usize;
            }
        }
    }

    #[test]
    fn concatenated_segments_read_as_one_partition() {
        let a = records(100, 30, 5);
        let b = records(70, 30, 6);
        let mut w = SegmentWriter::new(None, 512);
        let mut out = Vec::new();
        for part in [&a, &b] {
            w.begin(segment_tag(0, 0, 4));
            for rec in part.iter() {
                w.write_record(&mut out, rec).unwrap();
            }
            w.end(&mut out).unwrap();
        }
        let got = read_all(&out, segment_tag(0, 0, 4), None).unwrap();
        assert_eq!(got.len(), 170);
        assert_eq!(&got[..100], &a[..]);
    }

    /// The bytes of one segment as the module doc describes them, built without the writer:
    /// blocks cut before the record that would take them past `block_bytes` raw bytes (a
    /// larger record alone), each `raw_len ‖ stored_len ‖ records ‖ crc ‖ stored`, then the
    /// trailer.
    fn documented_segment(
        codec: Option<Codec>,
        block_bytes: usize,
        tag: u64,
        records: &[Vec<u8>],
    ) -> Vec<u8> {
        let mut blocks: Vec<(Vec<u8>, u32)> = Vec::new();
        for r in records {
            let framed = 4 + r.len();
            match blocks.last_mut() {
                Some((raw, n)) if raw.len() + framed <= block_bytes => {
                    raw.extend_from_slice(&(r.len() as u32).to_le_bytes());
                    raw.extend_from_slice(r);
                    *n += 1;
                }
                _ => {
                    let mut raw = (r.len() as u32).to_le_bytes().to_vec();
                    raw.extend_from_slice(r);
                    blocks.push((raw, 1));
                }
            }
        }
        let mut out = Vec::new();
        let mut digest = RecordDigest::default();
        for r in records {
            digest.add(r);
        }
        for (i, (raw, n)) in blocks.iter().enumerate() {
            let stored = match codec {
                Some(c) => {
                    let mut z = Vec::new();
                    c.compressor().compress(raw, &mut z).unwrap();
                    z
                }
                None => raw.clone(),
            };
            let mut fields = Vec::new();
            fields.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            fields.extend_from_slice(&(stored.len() as u32).to_le_bytes());
            fields.extend_from_slice(&n.to_le_bytes());
            let mut crc_input = stored.clone();
            crc_input.extend_from_slice(&fields);
            crc_input.extend_from_slice(&(i as u32).to_le_bytes());
            crc_input.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&fields);
            out.extend_from_slice(&crc32c::crc32c(&crc_input).to_le_bytes());
            out.extend_from_slice(&stored);
        }
        let mut t = Vec::new();
        t.extend_from_slice(&u32::MAX.to_le_bytes());
        t.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
        t.extend_from_slice(&digest.records.to_le_bytes());
        t.extend_from_slice(&digest.hash_sum.to_le_bytes());
        let mut crc_input = t.clone();
        crc_input.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&crc32c::crc32c(&crc_input).to_le_bytes());
        out.extend_from_slice(&t);
        out
    }

    #[test]
    fn the_writer_writes_the_documented_bytes() {
        // Small and large records, a record larger than a block between others, and a
        // record that fills a block exactly.
        let mut recs = records(300, 37, 4);
        recs.insert(120, vec![7u8; 2500]);
        recs.insert(200, vec![9u8; 996]);
        recs.extend(records(3, 0, 5));
        for codec in [None, Some(Codec::with_defaults(CodecName::Lz4))] {
            let block = codec.map_or(1000, |c| c.block_bytes);
            let mut w = SegmentWriter::new(codec, 1000);
            let mut out = Vec::new();
            let tag = segment_tag(2, 3, 4);
            w.begin(tag);
            for r in &recs {
                w.write_record(&mut out, r).unwrap();
            }
            let (len, digest) = w.end(&mut out).unwrap();
            assert_eq!(
                out,
                documented_segment(codec, block, tag, &recs),
                "{codec:?}"
            );
            assert_eq!(len, out.len() as u64);
            assert_eq!(digest.records, recs.len() as u64);
        }
    }

    #[test]
    fn a_buffered_source_of_any_size_reads_back_the_same_records() {
        // Blocks that straddle the source's buffer are copied; whole ones are read in place.
        let parts = vec![records(700, 41, 8)];
        for codec in [None, Some(Codec::with_defaults(CodecName::Zstd))] {
            let (bytes, _) = write_segments(codec, &parts);
            let tag = segment_tag(1, 2, 0);
            for cap in [1, 5, 16, 100, 1000, 1017, 4096, 1 << 20] {
                let source = std::io::BufReader::with_capacity(cap, &bytes[..]);
                let mut r = SegmentReader::new(source, bytes.len() as u64, tag, codec);
                let mut got = Vec::new();
                while let Some(rec) = r.next_record().unwrap() {
                    got.push(rec.to_vec());
                }
                assert_eq!(got, parts[0], "buffer of {cap} bytes, {codec:?}");
                assert_eq!(r.verified().records, 700);
                // Damage found through a buffer too.
                let mut bad = bytes.clone();
                bad[bytes.len() / 2] ^= 4;
                let source = std::io::BufReader::with_capacity(cap, &bad[..]);
                let mut r = SegmentReader::new(source, bad.len() as u64, tag, codec);
                let mut failed = false;
                loop {
                    match r.next_record() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                assert!(failed, "buffer of {cap} bytes, {codec:?}");
            }
        }
    }

    #[test]
    fn every_damaged_byte_and_every_cut_is_an_error() {
        let codec = Some(Codec::with_defaults(CodecName::Lz4));
        let parts = vec![records(200, 24, 3)];
        let (bytes, _) = write_segments(codec, &parts);
        let tag = segment_tag(1, 2, 0);
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut d = bytes.clone();
                d[i] ^= bit;
                assert!(read_all(&d, tag, codec).is_err(), "byte {i} bit {bit:#x}");
            }
        }
        for cut in 0..bytes.len() {
            assert!(
                read_all(&bytes[..cut], tag, codec).is_err() || cut == 0,
                "cut {cut}"
            );
        }
        // The right bytes under another block's tag.
        assert!(read_all(&bytes, segment_tag(1, 2, 1), codec).is_err());
    }

    #[test]
    fn index_round_trips_and_rejects_damage() {
        let idx = encode_index(&[10, 0, 5]);
        assert_eq!(idx.len(), 4 * 8 + 4);
        assert_eq!(decode_index(&idx, 3, 15).unwrap(), vec![0, 10, 10, 15]);
        assert!(decode_index(&idx, 3, 16).is_err());
        let mut bad = idx.clone();
        bad[9] ^= 1;
        assert!(decode_index(&bad, 3, 15).is_err());
        assert!(decode_index(&idx[..idx.len() - 1], 3, 15).is_err());
    }
}
