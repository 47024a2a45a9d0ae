//! Fuzzes `--conf` arguments through validation to a layout: any configuration gives a
//! `Layout` or a typed `ConfError`, never a panic (docs/reliability.md item 21).
//!
//! Input: lines of `KEY=VALUE` (each one `SparkConf::apply_conf_arg`); a line `@SIZE` sets the
//! `--system-memory` stand-in. A short key (`memory` for `spark.executor.memory`, ...) expands
//! to the key it ends, so the fuzzer reaches every key cheaply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway::conf::{ByteUnit, SparkConf, byte_string_as, keys};
use spillway::layout::Layout;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut conf = SparkConf::new();
    let mut system_memory = None;
    for line in text.lines() {
        if let Some(size) = line.strip_prefix('@') {
            system_memory = byte_string_as(size, ByteUnit::Byte).ok();
            continue;
        }
        let arg = match line.split_once('=') {
            Some((k, v)) if !k.contains('.') && !k.is_empty() => {
                match keys::KEYS.iter().find(|d| d.key.ends_with(k)) {
                    Some(def) => format!("{}={v}", def.key),
                    None => line.to_string(),
                }
            }
            _ => line.to_string(),
        };
        if let Err(e) = conf.apply_conf_arg(&arg) {
            let _ = e.to_string();
        }
    }
    let _ = conf.warnings();
    if let Err(e) = conf.validate_values() {
        let _ = e.to_string();
    }
    match Layout::from_conf(&conf, system_memory) {
        Ok(layout) => {
            // Rendering a valid layout must not panic either, and its regions tile the heap.
            let _ = layout.render_tree();
            let _ = layout.to_json();
            let _ = layout.container_bytes();
            let _ = layout.heap_ranges();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
