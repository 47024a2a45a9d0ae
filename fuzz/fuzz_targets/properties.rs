//! Fuzzes the Java `.properties` parser behind `--properties-file`, then loads its pairs into a
//! `SparkConf` and validates them as the binary does.
//! Oracle: no panic; every key and value is trimmed the way Spark's loader trims values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway::conf::{SparkConf, properties};
use spillway::layout::Layout;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let pairs = properties::parse(&text);
    let mut conf = SparkConf::new();
    for (k, v) in &pairs {
        assert_eq!(v.trim(), v, "value not trimmed: {v:?}");
        conf.set(k, v);
    }
    let _ = conf.warnings();
    if conf.validate_values().is_ok() {
        let _ = Layout::from_conf(&conf, None).map(|l| l.render_tree());
    }
});
