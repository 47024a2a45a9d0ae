//! Fuzzes the Java `.properties` parser behind `--properties-file`, then loads its pairs into a
//! `SparkConf` and validates them as the binary does.
//! Oracle: no panic; a refused file is one of the typed errors; Spark's trim is idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway::conf::{SparkConf, properties};
use spillway::layout::Layout;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(pairs) = properties::parse(&text) else {
        return;
    };
    let mut conf = SparkConf::new();
    for (k, v) in &pairs {
        let v = properties::spark_trim(v);
        assert_eq!(properties::spark_trim(v), v, "trim not idempotent: {v:?}");
        conf.set(k, v);
    }
    let _ = conf.warnings();
    if conf.validate_values().is_ok() {
        let _ = Layout::from_conf(&conf, None).map(|l| l.render_tree());
    }
});
