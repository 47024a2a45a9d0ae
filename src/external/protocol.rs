//! The executor–worker protocol: frames of a 4-byte little-endian length and that many bytes of
//! JSON, over the worker's stdin (requests) and stdout (replies); the worker's stderr is its log.
//!
//! A task is one exchange, shaped like PySpark's `worker.py` loop:
//!
//! ```text
//! worker   -> Hello { pid, kind, rlimit ... }            once, after start-up (and setrlimit)
//! executor -> Udf { .. } | Aggregate { .. }
//! worker   -> UdfDone { .. } | AggregateDone { .. }      the result; the task's memory is still
//!             | Error { class, message, traceback }      held (PySpark streams results first)
//!                                                        on Error the worker exits (-1)
//! executor -> EndOfStream                                after it has measured the worker
//! worker   -> EndOfStream                                memory freed; ready for reuse
//! ```
//!
//! Worker output is untrusted: a length of 0 or above [`MAX_FRAME_BYTES`], a short read, bad
//! JSON or an unexpected reply is a [`ProtocolError`], and the worker is killed, never trusted.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// The largest frame either side accepts (a traceback fits; a flood does not).
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// A request from the executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// A UDF whose working set is `bytes`: allocate, write the pattern of `seed`, re-read.
    Udf { task: u64, bytes: u64, seed: u64 },
    /// `reduceByKey` in the worker: `records` records of `seed` over `distinct_keys` keys,
    /// through an `ExternalMerger` with `spark.python.worker.memory` = `memory_limit_mib`.
    Aggregate {
        task: u64,
        records: u64,
        distinct_keys: u64,
        seed: u64,
        memory_limit_mib: u64,
    },
    /// `SpecialLengths.END_OF_STREAM`: the task's output was read; free it and stay for reuse.
    EndOfStream,
}

/// A reply from a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    Hello {
        pid: u32,
        kind: String,
        version: String,
        /// `PYSPARK_EXECUTOR_MEMORY_MB` as the worker read it (-1 when unset).
        memory_limit_mb: i64,
        /// RLIMIT_AS after start-up (`None`: unlimited).
        rlimit_as_soft: Option<u64>,
        rlimit_as_hard: Option<u64>,
        /// Whether the worker lowered RLIMIT_AS itself.
        rlimit_set: bool,
        /// The warning printed when setting the limit failed.
        warning: Option<String>,
    },
    UdfDone {
        task: u64,
        bytes: u64,
        checksum: u64,
    },
    AggregateDone {
        task: u64,
        records: u64,
        keys: u64,
        value_sum: u64,
        digest: u64,
        spills: u64,
        memory_bytes_spilled: u64,
        disk_bytes_spilled: u64,
        rss_checks: u64,
    },
    Error {
        task: u64,
        /// The Python exception class (`MemoryError`).
        class: String,
        message: String,
        traceback: String,
    },
    EndOfStream,
}

/// A broken exchange.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("worker closed its output (exited)")]
    Eof,
    #[error("i/o error talking to the worker: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame length {0} outside 1..={MAX_FRAME_BYTES}")]
    BadLength(u32),
    #[error("malformed frame: {0}")]
    BadJson(String),
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(out: &mut impl Write, msg: &T) -> Result<(), ProtocolError> {
    let body = serde_json::to_vec(msg).map_err(|e| ProtocolError::BadJson(e.to_string()))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n > 0 && n <= MAX_FRAME_BYTES)
        .ok_or(ProtocolError::BadLength(u32::MAX))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&body)?;
    out.flush()?;
    Ok(())
}

/// Reads one frame; EOF before its first byte is [`ProtocolError::Eof`].
pub fn read_frame<T: for<'de> Deserialize<'de>>(input: &mut impl Read) -> Result<T, ProtocolError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(ProtocolError::Eof),
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(len);
    if len == 0 || len > MAX_FRAME_BYTES {
        return Err(ProtocolError::BadLength(len));
    }
    let mut body = vec![0u8; len as usize];
    input.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(|e| ProtocolError::BadJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut buf = Vec::new();
        let req = Request::Udf {
            task: 3,
            bytes: 1 << 20,
            seed: 9,
        };
        write_frame(&mut buf, &req).unwrap();
        let back: Request = read_frame(&mut buf.as_slice()).unwrap();
        assert_eq!(back, req);

        let huge = (MAX_FRAME_BYTES + 1).to_le_bytes();
        let err = read_frame::<Reply>(&mut huge.as_slice()).unwrap_err();
        assert!(matches!(err, ProtocolError::BadLength(_)), "{err}");
        let zero = 0u32.to_le_bytes();
        assert!(matches!(
            read_frame::<Reply>(&mut zero.as_slice()),
            Err(ProtocolError::BadLength(0))
        ));
        assert!(matches!(
            read_frame::<Reply>(&mut [].as_slice()),
            Err(ProtocolError::Eof)
        ));
        // A length promising more than is sent.
        let mut short = 10u32.to_le_bytes().to_vec();
        short.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame::<Reply>(&mut short.as_slice()),
            Err(ProtocolError::Io(_))
        ));
        let mut bad = Vec::new();
        write_frame(&mut bad, &serde_json::json!({"op": "udf_done", "task": -1})).unwrap();
        assert!(matches!(
            read_frame::<Reply>(&mut bad.as_slice()),
            Err(ProtocolError::BadJson(_))
        ));
    }
}
