//! Fuzzes the worker pipe protocol (`external::protocol`): frames read from untrusted bytes,
//! through a reader that hands them out in fuzzer-chosen chunk sizes (short reads, EINTR).
//! Oracles: no panic and no allocation beyond `MAX_FRAME_BYTES`; a decoded message written
//! back and read again is the same message.
#![no_main]

use std::io::{self, Cursor, Read};

use libfuzzer_sys::fuzz_target;
use spillway::external::protocol::{ProtocolError, Reply, Request, read_frame, write_frame};

/// Returns at most `chunks[i]` bytes per call; a chunk of 0 is an `Interrupted` error.
struct Chunked<'a> {
    data: &'a [u8],
    chunks: &'a [u8],
    i: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let c = self.chunks.get(self.i % self.chunks.len().max(1)).copied();
        self.i += 1;
        if c == Some(0) && self.i < 64 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = (c.unwrap_or(255).max(1) as usize).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn roundtrip<T>(msg: &T)
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let mut out = Vec::new();
    if write_frame(&mut out, msg).is_ok() {
        let back: T = read_frame(&mut Cursor::new(&out)).expect("own frame reads back");
        assert_eq!(&back, msg);
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: how many chunk sizes follow; then the chunk sizes; the rest is the stream.
    let (nchunks, rest) = data.split_first().map_or((0, data), |(n, r)| (*n as usize % 16, r));
    let (chunks, stream) = rest.split_at(nchunks.min(rest.len()));
    for as_reply in [true, false] {
        let mut r = Chunked { data: stream, chunks, i: 0 };
        for _ in 0..16 {
            let res = if as_reply {
                read_frame::<Reply>(&mut r).map(|m| roundtrip(&m))
            } else {
                read_frame::<Request>(&mut r).map(|m| roundtrip(&m))
            };
            match res {
                Ok(()) => {}
                Err(ProtocolError::Eof) => break,
                Err(e) => {
                    let _ = e.to_string();
                    // After a bad frame the worker is killed; nothing more is read.
                    break;
                }
            }
        }
    }
});
