//! A workload of your own on spillway's executor: a task that buffers records in execution
//! pages, spills them to a checksummed file when the memory manager refuses more, and reads
//! everything back at the end — inside an executor built from a Spark configuration.
//!
//! Run it with `cargo run --release --example custom_task`.

use std::sync::{Arc, Mutex};

use spillway::conf::SparkConf;
use spillway::executor::Executor;
use spillway::layout::Layout;
use spillway::memory::{ConsumerId, ConsumerSpillError, MemoryConsumer, Page, TaskMemoryError};
use spillway::scheduler::run_stage;
use spillway::spill::{RecordDigest, SpillKind, SpillReader, SpillWriter, SpillWriterOptions};

const RECORD: usize = 64;

/// The task's buffer: full pages of records, shared with the spill callback.
struct Buffer {
    pages: Vec<(Page, usize)>,
    runs: Vec<std::path::PathBuf>,
    dir: Arc<spillway::storage::disk::DiskBlockManager>,
}

impl Buffer {
    /// Writes every buffered record to a spill file and frees the pages; returns bytes freed.
    fn spill(&mut self) -> Result<u64, ConsumerSpillError> {
        if self.pages.is_empty() {
            return Ok(0);
        }
        let path = self.dir.temp_file("temp_local")?;
        let mut w = SpillWriter::create(&path, SpillWriterOptions::new(SpillKind::SortRun))?;
        let mut freed = 0;
        for (page, used) in self.pages.drain(..) {
            for r in page.as_slice()[..used].chunks(RECORD) {
                w.write_record(r)?;
            }
            freed += page.len();
        }
        w.finish()?;
        self.runs.push(path);
        Ok(freed)
    }
}

/// Spark's `MemoryConsumer.spill`: called by the task memory manager when memory runs short.
struct Spiller(Arc<Mutex<Buffer>>);

impl MemoryConsumer for Spiller {
    fn spill(&self, _size: u64, _trigger: ConsumerId) -> Result<u64, ConsumerSpillError> {
        match self.0.try_lock() {
            Ok(mut b) => b.spill(),
            Err(_) => Ok(0), // busy: the owner is mid-insert; Spark's sorters return 0 too
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A 1 GiB executor with 2 cores, as spark-submit would configure it.
    let conf = SparkConf::new()
        .with("spark.executor.memory", "1g")
        .with("spark.executor.cores", "2");
    let layout = Layout::from_conf(&conf, None)?;
    let executor = Executor::start(&layout, &conf)?;
    println!(
        "execution pool {} MiB, page size {} bytes",
        layout.execution_region >> 20,
        layout.page_size
    );

    let runs = run_stage(
        &executor,
        0,
        4,
        true,
        |ctx| -> Result<_, TaskMemoryError> {
            let buffer = Arc::new(Mutex::new(Buffer {
                pages: Vec::new(),
                runs: Vec::new(),
                dir: Arc::clone(ctx.executor.local_dirs()),
            }));
            let consumer = ctx
                .memory
                .register("buffer", Arc::new(Spiller(Arc::clone(&buffer))));
            let mut digest_in = RecordDigest::default();
            let mut page: Option<(Page, usize)> = None;
            for i in 0..5_000_000u64 {
                let mut record = [0u8; RECORD];
                record[..8].copy_from_slice(&(i ^ (ctx.partition as u64) << 40).to_le_bytes());
                digest_in.add(&record);
                if page
                    .as_ref()
                    .is_none_or(|(p, used)| used + RECORD > p.len() as usize)
                {
                    if let Some(full) = page.take() {
                        buffer.lock().unwrap().pages.push(full);
                    }
                    // May make the task memory manager call Spiller::spill (our own buffer too).
                    page = Some((consumer.allocate_page(1 << 20)?, 0));
                }
                let (p, used) = page.as_mut().expect("a page was just ensured");
                p.as_mut_slice()[*used..*used + RECORD].copy_from_slice(&record);
                *used += RECORD;
            }
            // Read back what stayed in memory and what was spilled; it must be what was written.
            let mut digest_out = RecordDigest::default();
            let mut b = buffer.lock().unwrap();
            if let Some(last) = page.take() {
                b.pages.push(last);
            }
            for (p, used) in &b.pages {
                p.as_slice()[..*used]
                    .chunks(RECORD)
                    .for_each(|r| digest_out.add(r));
            }
            let spills = b.runs.len();
            for path in b.runs.drain(..) {
                let mut reader = SpillReader::open(&path).expect("our spill file");
                while let Some(r) = reader.next_record().expect("verified frames") {
                    digest_out.add(r);
                }
                std::fs::remove_file(&path).ok();
            }
            b.pages.clear();
            assert_eq!(digest_in, digest_out, "every record came back");
            Ok((spills, digest_out.records))
        },
        |_| {},
    );
    for r in &runs {
        let (spills, records) = r.result.as_ref().map_err(|e| e.to_string())?;
        println!(
            "task {}: {records} records verified, {spills} spills, peak execution memory {} MiB, \
             waited {:?} for its fair share",
            r.partition,
            r.peak_execution_memory >> 20,
            r.waits.waited
        );
    }
    Ok(())
}
