//! Fuzzes Spark's value parsers: byte strings in every unit and every typed key parser.
//! Oracles: no panic; a parsed byte string is never negative (Spark's grammar has no sign);
//! an int parses as the same long; a double printed Java's way parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway::conf::{ByteUnit, byte_string_as, keys};

const UNITS: [ByteUnit; 6] = [
    ByteUnit::Byte,
    ByteUnit::KiB,
    ByteUnit::MiB,
    ByteUnit::GiB,
    ByteUnit::TiB,
    ByteUnit::PiB,
];

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    for unit in UNITS {
        if let Ok(v) = byte_string_as(&s, unit) {
            assert!(v >= 0, "{s:?} in {unit:?} parsed to {v}");
        }
        let _ = keys::parse_size(&s, unit).map_err(|e| e.to_string());
    }
    let long = keys::parse_java_long(&s);
    if let Some(i) = keys::parse_java_int(&s) {
        assert_eq!(long, Some(i64::from(i)), "{s:?}");
    }
    if let Some(d) = keys::parse_java_double(&s) {
        let printed = keys::java_double_string(d);
        let back = keys::parse_java_double(&printed);
        assert!(
            back.is_some_and(|b| b.to_bits() == d.to_bits() || (b.is_nan() && d.is_nan())),
            "{s:?} -> {d:?} -> {printed:?} -> {back:?}"
        );
    }
    let _ = keys::parse_java_bool(&s);
    if let Some(ms) = keys::parse_time_ms(&s) {
        assert!(ms >= 0, "{s:?} parsed to {ms} ms");
    }
    let _ = keys::parse_python_memory_mib(&s);
    let _ = keys::lookup(&s);
});
