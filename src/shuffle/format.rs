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
//! larger.
//!
//! # Index
//!
//! `IndexShuffleBlockResolver`'s file: `reduce_partitions + 1` offsets as big-endian `i64`
//! (Java's `DataOutputStream.writeLong`), the first 0 and the last the data file's length,
//! followed by spillway's CRC32C of them (4 bytes, big-endian).

use std::io::{self, Read, Write};

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
/// (a temporary file, a spill file, the data file). Keeps one raw block and one compressed
/// block buffer, reused for every segment.
pub struct SegmentWriter {
    compressor: Option<Compressor>,
    block_bytes: usize,
    raw: Vec<u8>,
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
            compressor: codec.map(|c| c.compressor()),
            block_bytes,
            raw: Vec::with_capacity(block_bytes + 64),
            stored: Vec::new(),
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
        self.raw.clear();
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
        let need = RECORD_PREFIX_BYTES + record.len();
        if !self.raw.is_empty() && self.raw.len() + need > self.block_bytes {
            self.flush_block(sink)?;
        }
        self.raw
            .extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.raw.extend_from_slice(record);
        self.block_records += 1;
        self.digest.add(record);
        Ok(())
    }

    fn flush_block(&mut self, sink: &mut impl Write) -> io::Result<()> {
        let raw_len = u32::try_from(self.raw.len())
            .ok()
            .filter(|&l| l != TRAILER_MARK)
            .ok_or_else(|| io::Error::other("a shuffle block of 4 GiB or more"))?;
        let stored: &[u8] = match self.compressor.as_mut() {
            Some(c) => {
                c.compress(&self.raw, &mut self.stored)
                    .map_err(io::Error::other)?;
                &self.stored
            }
            None => &self.raw,
        };
        let stored_len = stored.len() as u32;
        let crc = block_crc(
            stored,
            raw_len,
            stored_len,
            self.block_records,
            self.blocks,
            self.tag,
        );
        let mut h = [0u8; BLOCK_HEADER_BYTES];
        h[0..4].copy_from_slice(&raw_len.to_le_bytes());
        h[4..8].copy_from_slice(&stored_len.to_le_bytes());
        h[8..12].copy_from_slice(&self.block_records.to_le_bytes());
        h[12..16].copy_from_slice(&crc.to_le_bytes());
        sink.write_all(&h)?;
        sink.write_all(stored)?;
        self.segment_bytes += (BLOCK_HEADER_BYTES + stored.len()) as u64;
        self.blocks += 1;
        self.raw.clear();
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
        if !self.raw.is_empty() {
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

/// Reads the records of one partition's bytes (one or more segments) from a stream of exactly
/// `len` bytes, verifying every block before handing out its records.
pub struct SegmentReader<R: Read> {
    source: R,
    len: u64,
    pos: u64,
    tag: u64,
    decompressor: Option<Decompressor>,
    stored: Vec<u8>,
    raw: Vec<u8>,
    /// Next record in `raw` and the records left in the block.
    at: usize,
    block_records_left: u32,
    // The open segment.
    blocks: u32,
    digest: RecordDigest,
    /// All segments so far.
    total: RecordDigest,
    done: bool,
}

impl<R: Read> SegmentReader<R> {
    /// A reader of `len` bytes of `source` written with `codec` under `tag`.
    pub fn new(source: R, len: u64, tag: u64, codec: Option<Codec>) -> SegmentReader<R> {
        SegmentReader {
            source,
            len,
            pos: 0,
            tag,
            decompressor: codec.map(|c| c.decompressor()),
            stored: Vec::new(),
            raw: Vec::new(),
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

    fn read_exact(&mut self, n: usize, what: &str) -> Result<(), SegmentError> {
        if self.pos + n as u64 > self.len {
            return Err(SegmentError::Truncated {
                offset: self.pos,
                detail: format!(
                    "{what} of {n} bytes runs past the block's {} bytes",
                    self.len
                ),
            });
        }
        self.stored.resize(n, 0);
        self.source
            .read_exact(&mut self.stored)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => SegmentError::Truncated {
                    offset: self.pos,
                    detail: format!("the source ended inside {what}"),
                },
                _ => SegmentError::Io {
                    offset: self.pos,
                    detail: e.to_string(),
                },
            })?;
        self.pos += n as u64;
        Ok(())
    }

    /// Reads the next block (or trailer, then the next segment's first block). `false` at the
    /// end of the bytes.
    fn next_block(&mut self) -> Result<bool, SegmentError> {
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
            self.read_exact(4, "a block header")?;
            let raw_len = u32::from_le_bytes(self.stored[0..4].try_into().expect("4 bytes"));
            if raw_len == TRAILER_MARK {
                self.read_exact(TRAILER_BYTES - 4, "a segment trailer")?;
                let mut t = [0u8; TRAILER_BYTES];
                t[0..4].copy_from_slice(&TRAILER_MARK.to_le_bytes());
                t[4..].copy_from_slice(&self.stored);
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
                self.total.records += self.digest.records;
                self.total.hash_sum = self.total.hash_sum.wrapping_add(self.digest.hash_sum);
                self.blocks = 0;
                self.digest = RecordDigest::default();
                continue;
            }
            self.read_exact(BLOCK_HEADER_BYTES - 4, "a block header")?;
            let h = &self.stored;
            let stored_len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
            let records = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
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
            self.read_exact(stored_len as usize, "a block")?;
            if crc
                != block_crc(
                    &self.stored,
                    raw_len,
                    stored_len,
                    records,
                    self.blocks,
                    self.tag,
                )
            {
                return Err(SegmentError::corrupt(start, "block checksum mismatch"));
            }
            match self.decompressor.as_mut() {
                Some(d) => d
                    .decompress(&self.stored, raw_len as usize, &mut self.raw)
                    .map_err(|e: CodecError| SegmentError::corrupt(start, e.to_string()))?,
                None => std::mem::swap(&mut self.raw, &mut self.stored),
            }
            self.blocks += 1;
            self.at = 0;
            self.block_records_left = records;
            return Ok(true);
        }
    }

    /// The next record, verified; `None` once every segment's trailer matched.
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, SegmentError> {
        if self.done {
            return Ok(None);
        }
        while self.block_records_left == 0 {
            if self.at != self.raw.len() && self.blocks > 0 {
                return Err(SegmentError::corrupt(
                    self.pos,
                    "a block holds bytes beyond its records",
                ));
            }
            if !self.next_block()? {
                self.done = true;
                return Ok(None);
            }
        }
        let at = self.at;
        let bad = || SegmentError::corrupt(0, "a record runs past its block");
        let len_bytes = self.raw.get(at..at + RECORD_PREFIX_BYTES).ok_or_else(bad)?;
        let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        let start = at + RECORD_PREFIX_BYTES;
        if start + len > self.raw.len() {
            return Err(bad());
        }
        self.at = start + len;
        self.block_records_left -= 1;
        if self.block_records_left == 0 && self.at != self.raw.len() {
            return Err(SegmentError::corrupt(
                self.pos,
                "a block holds bytes beyond its records",
            ));
        }
        let record = &self.raw[start..start + len];
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
