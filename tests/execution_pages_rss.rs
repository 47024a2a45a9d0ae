//! Execution pages are real memory: writing 1 GiB of pages through a task memory manager raises
//! the process's resident memory by about 1 GiB, and freeing them lowers it again (within 5%),
//! on the heap and off it. One test function, so the two modes never overlap in memory.

use std::sync::Arc;

use spillway::conf::SparkConf;
use spillway::executor::Executor;
use spillway::layout::Layout;
use spillway::memory::{Page, Unspillable};
use spillway::region::process_rss_bytes;

const GIB: u64 = 1 << 30;

fn rss() -> u64 {
    process_rss_bytes().expect("/proc/self is readable")
}

fn write_and_free_one_gib(pairs: &[(&str, &str)]) {
    let mut conf = SparkConf::new();
    for (k, v) in pairs {
        conf.set(k, v);
    }
    let layout = Layout::from_conf(&conf, None).unwrap();
    let executor = Executor::start(&layout, &conf).unwrap();
    let tmm = executor.task_memory_manager(1);
    let consumer = tmm.register("writer", Arc::new(Unspillable));

    let before = rss();
    let mut pages: Vec<Page> = Vec::new();
    let mut written = 0;
    while written < GIB {
        let mut page = consumer.allocate_page(64 << 20).unwrap();
        for (i, chunk) in page.as_mut_slice().chunks_mut(4096).enumerate() {
            chunk.fill((i % 251) as u8 + 1);
        }
        written += page.len();
        pages.push(page);
    }
    assert_eq!(consumer.used(), written);
    let grown = rss() - before;
    let tolerance = GIB / 20;
    assert!(
        grown.abs_diff(written) <= tolerance,
        "{:?}: wrote {written} bytes of pages, RSS grew by {grown}",
        layout.tungsten_mode()
    );

    drop(pages);
    assert_eq!(executor.memory_manager().execution_memory_used(), 0);
    let after = rss();
    assert!(
        after.abs_diff(before) <= tolerance,
        "{:?}: RSS {before} before, {after} after freeing",
        layout.tungsten_mode()
    );
    assert_eq!(tmm.clean_up_all_allocated_memory(true).unwrap(), 0);
}

#[test]
fn one_gib_of_execution_pages_is_resident_then_returned() {
    write_and_free_one_gib(&[
        ("spark.executor.memory", "3g"),
        ("spark.buffer.pageSize", "64m"),
    ]);
    write_and_free_one_gib(&[
        ("spark.executor.memory", "1g"),
        ("spark.memory.offHeap.enabled", "true"),
        ("spark.memory.offHeap.size", "1200m"),
        ("spark.buffer.pageSize", "64m"),
    ]);
}
