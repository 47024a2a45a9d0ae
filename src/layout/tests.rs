//! Layout arithmetic and validation against the numbers Spark computes (docs/spark-model.md §16).

use proptest::prelude::*;

use super::*;

const MIB: i64 = 1 << 20;

fn layout(pairs: &[(&str, &str)]) -> Result<Layout, ConfError> {
    let mut conf = SparkConf::new();
    for (k, v) in pairs {
        conf.set(k, v);
    }
    Layout::from_conf(&conf, None)
}

fn err(pairs: &[(&str, &str)]) -> String {
    layout(pairs).unwrap_err().to_string()
}

const SEED: &[(&str, &str)] = &[
    ("spark.executor.memory", "4g"),
    ("spark.memory.fraction", "0.75"),
    ("spark.memory.storageFraction", "0.5"),
];

#[test]
fn seed_example_of_the_korean_note() {
    let l = layout(SEED).unwrap();
    assert_eq!(l.system_memory, 4_294_967_296);
    assert_eq!(l.reserved, 314_572_800);
    assert_eq!(l.min_system_memory, 471_859_200);
    assert_eq!(l.usable, 3_980_394_496);
    assert_eq!(l.unified, 2_985_295_872);
    assert_eq!(l.unified, 2847 * MIB);
    assert_eq!(l.user, 995_098_624);
    assert_eq!(l.user, 949 * MIB);
    assert_eq!(l.storage_region, 1_492_647_936);
    assert_eq!(l.execution_region, 1_492_647_936);
    assert_eq!(format_mib(l.storage_region as u64), "1423.5");
}

#[test]
fn default_fraction_rounding_gives_the_remainder_to_execution() {
    let l = layout(&[("spark.executor.memory", "4g")]).unwrap();
    assert_eq!(l.unified, 2_388_236_697);
    assert_eq!(l.storage_region, 1_194_118_348);
    assert_eq!(l.execution_region, 1_194_118_349);
    assert_eq!(l.user, 3_980_394_496 - 2_388_236_697);
}

#[test]
fn page_sizes_of_the_worked_example() {
    let with = |cores: &str, gc: &str| {
        let mut pairs = SEED.to_vec();
        pairs.push(("spark.executor.cores", cores));
        pairs.push(("spillway.jvm.gc", gc));
        layout(&pairs).unwrap().page_size
    };
    assert_eq!(with("4", "parallel"), 33_554_432);
    assert_eq!(with("4", "g1"), 33_554_416);
    assert_eq!(with("1", "parallel"), 67_108_864);
    assert_eq!(with("1", "g1"), 67_108_848);
    // A tiny pool is clamped up to 1 MiB.
    let l = layout(&[
        ("spark.executor.memory", "1g"),
        ("spark.executor.cores", "64"),
        ("spillway.jvm.gc", "parallel"),
    ])
    .unwrap();
    assert_eq!(l.page_size, 1 << 20);
    // An explicit page size wins, in bytes.
    let l = layout(&[("spark.buffer.pageSize", "2m")]).unwrap();
    assert_eq!(l.page_size, 2 << 20);
    assert!(l.page_size_explicit);
}

#[test]
fn off_heap_page_size_has_no_g1_header() {
    let l = layout(&[
        ("spark.memory.offHeap.enabled", "true"),
        ("spark.memory.offHeap.size", "2g"),
        ("spark.executor.cores", "2"),
    ])
    .unwrap();
    // off-heap execution pool 1 GiB / 2 / 16 = 32 MiB exactly.
    assert_eq!(l.off_heap_execution_region, 1 << 30);
    assert_eq!(l.page_size, 32 << 20);
}

#[test]
fn next_power_of_two_matches_byte_array_methods() {
    assert_eq!(next_power_of_2(0), 0);
    assert_eq!(next_power_of_2(1), 1);
    assert_eq!(next_power_of_2(23_322_624), 33_554_432);
    assert_eq!(next_power_of_2(1 << 20), 1 << 20);
    assert_eq!(next_power_of_2((1 << 20) + 1), 2 << 20);
}

#[test]
fn container_values_of_the_worked_example() {
    let l = layout(&[("spark.executor.memory", "4g")]).unwrap();
    assert_eq!(l.overhead_mib, 409);
    assert_eq!(l.container_mib, 4505);
    assert_eq!(l.container_bytes(), 4505 * MIB);
    assert!(matches!(l.overhead_rule, OverheadRule::Factor { .. }));

    // Kubernetes' default factor for Python apps.
    let l = layout(&[
        ("spark.executor.memory", "4g"),
        ("spark.executor.memoryOverheadFactor", "0.4"),
    ])
    .unwrap();
    assert_eq!(l.container_mib, 5734);

    // The minimum wins for small heaps.
    let l = layout(&[("spark.executor.memory", "1g")]).unwrap();
    assert_eq!(l.overhead_mib, 384);
    assert_eq!(l.container_mib, 1408);
    assert!(matches!(
        l.overhead_rule,
        OverheadRule::Minimum {
            factor_mib: 102,
            ..
        }
    ));

    // Explicit overhead, off-heap (floor MiB) and pyspark all add up.
    let l = layout(&[
        ("spark.executor.memory", "4g"),
        ("spark.executor.memoryOverhead", "1000"),
        ("spark.memory.offHeap.enabled", "true"),
        ("spark.memory.offHeap.size", "1073741825"),
        ("spark.executor.pyspark.memory", "512m"),
    ])
    .unwrap();
    assert_eq!(l.container_mib, 4096 + 1000 + 1024 + 512);
    assert_eq!(l.to_json().pyspark, 512 * MIB);

    // A JVM-only application does not count pyspark memory.
    let l = layout(&[
        ("spark.executor.memory", "4g"),
        ("spark.executor.pyspark.memory", "512m"),
        ("spark.yarn.isPython", "false"),
    ])
    .unwrap();
    assert_eq!(l.container_mib, 4505);
}

#[test]
fn off_heap_pools_are_sized_even_when_disabled() {
    let l = layout(&[("spark.memory.offHeap.size", "1g")]).unwrap();
    assert!(!l.off_heap_enabled);
    assert_eq!(l.off_heap, 1 << 30);
    assert_eq!(l.off_heap_storage_region, 512 * MIB);
    assert_eq!(l.off_heap_execution_region, 512 * MIB);
    // ... but the container only counts it when enabled.
    assert_eq!(l.container_mib, 1024 + 384);
    let l = layout(&[
        ("spark.memory.offHeap.size", "1001"),
        ("spark.memory.storageFraction", "0.3"),
    ])
    .unwrap();
    assert_eq!(l.off_heap_storage_region, 300);
    assert_eq!(l.off_heap_execution_region, 701);
}

#[test]
fn testing_keys_are_honoured() {
    let l = layout(&[
        ("spark.testing.memory", "1000000000"),
        ("spark.executor.memory", "4g"),
    ])
    .unwrap();
    assert_eq!(l.system_memory, 1_000_000_000);
    assert_eq!(l.system_memory_source, SystemMemorySource::TestingMemory);
    assert_eq!(l.heap_bytes, 4 << 30);
    assert_eq!(l.heap_mapping_bytes(), 4 << 30);
    let r = l.heap_ranges();
    assert_eq!(r.unified.0 + r.unified.1, 1_000_000_000);
    assert_eq!(r.jvm_internal, (1_000_000_000, (4 << 30) - 1_000_000_000));

    // spark.testing present: no reserved memory unless spark.testing.reservedMemory says so.
    let l = layout(&[("spark.testing", "true"), ("spark.testing.memory", "1000")]).unwrap();
    assert_eq!((l.reserved, l.min_system_memory, l.usable), (0, 0, 1000));
    assert_eq!(l.unified, 600);
    let l = layout(&[
        ("spark.testing.reservedMemory", "1000"),
        ("spark.testing.memory", "1501"),
    ])
    .unwrap();
    assert_eq!((l.reserved, l.min_system_memory), (1000, 1500));
    // ceil(R * 1.5) rounds up.
    let l = layout(&[
        ("spark.testing.reservedMemory", "3"),
        ("spark.testing.memory", "5"),
    ])
    .unwrap();
    assert_eq!(l.min_system_memory, 5);
}

#[test]
fn explicit_system_memory_stands_in_for_runtime_max_memory() {
    let mut conf = SparkConf::new();
    conf.set("spark.executor.memory", "1g");
    // Java 8 Parallel GC reports 954728448 for -Xmx1g (docs/spark-model.md §15.1).
    let l = Layout::from_conf(&conf, Some(954_728_448)).unwrap();
    assert_eq!(l.system_memory, 954_728_448);
    assert_eq!(l.system_memory_source, SystemMemorySource::Explicit);
    assert_eq!(l.usable, 954_728_448 - 314_572_800);
    assert_eq!(l.unified, ((954_728_448 - 314_572_800) as f64 * 0.6) as i64);
    assert_eq!(l.heap_mapping_bytes(), 1 << 30);
}

// --- Errors of docs/spark-model.md §12.1–§12.5 -------------------------------------------------------------

#[test]
fn system_memory_below_450_mib_is_invalid_driver_memory() {
    let e = err(&[("spark.testing.memory", "471859199")]);
    assert_eq!(
        e,
        "[INVALID_DRIVER_MEMORY] System memory 471859199 must be at least 471859200. Please \
         increase heap size using the --driver-memory option or \"spark.driver.memory\" in \
         Spark configuration. SQLSTATE: F0000"
    );
    let mut conf = SparkConf::new();
    conf.set("spark.executor.memory", "1g");
    let e = Layout::from_conf(&conf, Some(400 << 20)).unwrap_err();
    assert!(matches!(
        e,
        ConfError::InvalidDriverMemory {
            system_memory: 419_430_400,
            min_system_memory: 471_859_200
        }
    ));
    // Exactly the minimum passes.
    assert!(layout(&[("spark.testing.memory", "471859200")]).is_ok());
}

#[test]
fn executor_memory_below_450_mib_is_invalid_executor_memory() {
    let e = err(&[("spark.executor.memory", "400m")]);
    assert_eq!(
        e,
        "[INVALID_EXECUTOR_MEMORY] Executor memory 419430400 must be at least 471859200. Please \
         increase executor memory using the --executor-memory option or \
         \"spark.executor.memory\" in Spark configuration. SQLSTATE: F0000"
    );
    // The unit-less quirk: 4096 is 4096 MiB for the launch but 4096 bytes for this check.
    let e = layout(&[("spark.executor.memory", "4096")]).unwrap_err();
    assert!(matches!(
        e,
        ConfError::InvalidExecutorMemory {
            executor_memory: 4096,
            ..
        }
    ));
    // With an explicit system memory, Spark's order holds: system memory is checked first.
    let mut conf = SparkConf::new();
    conf.set("spark.executor.memory", "400m");
    let e = Layout::from_conf(&conf, Some(400 << 20)).unwrap_err();
    assert!(matches!(e, ConfError::InvalidDriverMemory { .. }));
    let e = Layout::from_conf(&conf, Some(1 << 30)).unwrap_err();
    assert!(matches!(e, ConfError::InvalidExecutorMemory { .. }));
}

#[test]
fn fractions_outside_zero_one_are_refused() {
    assert_eq!(
        err(&[("spark.memory.fraction", "1.5")]),
        "spark.memory.fraction should be between 0 and 1 (was '1.5')."
    );
    assert_eq!(
        err(&[("spark.memory.fraction", "-0.1")]),
        "spark.memory.fraction should be between 0 and 1 (was '-0.1')."
    );
    assert_eq!(
        err(&[("spark.memory.storageFraction", "2")]),
        "spark.memory.storageFraction should be between 0 and 1 (was '2.0')."
    );
    // storageFraction = 1 passes validateSettings but fails its config check.
    assert_eq!(
        err(&[("spark.memory.storageFraction", "1.0")]),
        "'1.0' in spark.memory.storageFraction is invalid. Storage fraction must be in [0,1)"
    );
    // The bounds themselves are accepted.
    let l = layout(&[
        ("spark.memory.fraction", "1"),
        ("spark.memory.storageFraction", "0"),
    ])
    .unwrap();
    assert_eq!(l.user, 0);
    assert_eq!(l.storage_region, 0);
    // A fraction of 0 leaves no execution memory, which Spark's MemoryManager refuses.
    assert_eq!(
        err(&[("spark.memory.fraction", "0")]),
        "requirement failed: onHeapExecutionMemory must be > 0"
    );
}

#[test]
fn off_heap_enabled_needs_a_size() {
    let expected = "requirement failed: spark.memory.offHeap.size must be > 0 when \
                    spark.memory.offHeap.enabled == true";
    assert_eq!(err(&[("spark.memory.offHeap.enabled", "true")]), expected);
    assert_eq!(
        err(&[
            ("spark.memory.offHeap.enabled", "true"),
            ("spark.memory.offHeap.size", "0")
        ]),
        expected
    );
}

#[test]
fn negative_sizes_are_refused_naming_key_and_value() {
    for key in [
        "spark.memory.offHeap.size",
        "spark.executor.memory",
        "spark.executor.memoryOverhead",
        "spark.executor.pyspark.memory",
    ] {
        let e = err(&[(key, "-1")]);
        assert!(e.contains(key), "{e}");
        assert!(e.contains("'-1'"), "{e}");
        assert!(e.contains("Size must be specified as bytes (b)"), "{e}");
    }
    let e = err(&[("spark.testing.memory", "-5")]);
    assert!(
        e.contains("spark.testing.memory") && e.contains("-5"),
        "{e}"
    );
}

#[test]
fn overhead_factor_must_be_positive() {
    assert_eq!(
        err(&[("spark.executor.memoryOverheadFactor", "0")]),
        "'0.0' in spark.executor.memoryOverheadFactor is invalid. Ensure that memory overhead \
         is a double greater than 0"
    );
    assert!(err(&[("spark.executor.memoryOverheadFactor", "-0.5")]).contains("'-0.5'"));
}

#[test]
fn xmx_in_executor_java_options_is_refused() {
    let e = err(&[("spark.executor.extraJavaOptions", "-Xmx4g -Dfoo=bar")]);
    assert!(
        e.starts_with("[INVALID_SPARK_CONFIG.INVALID_EXECUTOR_MEMORY_OPTIONS]"),
        "{e}"
    );
    assert!(e.contains("-Xmx4g"), "{e}");
}

#[test]
fn cores_must_be_positive() {
    let e = err(&[("spark.executor.cores", "0")]);
    assert!(
        e.contains("spark.executor.cores") && e.contains("'0'"),
        "{e}"
    );
}

#[test]
fn json_has_exactly_the_design_keys() {
    let json = serde_json::to_value(layout(SEED).unwrap().to_json()).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    let mut expected = vec![
        "system_memory",
        "reserved",
        "usable",
        "user",
        "unified",
        "storage_region",
        "execution_region",
        "off_heap_enabled",
        "off_heap",
        "off_heap_storage_region",
        "off_heap_execution_region",
        "overhead",
        "pyspark",
        "container",
        "page_size",
        "cores",
        "min_system_memory",
    ];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(json["unified"], 2_985_295_872i64);
    assert_eq!(json["off_heap_enabled"], false);
}

#[test]
fn tree_shows_each_region_with_its_rule() {
    let tree = layout(SEED).unwrap().render_tree();
    for needle in [
        "2985295872",
        "1423.5 MiB",
        "995098624",
        "314572800",
        "spark.memory.fraction 0.75",
        "the factor wins",
        "4505 MiB",
    ] {
        assert!(tree.contains(needle), "missing {needle} in\n{tree}");
    }
    let small = layout(&[("spark.executor.memory", "1g")])
        .unwrap()
        .render_tree();
    assert!(
        small.contains("spark.executor.minMemoryOverhead wins"),
        "{small}"
    );
}

proptest! {
    /// For any heap of at least 450 MiB and fractions in [0, 1], the regions tile system memory.
    #[test]
    fn regions_tile_system_memory(
        heap_mib in 450i64..1_048_576,
        fraction in 0.0f64..=1.0,
        storage_fraction in 0.0f64..1.0,
        off_heap in 0i64..(1 << 40),
        cores in 1i32..128,
    ) {
        let mut conf = SparkConf::new();
        conf.set("spark.executor.memory", &format!("{heap_mib}m"));
        conf.set("spark.memory.fraction", &format!("{fraction}"));
        conf.set("spark.memory.storageFraction", &format!("{storage_fraction}"));
        conf.set("spark.memory.offHeap.size", &off_heap.to_string());
        conf.set("spark.executor.cores", &cores.to_string());
        let l = match Layout::from_conf(&conf, None) {
            Ok(l) => l,
            Err(ConfError::Requirement(m)) => {
                // Only a unified pool of 0 bytes leaves no execution memory.
                prop_assert!(((heap_mib * MIB - 314_572_800) as f64 * fraction) < 1.0, "{}", m);
                return Ok(());
            }
            Err(e) => panic!("{e}"),
        };
        prop_assert_eq!(l.storage_region + l.execution_region, l.unified);
        prop_assert_eq!(l.unified + l.user + l.reserved, l.system_memory);
        prop_assert_eq!(l.off_heap_storage_region + l.off_heap_execution_region, l.off_heap);
        for v in [l.reserved, l.user, l.unified, l.storage_region, l.execution_region,
                  l.off_heap_storage_region, l.off_heap_execution_region] {
            prop_assert!(v >= 0, "negative region in {:?}", l);
        }
        prop_assert!(l.page_size >= (1 << 20) - 16 && l.page_size <= 64 << 20);
        prop_assert!(l.container_mib >= l.heap_mib + 384);
    }
}

// Regressions found by `fuzz/` (conf_layout): sizes whose bytes pass i64::MAX, and a core
// count whose double overflowed i32 while printing the fair share, panicked instead of
// giving a layout or a typed error.
#[test]
fn sizes_past_i64_max_bytes_are_refused_by_name() {
    let e = err(&[("spark.executor.memory", "53688888888888888")]);
    assert!(
        e.contains("spark.executor.memory") && e.contains("bytes"),
        "{e}"
    );
    let e = err(&[
        ("spark.executor.memory", "1g"),
        ("spark.executor.pyspark.memory", "9000000000000t"),
        ("spark.yarn.isPython", "false"),
    ]);
    assert!(e.contains("spark.executor.pyspark.memory"), "{e}");
    let e = err(&[
        ("spark.executor.memory", "5000000000000"),
        ("spark.executor.memoryOverhead", "5000000000000"),
    ]);
    assert!(e.contains("container request"), "{e}");
}

#[test]
fn a_huge_core_count_renders() {
    let l = layout(&[("spark.executor.cores", "1521344389")]).unwrap();
    assert!(
        l.render_tree().contains("1/3042688778"),
        "{}",
        l.render_tree()
    );
}
