//! Compression codecs of shuffle files and spills (docs/spark-model.md §19).
//!
//! Spark wraps each shuffle, spill and fetch stream in the codec of `spark.io.compression.codec`
//! (lz4 by default, snappy, zstd), which compresses the stream a block at a time: lz4's
//! `LZ4BlockOutputStream` and snappy's stream compress each `blockSize` (32 KiB) of input on its
//! own; zstd's buffered stream hands it `bufferSize` (32 KiB) at a time. spillway does the same
//! with the codec crates (`lz4_flex`, `snap`, `zstd`): a [`Compressor`] compresses one block of
//! at most [`Codec::block_bytes`] raw bytes, and the file formats that use it (`spill`,
//! `shuffle`) frame each compressed block with its raw and stored lengths and a CRC32C of the
//! stored bytes, so damage is found before a byte is decompressed.
//!
//! Differences from Spark's bytes, by design: the block headers are spillway's own (Spark's lz4
//! block header is 21 bytes with an xxHash32, spillway's frame header carries a CRC32C), and
//! zstd compresses each block with a fresh window where Spark's stream keeps its window across
//! buffers, so zstd's ratio here is a little lower than Spark's on data whose repeats are farther
//! apart than a block.
//!
//! Which streams are compressed ([`Compression`], §19.3): shuffle data files and the spills of
//! the shuffle writers (`TempShuffleBlockId`) follow `spark.shuffle.compress`; the spills of
//! sorts and aggregations and fetched-to-disk blocks (`TempLocalBlockId`) follow
//! `spark.shuffle.spill.compress`.

use std::fmt;

use crate::conf::{ConfError, SparkConf, keys};

/// A codec Spark names in `spark.io.compression.codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    Lz4,
    Snappy,
    Zstd,
}

impl CodecName {
    /// Spark's short name.
    pub fn short_name(self) -> &'static str {
        match self {
            CodecName::Lz4 => "lz4",
            CodecName::Snappy => "snappy",
            CodecName::Zstd => "zstd",
        }
    }

    /// The byte a file header stores for it (0 is "not compressed").
    pub fn id(self) -> u8 {
        match self {
            CodecName::Lz4 => 1,
            CodecName::Snappy => 2,
            CodecName::Zstd => 3,
        }
    }

    /// The codec of a header byte; `None` for 0 and unknown bytes.
    pub fn from_id(id: u8) -> Option<CodecName> {
        match id {
            1 => Some(CodecName::Lz4),
            2 => Some(CodecName::Snappy),
            3 => Some(CodecName::Zstd),
            _ => None,
        }
    }

    /// `CompressionCodec.getCodecName`: a short name (any case) or Spark's class name.
    pub fn parse(value: &str) -> Result<CodecName, ConfError> {
        let lower = value.to_ascii_lowercase();
        match (lower.as_str(), value) {
            ("lz4", _) | (_, "org.apache.spark.io.LZ4CompressionCodec") => Ok(CodecName::Lz4),
            ("snappy", _) | (_, "org.apache.spark.io.SnappyCompressionCodec") => {
                Ok(CodecName::Snappy)
            }
            ("zstd", _) | (_, "org.apache.spark.io.ZStdCompressionCodec") => Ok(CodecName::Zstd),
            ("lzf", _) | (_, "org.apache.spark.io.LZFCompressionCodec") => {
                Err(ConfError::Unsupported {
                    key: keys::IO_COMPRESSION_CODEC.into(),
                    value: value.into(),
                    reason: "spillway has no lzf codec; use lz4, snappy or zstd".into(),
                })
            }
            _ => Err(ConfError::Unsupported {
                key: keys::IO_COMPRESSION_CODEC.into(),
                value: value.into(),
                reason: "[CODEC_NOT_AVAILABLE] not a codec Spark ships; use lz4, snappy or zstd"
                    .into(),
            }),
        }
    }
}

impl fmt::Display for CodecName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// A codec with its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    pub name: CodecName,
    /// Raw bytes compressed at a time: lz4/snappy `blockSize`, zstd `bufferSize`.
    pub block_bytes: usize,
    /// zstd's level (unused by the others).
    pub zstd_level: i32,
}

impl Codec {
    /// `spark.io.compression.codec` with its block-size and level keys.
    pub fn from_conf(conf: &SparkConf) -> Result<Codec, ConfError> {
        let name = CodecName::parse(conf.get_str(keys::IO_COMPRESSION_CODEC))?;
        let block_key = match name {
            CodecName::Lz4 => keys::IO_COMPRESSION_LZ4_BLOCK_SIZE,
            CodecName::Snappy => keys::IO_COMPRESSION_SNAPPY_BLOCK_SIZE,
            CodecName::Zstd => keys::IO_COMPRESSION_ZSTD_BUFFER_SIZE,
        };
        Ok(Codec {
            name,
            block_bytes: conf.get_size(block_key)? as usize,
            zstd_level: conf.get_int(keys::IO_COMPRESSION_ZSTD_LEVEL)?,
        })
    }

    /// A codec with Spark's default settings.
    pub fn with_defaults(name: CodecName) -> Codec {
        Codec {
            name,
            block_bytes: 32 * 1024,
            zstd_level: 1,
        }
    }

    /// The most bytes one block of `raw_len` bytes compresses to.
    pub fn max_compressed_len(&self, raw_len: usize) -> usize {
        match self.name {
            CodecName::Lz4 => lz4_flex::block::get_maximum_output_size(raw_len),
            CodecName::Snappy => snap::raw::max_compress_len(raw_len),
            CodecName::Zstd => zstd::zstd_safe::compress_bound(raw_len),
        }
    }

    /// A compressor (holds the codec's context; one per writer).
    pub fn compressor(&self) -> Compressor {
        Compressor {
            codec: *self,
            lz4: lz4_flex::block::CompressTable::default(),
            snappy: snap::raw::Encoder::new(),
            zstd: None,
        }
    }

    /// A decompressor (one per reader).
    pub fn decompressor(&self) -> Decompressor {
        Decompressor {
            codec: *self,
            snappy: snap::raw::Decoder::new(),
            zstd: None,
        }
    }
}

/// A block that failed to compress or decompress.
#[derive(Debug, thiserror::Error)]
#[error("{codec} {op}: {detail}")]
pub struct CodecError {
    pub codec: CodecName,
    pub op: &'static str,
    pub detail: String,
}

/// Compresses blocks with one codec, keeping its context between blocks: lz4's hash table,
/// snappy's encoder and zstd's context are made once, so compressing a block allocates
/// nothing (once `out` has grown to a block's bound).
pub struct Compressor {
    codec: Codec,
    lz4: lz4_flex::block::CompressTable,
    snappy: snap::raw::Encoder,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Compresses `raw` (one block) into `out`, which holds exactly the compressed block
    /// afterwards.
    pub fn compress(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.resize(self.codec.max_compressed_len(raw.len()), 0);
        let n = self.compress_into(raw, out)?;
        out.truncate(n);
        Ok(())
    }

    /// Compresses `raw` (one block) into the front of `out`, which must hold at least
    /// [`Codec::max_compressed_len`] bytes; returns the compressed length. With a buffer kept
    /// by the caller nothing is allocated or zeroed per block (what the spill writer does).
    pub fn compress_into(&mut self, raw: &[u8], out: &mut [u8]) -> Result<usize, CodecError> {
        let name = self.codec.name;
        let err = |detail: String| CodecError {
            codec: name,
            op: "compress",
            detail,
        };
        let bound = self.codec.max_compressed_len(raw.len());
        if out.len() < bound {
            return Err(err(format!(
                "an output of {} bytes is below the bound of {bound} for {} bytes",
                out.len(),
                raw.len()
            )));
        }
        match name {
            CodecName::Lz4 => lz4_flex::block::compress_into_with_table(raw, out, &mut self.lz4)
                .map_err(|e| err(e.to_string())),
            CodecName::Snappy => self
                .snappy
                .compress(raw, out)
                .map_err(|e| err(e.to_string())),
            CodecName::Zstd => {
                if self.zstd.is_none() {
                    let c = zstd::bulk::Compressor::new(self.codec.zstd_level)
                        .map_err(|e| err(e.to_string()))?;
                    self.zstd = Some(c);
                }
                let c = self.zstd.as_mut().expect("set above");
                c.compress_to_buffer(raw, out)
                    .map_err(|e| err(e.to_string()))
            }
        }
    }
}

/// Decompresses blocks of one codec, keeping its context between blocks.
pub struct Decompressor {
    codec: Codec,
    snappy: snap::raw::Decoder,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl Decompressor {
    /// Decompresses `stored` (one block) into `out`, which must come out exactly `raw_len`
    /// bytes long; anything else is an error, never a short or padded block.
    pub fn decompress(
        &mut self,
        stored: &[u8],
        raw_len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        out.resize(raw_len, 0);
        self.decompress_into(stored, out)
    }

    /// Decompresses `stored` (one block) into all of `out`, which the block must fill exactly:
    /// into a buffer the caller keeps, nothing is allocated or zeroed per block.
    pub fn decompress_into(&mut self, stored: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
        let name = self.codec.name;
        let raw_len = out.len();
        let err = |detail: String| CodecError {
            codec: name,
            op: "decompress",
            detail,
        };
        let n = match name {
            CodecName::Lz4 => {
                lz4_flex::block::decompress_into(stored, out).map_err(|e| err(e.to_string()))?
            }
            CodecName::Snappy => {
                let len = snap::raw::decompress_len(stored).map_err(|e| err(e.to_string()))?;
                if len != raw_len {
                    return Err(err(format!("block says {len} bytes, the frame {raw_len}")));
                }
                self.snappy
                    .decompress(stored, out)
                    .map_err(|e| err(e.to_string()))?
            }
            CodecName::Zstd => {
                if self.zstd.is_none() {
                    let d = zstd::bulk::Decompressor::new().map_err(|e| err(e.to_string()))?;
                    self.zstd = Some(d);
                }
                let d = self.zstd.as_mut().expect("set above");
                d.decompress_to_buffer(stored, out)
                    .map_err(|e| err(e.to_string()))?
            }
        };
        if n != raw_len {
            return Err(err(format!("{n} bytes out of a block of {raw_len}")));
        }
        Ok(())
    }
}

/// Which streams a run compresses, and with what (docs/spark-model.md §19.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// Shuffle data files and the shuffle writers' spills (`spark.shuffle.compress`).
    pub shuffle: Option<Codec>,
    /// Sort and aggregation spills, fetched-to-disk blocks (`spark.shuffle.spill.compress`).
    pub spill: Option<Codec>,
}

impl Compression {
    /// Reads the codec and the two switches. The codec is parsed even when both are off, as
    /// Spark's `SerializerManager` creates it eagerly.
    pub fn from_conf(conf: &SparkConf) -> Result<Compression, ConfError> {
        let codec = Codec::from_conf(conf)?;
        let on = |key| conf.get_bool(key).map(|b| b.then_some(codec));
        Ok(Compression {
            shuffle: on(keys::SHUFFLE_COMPRESS)?,
            spill: on(keys::SPILL_COMPRESS)?,
        })
    }

    /// Nothing compressed.
    pub const NONE: Compression = Compression {
        shuffle: None,
        spill: None,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Vec<u8> {
        let words = [
            &b"spark "[..],
            b"executor ",
            b"memory ",
            b"spill ",
            b"shuffle ",
        ];
        let mut out = Vec::with_capacity(len);
        let mut i = 0usize;
        while out.len() < len {
            out.extend_from_slice(words[(i * 7 + i / 3) % words.len()]);
            i += 1;
        }
        out.truncate(len);
        out
    }

    #[test]
    fn every_codec_round_trips_and_compresses_text() {
        for name in [CodecName::Lz4, CodecName::Snappy, CodecName::Zstd] {
            let codec = Codec::with_defaults(name);
            let mut c = codec.compressor();
            let mut d = codec.decompressor();
            for len in [0usize, 1, 100, 32 * 1024] {
                let raw = text(len);
                let mut stored = Vec::new();
                c.compress(&raw, &mut stored).unwrap();
                if len == 32 * 1024 {
                    assert!(stored.len() < len / 4, "{name}: {} of {len}", stored.len());
                }
                let mut back = Vec::new();
                d.decompress(&stored, len, &mut back).unwrap();
                assert_eq!(back, raw, "{name} {len}");
            }
        }
    }

    #[test]
    fn a_damaged_or_mislabelled_block_is_an_error() {
        for name in [CodecName::Lz4, CodecName::Snappy, CodecName::Zstd] {
            let codec = Codec::with_defaults(name);
            let raw = text(10_000);
            let mut stored = Vec::new();
            codec.compressor().compress(&raw, &mut stored).unwrap();
            let mut back = Vec::new();
            let mut d = codec.decompressor();
            assert!(d.decompress(&stored, 9_999, &mut back).is_err(), "{name}");
            assert!(
                d.decompress(&stored[..stored.len() / 2], 10_000, &mut back)
                    .is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn names_parse_as_spark_reads_them() {
        assert_eq!(CodecName::parse("LZ4").unwrap(), CodecName::Lz4);
        assert_eq!(
            CodecName::parse("org.apache.spark.io.ZStdCompressionCodec").unwrap(),
            CodecName::Zstd
        );
        let e = CodecName::parse("gzip").unwrap_err().to_string();
        assert!(
            e.contains("spark.io.compression.codec") && e.contains("gzip"),
            "{e}"
        );
        assert!(CodecName::parse("lzf").is_err());
    }

    #[test]
    fn compression_follows_the_two_switches() {
        let conf = SparkConf::new()
            .with(keys::SHUFFLE_COMPRESS, "false")
            .with(keys::IO_COMPRESSION_CODEC, "zstd")
            .with(keys::IO_COMPRESSION_ZSTD_BUFFER_SIZE, "64k");
        let c = Compression::from_conf(&conf).unwrap();
        assert_eq!(c.shuffle, None);
        let spill = c.spill.unwrap();
        assert_eq!((spill.name, spill.block_bytes), (CodecName::Zstd, 65536));
    }
}
