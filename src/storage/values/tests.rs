//! Checked against what Spark 4.3.0 measured (`scripts/spark/results/objsize-probe-2026-12-02.json`,
//! `tests/data/size_tracking_vector.json`, a copy of `scripts/spark/results/objsize-vector-probe-2026-12-02.json`).

use super::*;

fn results(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/scripts/spark/results/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The records the probe made (`objsize_probe.records`), as spillway records.
fn probe_records(kind: &str, n: u64) -> (RecordType, Vec<Vec<u8>>) {
    let t = match kind {
        "long_pair" => RecordType::LongPair,
        "bytes100" => RecordType::Bytes,
        _ => RecordType::String,
    };
    let recs = (0..n)
        .map(|i| match kind {
            "long_pair" => {
                let mut r = (i * 3 + (1 << 33)).to_le_bytes().to_vec();
                r.extend_from_slice(&(i + (1 << 40)).to_le_bytes());
                r
            }
            "bytes100" => (0..100).map(|j| ((i + j) % 251) as u8).collect(),
            "string20" => format!("s{i:019}").into_bytes()[..20].to_vec(),
            _ => format!("t{i:099}").into_bytes()[..100].to_vec(),
        })
        .collect();
    (t, recs)
}

const LAYOUT: JvmLayout = JvmLayout {
    header: 12,
    pointer: 4,
};

#[test]
fn class_sizes_are_spark_s() {
    assert_eq!(LAYOUT.long_pair(), 40);
    assert_eq!(LAYOUT.string_shell(), 24);
    assert_eq!(LAYOUT.byte_array(0), 16);
    assert_eq!(LAYOUT.byte_array(1), 24);
    assert_eq!(LAYOUT.byte_array(100), 120);
    assert_eq!(LAYOUT.object_size(RecordType::String, 20), 64);
    assert_eq!(LAYOUT.ref_array(10), 56);
    // 32 GiB and more: 16-byte headers and 8-byte references.
    let big = JvmLayout::for_heap(32 << 30);
    assert_eq!((big.header, big.pointer), (16, 8));
    assert_eq!(big.long_pair(), 48);
    assert_eq!(big.byte_array(100), 24 + 104);
    assert_eq!(big.string_shell(), 32);
    assert_eq!(JvmLayout::for_heap((32 << 30) - 1), LAYOUT);
}

#[test]
fn array_estimates_match_spark() {
    let r = results("objsize-probe-2026-12-02.json");
    let session = &r["sessions"]["JavaSerializer spark.rdd.compress=true"];
    let mut checked = 0;
    for kind in ["long_pair", "bytes100", "string20", "string100"] {
        for (n, row) in session[kind].as_object().unwrap() {
            let n: u64 = n.parse().unwrap();
            let (t, recs) = probe_records(kind, n);
            let sizes: Vec<u64> = recs
                .iter()
                .map(|r| LAYOUT.object_size(t, r.len() as u64))
                .collect();
            let want = row["sizeEstimate"].as_u64().unwrap();
            assert_eq!(values_array_estimate(&LAYOUT, &sizes), want, "{kind} x {n}");
            checked += 1;
        }
    }
    assert_eq!(checked, 24);
    // 1050 pairs: Spark counts 1000 of them (the sampled estimate's integer division).
    assert_eq!(
        values_array_estimate(&LAYOUT, &[40; 1050]),
        16 + 4200 + 40_000
    );
}

#[test]
fn the_unroll_estimate_follows_size_tracking_vector() {
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/data/size_tracking_vector.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    for (kind, probe_kind) in [
        ("long_pair", "long_pair"),
        ("bytes", "bytes100"),
        ("string", "string100"),
    ] {
        let series: Vec<u64> = r["series"][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let (t, recs) = probe_records(probe_kind, series.len() as u64 - 1);
        let mut tracker = VectorTracker::new(LAYOUT);
        assert_eq!(tracker.estimate(), series[0], "{kind}: empty");
        for (i, rec) in recs.iter().enumerate() {
            tracker.push(LAYOUT.object_size(t, rec.len() as u64));
            assert_eq!(
                tracker.estimate(),
                series[i + 1],
                "{kind}: after {} values",
                i + 1
            );
        }
    }
}

fn encode_all(format: ValueFormat, recs: &[Vec<u8>]) -> (Vec<u8>, u64) {
    let mut enc = Encoder::new(format);
    let mut out = Vec::new();
    for r in recs {
        enc.push(r, &mut out);
    }
    let size = enc.finish(&mut out);
    (out, size)
}

fn decode_all(format: &ValueFormat, n: u64, record_bytes: u64, pieces: &[&[u8]]) -> Vec<Vec<u8>> {
    decode_with_pending(format, n, record_bytes, pieces, &[])
}

fn decode_with_pending(
    format: &ValueFormat,
    n: u64,
    record_bytes: u64,
    pieces: &[&[u8]],
    pending: &[u8],
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    decode(format, n, record_bytes, pieces, pending, |r| {
        got.push(r.to_vec());
        Ok::<(), ()>(())
    })
    .unwrap_or_else(|e| match e {
        ReadError::Decode(d) => panic!("{d}"),
        ReadError::Visit(()) => unreachable!(),
    });
    got
}

#[test]
fn serialized_sizes_match_spark() {
    let r = results("objsize-probe-2026-12-02.json");
    for (session, kryo, compress) in [
        ("JavaSerializer spark.rdd.compress=false", false, false),
        ("KryoSerializer spark.rdd.compress=false", true, false),
        ("JavaSerializer spark.rdd.compress=true", false, true),
        ("KryoSerializer spark.rdd.compress=true", true, true),
    ] {
        let conf = ValuesConf {
            kryo,
            rdd_codec: compress.then(|| Codec::with_defaults(CodecName::Lz4)),
            layout: LAYOUT,
        };
        for kind in ["long_pair", "bytes100", "string20", "string100"] {
            for (n, row) in r["sessions"][session][kind].as_object().unwrap() {
                let n: u64 = n.parse().unwrap();
                let (t, recs) = probe_records(kind, n);
                let format = ValueFormat::choose(t, StorageLevel::MEMORY_ONLY_SER, &conf);
                let (bytes, size) = encode_all(format, &recs);
                assert_eq!(size, bytes.len() as u64);
                let want = row["serializedBytes"].as_u64().unwrap();
                if compress {
                    // lz4_flex is not lz4-java's compressor: the framing is Spark's, the
                    // compressed bodies come within a few percent.
                    let ratio = size as f64 / want as f64;
                    assert!(
                        (0.9..=1.1).contains(&ratio),
                        "{session} {kind} x {n}: {size} vs Spark's {want}"
                    );
                } else {
                    assert_eq!(size, want, "{session} {kind} x {n}");
                }
                let rb = recs[0].len() as u64;
                assert_eq!(
                    decode_all(&format, n, rb, &[&bytes]),
                    recs,
                    "{session} {kind}"
                );
            }
        }
    }
    // Spark's real cache of 20,000 pairs, uncompressed: Java 503,804 bytes, Kryo 360,000.
    let (_, recs) = probe_records("long_pair", 20_000);
    for (kryo, want) in [(false, 503_804), (true, 360_000)] {
        let conf = ValuesConf {
            kryo,
            rdd_codec: None,
            layout: LAYOUT,
        };
        let f = ValueFormat::choose(RecordType::LongPair, StorageLevel::MEMORY_ONLY_SER, &conf);
        assert_eq!(encode_all(f, &recs).1, want);
        let f = ValueFormat::choose(RecordType::LongPair, StorageLevel::MEMORY_ONLY, &conf);
        assert_eq!(encode_all(f, &recs).1, 880_016, "MEMORY_ONLY");
    }
}

#[test]
fn every_format_round_trips_across_pieces_and_partials() {
    let codecs = [
        None,
        Some(Codec::with_defaults(CodecName::Lz4)),
        Some(Codec::with_defaults(CodecName::Snappy)),
        Some(Codec::with_defaults(CodecName::Zstd)),
    ];
    for kind in ["long_pair", "bytes100", "string20", "string100"] {
        let (t, mut recs) = probe_records(kind, 5000);
        if t != RecordType::LongPair {
            // A partition's last record is shorter; a one-character string is written
            // with a length, not as ASCII.
            recs.push(b"x".to_vec());
        }
        let rb = recs[0].len() as u64;
        let mut formats = vec![
            ValueFormat::Raw,
            ValueFormat::Objects {
                record_type: t,
                layout: LAYOUT,
            },
            ValueFormat::Objects {
                record_type: t,
                layout: JvmLayout::for_heap(64 << 30),
            },
        ];
        for kryo in [false, true] {
            for codec in codecs {
                formats.push(ValueFormat::choose(
                    t,
                    StorageLevel::MEMORY_AND_DISK_SER,
                    &ValuesConf {
                        kryo,
                        rdd_codec: codec,
                        layout: LAYOUT,
                    },
                ));
            }
        }
        for f in formats {
            let (bytes, size) = encode_all(f, &recs);
            assert!(size <= bytes.len() as u64, "{f:?}");
            // In odd-sized pieces.
            let pieces: Vec<&[u8]> = bytes.chunks(7919).collect();
            let n = recs.len() as u64;
            assert_eq!(decode_all(&f, n, rb, &pieces), recs, "{f:?}");
            // A partial unroll: the bytes out so far plus what the compressor holds.
            let mut enc = Encoder::new(f);
            let mut out = Vec::new();
            for r in &recs[..1234] {
                enc.push(r, &mut out);
            }
            let got = decode_with_pending(&f, 1234, rb, &[&out], enc.pending());
            assert_eq!(got, recs[..1234].to_vec(), "partial {f:?}");
        }
    }
}

#[test]
fn damaged_bytes_are_an_error() {
    let (_, recs) = probe_records("long_pair", 300);
    let conf = ValuesConf::default();
    let f = ValueFormat::choose(RecordType::LongPair, StorageLevel::MEMORY_ONLY_SER, &conf);
    let (mut bytes, _) = encode_all(f, &recs);
    bytes[40] ^= 0xff;
    let r = decode(&f, 300, 16, &[&bytes], &[], |_| Ok::<(), ()>(()));
    assert!(matches!(r, Err(ReadError::Decode(_))), "{r:?}");
}

#[test]
fn xxh32_vectors() {
    assert_eq!(xxh32(b"", 0), 0x02cc_5d05);
    assert_eq!(xxh32(b"a", 0), 0x550d_7456);
    assert_eq!(xxh32(b"abc", 0), 0x32d1_53ff);
    assert_eq!(
        xxh32(b"Nobody inspects the spammish repetition", 0),
        0xe229_3b2f
    );
}

#[test]
fn java_random_is_java_s() {
    // Java 17: `new java.util.Random(42)`, five `nextInt(10)`, then afresh five
    // `nextInt(1050)`.
    let mut r = JavaRandom::new(42);
    let got: Vec<i32> = (0..5).map(|_| r.next_int(10)).collect();
    assert_eq!(got, [0, 3, 8, 4, 0]);
    let mut r = JavaRandom::new(42);
    let got: Vec<i32> = (0..5).map(|_| r.next_int(1050)).collect();
    assert_eq!(got, [680, 663, 48, 584, 1020]);
}
