//! Fuzzes scenario files (`Scenario::parse`, TOML), then applies a parsed scenario's `[conf]`
//! and sizes its layout, as `spillway run` does before it runs anything.
//! Oracle: no panic; a parsed scenario has at least one stage and every scan/unpersist names
//! an RDD cached before it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway::conf::SparkConf;
use spillway::layout::Layout;
use spillway::scenario::Scenario;
use spillway::stage::RddUse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Scenario::parse(text, "fuzz", None) {
        Ok(s) => {
            assert!(!s.stages.is_empty());
            let mut cached = Vec::new();
            for stage in &s.stages {
                let _ = stage.stage.label();
                match stage.stage.rdd() {
                    RddUse::Caches(rdd) => {
                        assert!(!cached.contains(&rdd), "rdd {rdd} cached twice");
                        cached.push(rdd);
                    }
                    RddUse::Reads(rdd) => {
                        assert!(cached.contains(&rdd), "rdd {rdd} used before it is cached");
                    }
                    RddUse::Removes(rdd) => {
                        assert!(cached.contains(&rdd), "rdd {rdd} used before it is cached");
                        cached.retain(|r| *r != rdd);
                    }
                    RddUse::None => {}
                }
            }
            let mut conf = SparkConf::new();
            for (k, v) in &s.conf {
                conf.set(k, v);
            }
            let _ = Layout::from_conf(&conf, None).map(|l| l.render_tree());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
