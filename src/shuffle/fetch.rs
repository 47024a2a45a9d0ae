//! The reduce side's fetch: one reduce partition read from every map output of a shuffle, as
//! Spark's `ShuffleBlockFetcherIterator` does (docs/spark-model.md §20).
//!
//! # Local and remote blocks
//!
//! Block `shuffle_<s>_<m>_<r>` is partition `r` of map output `m`: `lengths[r]` bytes at
//! [`MapStatus::offset`] of its data file. Zero-length blocks are skipped (Spark never asks for
//! them). A block whose map task ran on this executor (`status.executor == local_executor`) is
//! **local**: the task opens the data file, seeks to the block and streams it through a
//! [`SegmentReader`] over a buffered reader (`localBlocksFetched`, `localBytesRead`). Every
//! other block is **remote**, and is fetched as Spark fetches it over the network:
//!
//! - `partitionBlocksByFetchMode` / `collectFetchRequests`: per address (executor), blocks in
//!   map order are gathered into a request until it holds `targetRemoteRequestSize =
//!   max(maxBytesInFlight / 5, 1)` bytes or `maxBlocksInFlightPerAddress` blocks; the rest is
//!   a last, smaller request. The requests are shuffled (`Utils.randomize`), seeded from the
//!   shuffle, the partition and the task, so a run is reproducible.
//! - `fetchUpToMaxBytes`: a request is sent iff `bytesInFlight == 0 || (reqsInFlight + 1 <=
//!   maxReqsInFlight && bytesInFlight + size <= maxBytesInFlight)`; one whose address would
//!   then have more than `maxBlocksInFlightPerAddress` blocks in flight is deferred (per
//!   address, in order) and tried again, before the regular queue, each time a result is taken.
//!   `bytesInFlight` and the address's blocks drop as the task **takes** a block's result, and
//!   `reqsInFlight` when it takes a request's last block; so up to `maxBytesInFlight` of
//!   fetched buffers sit queued while the task reads the one it took.
//!   [`ShuffleReadMetrics::peak_bytes_in_flight`] is the largest `bytesInFlight` (requested and
//!   not yet taken): at most `maxBytesInFlight` unless a single request is larger.
//! - Serving a request is real work on another thread, as Netty's: one fetcher thread per
//!   reduce task (`std::thread::scope`) takes the requests in the order sent and reads their
//!   blocks from the remote map output's data file. A request of at most
//!   `spark.network.maxRemoteBlockSizeFetchToMem` bytes goes into **one anonymous mapping**
//!   (`memmap2::MmapMut::map_anon`) of its size — native memory outside the heap, as Netty's
//!   direct buffers, made resident by the copy and given back to the kernel when the last
//!   block of the request has been read; a larger request is streamed block by block into
//!   temporary files (`temp_local_<n>`, `remoteBytesReadToDisk`), each deleted once read.
//!   Results come back per block over a crossbeam channel; the time the task blocks on it is
//!   `fetchWaitTime`, the time from sending a request to its last block `remoteReqsDuration`
//!   (both summed in nanoseconds and reported in milliseconds, Spark's unit).
//!
//! # Memory: where the buffers show
//!
//! The fetch buffers are not accounted by the memory manager (Spark does not account Netty's
//! memory either). They are counted live in the executor's [`ExecutorMetrics`]
//! (`fetch_buffer`: from before a mapping is made until after it is unmapped), which the
//! timeline samples as `fetch_bytes_in_flight`. Because they are resident anonymous memory of
//! the process and no page of the heap mapping, the overhead account
//! (`external::overhead`) already sees them: the pool's monitor measures the executor's RSS
//! (`/proc/self/statm`) against its touched heap (accounted memory + the allocators' pooled
//! free pages), so the buffers are part of `peak_executor_beyond_heap_bytes` and
//! `peak_overhead_used_bytes`, and of the executor's RSS the container monitor judges. That
//! account has no finer breakdown of the executor's part; the timeline column tells the
//! buffers apart. Fetched-to-disk blocks are page cache, not RSS (a memory cgroup counts them,
//! reclaimably).
//!
//! # Damage
//!
//! A block is verified as [`SegmentReader`] reads it, and only the records it yields reach the
//! caller, so a damaged, truncated or misplaced byte is never a wrong record. Any
//! [`SegmentError`](super::format::SegmentError), and any I/O error reading a block, fails the task with
//! [`TaskError::FetchFailed`] naming the block, the map output file and its executor. As Spark
//! does, a remote block fetched into memory that fails to read is fetched once more (a second
//! read of the file, queued as a one-block request) before failing; a local block, a block
//! fetched to disk and a block the fetcher could not read fail at once. Spark can refetch only
//! a block found corrupt before its first record was consumed; here the refetched copy skips,
//! verified but not handed out again, the records the first copy delivered, so a refetch never
//! duplicates a record.
//!
//! The task checks for an interrupt every `interrupt::CHECK_EVERY` records and while it waits
//! for a result. On any error the fetcher stops after the block it is copying; every buffer is
//! unmapped and every temporary file deleted before [`read_partition`] returns.
//!
//! | Spark | here |
//! |---|---|
//! | `ShuffleBlockFetcherIterator` | [`read_partition`] |
//! | `FetchRequest`, `collectFetchRequests` | `Request`, `collect_requests` |
//! | `fetchUpToMaxBytes`, `isRemoteBlockFetchable`, `isRemoteAddressMaxedOut` | `Flow` |
//! | `ShuffleReadMetrics` | [`ShuffleReadMetrics`] |
//! | `FetchFailedException` | [`TaskError::FetchFailed`] |

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};
use memmap2::MmapMut;
use serde::Serialize;

use super::format::{SegmentReader, segment_tag};
use super::{MapStatus, ShuffleBlockId};
use crate::codec::Codec;
use crate::conf::{ConfError, SparkConf, keys};
use crate::metrics::{ExecutorMetrics, FetchBufferGuard};
use crate::scheduler::TaskContext;
use crate::storage::disk::DiskBlockManager;
use crate::tasks::TaskError;

/// The buffer of a local block's reader.
const LOCAL_READ_BUFFER: usize = 64 << 10;
/// How long the task waits for a result between two interrupt checks.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// The reduce side's settings, read once per stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    /// `spark.reducer.maxSizeInFlight` in bytes.
    pub max_bytes_in_flight: u64,
    /// `spark.reducer.maxReqsInFlight`.
    pub max_reqs_in_flight: u32,
    /// `spark.reducer.maxBlocksInFlightPerAddress`.
    pub max_blocks_in_flight_per_address: u32,
    /// `spark.network.maxRemoteBlockSizeFetchToMem`: a larger request goes to disk.
    pub max_remote_block_size_fetch_to_mem: u64,
    /// `spark.shuffle.compress` with `spark.io.compression.codec`, as the writer used.
    pub codec: Option<Codec>,
}

impl FetchParams {
    pub fn from_conf(conf: &SparkConf) -> Result<FetchParams, ConfError> {
        let compression = crate::codec::Compression::from_conf(conf)?;
        // The key's unit is MiB and its limit keeps the product below i64::MAX.
        let max_bytes = conf.get_size(keys::REDUCER_MAX_SIZE_IN_FLIGHT)? as u64 * (1 << 20);
        Ok(FetchParams {
            max_bytes_in_flight: max_bytes,
            max_reqs_in_flight: conf.get_int(keys::REDUCER_MAX_REQS_IN_FLIGHT)? as u32,
            max_blocks_in_flight_per_address: conf
                .get_int(keys::REDUCER_MAX_BLOCKS_IN_FLIGHT_PER_ADDRESS)?
                as u32,
            max_remote_block_size_fetch_to_mem: conf
                .get_size(keys::MAX_REMOTE_BLOCK_SIZE_FETCH_TO_MEM)?
                as u64,
            codec: compression.shuffle,
        })
    }

    /// `targetRemoteRequestSize = max(maxBytesInFlight / 5, 1)`.
    pub fn target_request_size(&self) -> u64 {
        (self.max_bytes_in_flight / 5).max(1)
    }
}

/// `ShuffleReadMetrics`, with Spark's names (and one of spillway's own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShuffleReadMetrics {
    /// Remote blocks taken (a refetched block counts each time, as in Spark).
    pub remote_blocks_fetched: u64,
    pub local_blocks_fetched: u64,
    /// Bytes of remote blocks taken, in memory or on disk.
    pub remote_bytes_read: u64,
    /// Of those, bytes fetched to disk.
    pub remote_bytes_read_to_disk: u64,
    pub local_bytes_read: u64,
    /// Milliseconds the task blocked waiting for a remote block.
    pub fetch_wait_time: u64,
    /// Records handed to the caller.
    pub records_read: u64,
    /// Milliseconds from sending each remote request to its last block, summed.
    pub remote_reqs_duration: u64,
    /// spillway's own: the largest `bytesInFlight` (requested and not yet taken).
    pub peak_bytes_in_flight: u64,
}

/// A fault to inject into a fetch: the tests' stand-in for a network that damages a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFault {
    /// Flip one byte, three quarters into the block, of the first in-memory copy of this
    /// block (the refetch reads it intact).
    CorruptFirstCopy(ShuffleBlockId),
}

/// Reads partition `reduce` of shuffle `shuffle_id` from every map output in `statuses`,
/// handing each verified record to `f`; blocks of map outputs on `local_executor` are read
/// locally, the others fetched (see the module docs).
pub fn read_partition(
    ctx: &TaskContext,
    shuffle_id: u32,
    statuses: &[MapStatus],
    reduce: u32,
    params: &FetchParams,
    local_executor: u32,
    f: impl FnMut(&[u8]) -> Result<(), TaskError>,
) -> Result<ShuffleReadMetrics, TaskError> {
    read_partition_with_fault(
        ctx,
        shuffle_id,
        statuses,
        reduce,
        params,
        local_executor,
        None,
        f,
    )
}

/// [`read_partition`] with a fault injected into the fetch.
/// Where partition `reduce` starts in a map output's data file, as its index file says
/// (`IndexShuffleBlockResolver.getBlockData`, which the local read and the remote executor's
/// shuffle service both go through): the index must be whole and pass its checksum, and agree
/// with the map status on the block's length. (As in Spark, the data file's length is not
/// checked here: a block cut short fails when it is read.)
fn index_offset(s: &MapStatus, reduce: u32, size: u64) -> Result<u64, String> {
    let index = &s.files.index;
    let bytes = std::fs::read(index).map_err(|e| format!("index file {}: {e}", index.display()))?;
    let offsets = super::format::index_offsets(&bytes, s.lengths.len() as u32)
        .map_err(|e| format!("index file {}: {e}", index.display()))?;
    let (start, end) = (offsets[reduce as usize], offsets[reduce as usize + 1]);
    if end - start != size {
        return Err(format!(
            "index file {} gives partition {reduce} {} bytes, the map status {size}",
            index.display(),
            end - start
        ));
    }
    Ok(start)
}

#[allow(clippy::too_many_arguments)]
pub fn read_partition_with_fault(
    ctx: &TaskContext,
    shuffle_id: u32,
    statuses: &[MapStatus],
    reduce: u32,
    params: &FetchParams,
    local_executor: u32,
    fault: Option<FetchFault>,
    f: impl FnMut(&[u8]) -> Result<(), TaskError>,
) -> Result<ShuffleReadMetrics, TaskError> {
    let mut local = Vec::new();
    let mut by_address: BTreeMap<u32, Vec<Block>> = BTreeMap::new();
    for (i, s) in statuses.iter().enumerate() {
        let Some(&size) = s.lengths.get(reduce as usize) else {
            return Err(TaskError::InvalidSpec(format!(
                "reduce partition {reduce} of a map output with {} partitions",
                s.lengths.len()
            )));
        };
        if size == 0 {
            continue;
        }
        let id = s.block(shuffle_id, reduce);
        let offset = index_offset(s, reduce, size).map_err(|detail| TaskError::FetchFailed {
            block: id.to_string(),
            executor: s.executor,
            detail,
        })?;
        let block = Block {
            id,
            map: i,
            executor: s.executor,
            offset,
            size,
        };
        if s.executor == local_executor {
            local.push(block);
        } else {
            by_address.entry(s.executor).or_default().push(block);
        }
    }
    let mut requests = Vec::new();
    for (address, blocks) in by_address {
        collect_requests(
            address,
            blocks,
            params.target_request_size(),
            params.max_blocks_in_flight_per_address,
            &mut requests,
        );
    }
    randomize(
        &mut requests,
        crate::data::stream_seed(
            0x0046_4554_4348, // "FETCH"
            u64::from(shuffle_id) << 32 | u64::from(reduce),
            u64::from(ctx.stage_id) << 32 | u64::from(ctx.partition),
        ),
    );
    let remote_blocks: usize = requests.iter().map(|r| r.blocks.len()).sum();
    let mut reader = Reader {
        statuses,
        codec: params.codec,
        f,
        metrics: ShuffleReadMetrics::default(),
        wait: Duration::ZERO,
        reqs_duration: Duration::ZERO,
    };
    let flow = Flow::new(params, requests);
    let stop = AtomicBool::new(false);
    let server = Server {
        statuses,
        dirs: ctx.executor.local_dirs(),
        metrics: ctx.memory.metrics(),
        to_mem_limit: params.max_remote_block_size_fetch_to_mem,
        stop: &stop,
        fault,
        fault_fired: AtomicBool::new(false),
    };
    let result = std::thread::scope(|scope| {
        let (req_tx, req_rx) = channel::unbounded::<Sent>();
        let (res_tx, res_rx) = channel::unbounded::<Fetched>();
        if remote_blocks > 0 {
            let server = &server;
            scope.spawn(move || server.serve(req_rx, res_tx));
        } else {
            drop((req_rx, res_tx));
        }
        // `run` owns both channel ends: when it returns the fetcher sees them closed.
        let result = reader.run(local, flow, remote_blocks, req_tx, res_rx);
        stop.store(true, Ordering::Release);
        result
    });
    let mut metrics = reader.metrics;
    metrics.fetch_wait_time = reader.wait.as_millis() as u64;
    metrics.remote_reqs_duration = reader.reqs_duration.as_millis() as u64;
    result.map(|peak| {
        metrics.peak_bytes_in_flight = peak;
        metrics
    })
}

/// One non-empty block to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    id: ShuffleBlockId,
    /// Index of its map output in `statuses`.
    map: usize,
    executor: u32,
    offset: u64,
    size: u64,
}

/// `FetchRequest`: blocks of one address fetched together.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    address: u32,
    blocks: Vec<Block>,
    size: u64,
}

/// `collectFetchRequests` (without batch fetch): blocks of `address` in order, cut into a
/// request when it reaches `target` bytes or `max_blocks` blocks; the rest is the last request.
fn collect_requests(
    address: u32,
    blocks: Vec<Block>,
    target: u64,
    max_blocks: u32,
    out: &mut Vec<Request>,
) {
    let max_blocks = max_blocks.max(1) as usize;
    let mut current = Vec::new();
    let mut size = 0u64;
    for b in blocks {
        current.push(b);
        size += b.size;
        if size >= target || current.len() >= max_blocks {
            out.push(Request {
                address,
                blocks: std::mem::take(&mut current),
                size,
            });
            size = 0;
        }
    }
    if !current.is_empty() {
        out.push(Request {
            address,
            blocks: current,
            size,
        });
    }
}

/// `Utils.randomize`: a Fisher–Yates shuffle, here with a seeded generator.
fn randomize<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        let j = (crate::data::splitmix64(&mut state) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// The flow control of `ShuffleBlockFetcherIterator`: which requests go out, and when.
#[derive(Debug)]
struct Flow {
    max_bytes: u64,
    max_reqs: u32,
    max_blocks_per_address: u32,
    /// `fetchRequests`.
    queue: VecDeque<Request>,
    /// `deferredFetchRequests`, per address.
    deferred: BTreeMap<u32, VecDeque<Request>>,
    bytes_in_flight: u64,
    reqs_in_flight: u32,
    blocks_in_flight: BTreeMap<u32, u32>,
    peak_bytes_in_flight: u64,
}

impl Flow {
    fn new(params: &FetchParams, requests: Vec<Request>) -> Flow {
        Flow {
            max_bytes: params.max_bytes_in_flight,
            max_reqs: params.max_reqs_in_flight.max(1),
            max_blocks_per_address: params.max_blocks_in_flight_per_address.max(1),
            queue: requests.into(),
            deferred: BTreeMap::new(),
            bytes_in_flight: 0,
            reqs_in_flight: 0,
            blocks_in_flight: BTreeMap::new(),
            peak_bytes_in_flight: 0,
        }
    }

    /// `isRemoteBlockFetchable` for the request at the front of a queue.
    fn fetchable(&self, front: &Request) -> bool {
        self.bytes_in_flight == 0
            || (u64::from(self.reqs_in_flight) < u64::from(self.max_reqs)
                && self.bytes_in_flight + front.size <= self.max_bytes)
    }

    /// `isRemoteAddressMaxedOut`.
    fn maxed_out(&self, req: &Request) -> bool {
        let in_flight = self
            .blocks_in_flight
            .get(&req.address)
            .copied()
            .unwrap_or(0);
        u64::from(in_flight) + req.blocks.len() as u64 > u64::from(self.max_blocks_per_address)
    }

    /// `fetchUpToMaxBytes`: deferred requests first, address by address, then the queue;
    /// `send` gets each request that goes out, in order.
    fn fetch_up_to_max_bytes(&mut self, send: &mut impl FnMut(Request)) {
        let addresses: Vec<u32> = self.deferred.keys().copied().collect();
        for address in addresses {
            loop {
                let ready = self
                    .deferred
                    .get(&address)
                    .and_then(VecDeque::front)
                    .is_some_and(|front| self.fetchable(front) && !self.maxed_out(front));
                if !ready {
                    break;
                }
                let queue = self.deferred.get_mut(&address).expect("checked above");
                let req = queue.pop_front().expect("checked above");
                if queue.is_empty() {
                    self.deferred.remove(&address);
                }
                self.start(&req);
                send(req);
            }
        }
        while self
            .queue
            .front()
            .is_some_and(|front| self.fetchable(front))
        {
            let req = self.queue.pop_front().expect("checked above");
            if self.maxed_out(&req) {
                self.deferred.entry(req.address).or_default().push_back(req);
            } else {
                self.start(&req);
                send(req);
            }
        }
    }

    /// `sendRequest`'s bookkeeping.
    fn start(&mut self, req: &Request) {
        self.bytes_in_flight += req.size;
        self.reqs_in_flight += 1;
        *self.blocks_in_flight.entry(req.address).or_default() += req.blocks.len() as u32;
        self.peak_bytes_in_flight = self.peak_bytes_in_flight.max(self.bytes_in_flight);
    }

    /// A block's result taken by the task.
    fn taken(&mut self, block: &Block, request_done: bool) {
        self.bytes_in_flight -= block.size;
        if let Some(n) = self.blocks_in_flight.get_mut(&block.executor) {
            *n -= 1;
        }
        if request_done {
            self.reqs_in_flight -= 1;
        }
    }

    /// A request to fetch again (a refetch), at the back of the queue.
    fn push(&mut self, req: Request) {
        self.queue.push_back(req);
    }

    /// Whether nothing is in flight: with blocks still to come, a bug.
    fn idle(&self) -> bool {
        self.reqs_in_flight == 0
    }
}

/// A request as sent to the fetcher thread.
struct Sent {
    req: Request,
    at: Instant,
}

/// What the fetcher thread sends back, per block.
enum Fetched {
    Block {
        block: Block,
        /// The request's last block.
        request_done: bool,
        /// Set on the request's last block: from sending the request to now.
        request_duration: Option<Duration>,
        data: BlockData,
    },
    /// The block could not be read at the source; the fetcher stops.
    Failed { block: Block, detail: String },
}

/// Where a fetched block's bytes are.
enum BlockData {
    /// In its request's buffer, `[start, start + len)`.
    Memory {
        buffer: Arc<FetchBuffer>,
        start: usize,
    },
    /// In a temporary file of its own.
    Disk(TempFile),
}

/// One request's buffer of native memory (Netty's direct buffer), counted in the executor's
/// metrics while it exists.
struct FetchBuffer {
    // Unmapped before the guard uncounts it (fields drop in order).
    map: MmapMut,
    _counted: FetchBufferGuard,
}

/// A fetched-to-disk block's file, deleted when dropped (read, or on any error path).
struct TempFile {
    path: PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The fetcher thread: serves requests by reading the remote map outputs' data files.
struct Server<'a> {
    statuses: &'a [MapStatus],
    dirs: &'a Arc<DiskBlockManager>,
    metrics: &'a Arc<ExecutorMetrics>,
    to_mem_limit: u64,
    stop: &'a AtomicBool,
    fault: Option<FetchFault>,
    fault_fired: AtomicBool,
}

impl Server<'_> {
    /// Serves requests in order until the task closes the channel, stops it, or a block fails.
    fn serve(&self, requests: Receiver<Sent>, results: Sender<Fetched>) {
        for sent in requests.iter() {
            if self.stopped() {
                return;
            }
            let go_on = if sent.req.size > self.to_mem_limit {
                self.to_disk(&sent, &results)
            } else {
                self.to_memory(&sent, &results)
            };
            if !go_on {
                return;
            }
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn fail(&self, results: &Sender<Fetched>, block: Block, detail: String) -> bool {
        let _ = results.send(Fetched::Failed { block, detail });
        false
    }

    fn source(&self, block: &Block) -> &std::path::Path {
        &self.statuses[block.map].files.data
    }

    /// Reads the request's blocks into one anonymous mapping, then hands them out.
    fn to_memory(&self, sent: &Sent, results: &Sender<Fetched>) -> bool {
        let req = &sent.req;
        let first = req.blocks[0];
        let counted = self.metrics.fetch_buffer(req.size);
        let mut map = match MmapMut::map_anon(req.size as usize) {
            Ok(m) => m,
            Err(e) => {
                let detail = format!("cannot map a fetch buffer of {} bytes: {e}", req.size);
                return self.fail(results, first, detail);
            }
        };
        let mut starts = Vec::with_capacity(req.blocks.len());
        let mut at = 0usize;
        for b in &req.blocks {
            if self.stopped() {
                return false;
            }
            let len = b.size as usize;
            let path = self.source(b);
            let read =
                File::open(path).and_then(|f| f.read_exact_at(&mut map[at..at + len], b.offset));
            if let Err(e) = read {
                let detail = format!(
                    "reading bytes [{}, {}) of map output {}: {e}",
                    b.offset,
                    b.offset + b.size,
                    path.display()
                );
                return self.fail(results, *b, detail);
            }
            if self.fault == Some(FetchFault::CorruptFirstCopy(b.id))
                && !self.fault_fired.swap(true, Ordering::Relaxed)
            {
                map[at + len * 3 / 4] ^= 0x10;
            }
            starts.push(at);
            at += len;
        }
        let buffer = Arc::new(FetchBuffer {
            map,
            _counted: counted,
        });
        let last = req.blocks.len() - 1;
        for (i, (b, start)) in req.blocks.iter().zip(starts).enumerate() {
            let fetched = Fetched::Block {
                block: *b,
                request_done: i == last,
                request_duration: (i == last).then(|| sent.at.elapsed()),
                data: BlockData::Memory {
                    buffer: Arc::clone(&buffer),
                    start,
                },
            };
            if results.send(fetched).is_err() {
                return false;
            }
        }
        true
    }

    /// Streams each block of the request into a temporary file of its own.
    fn to_disk(&self, sent: &Sent, results: &Sender<Fetched>) -> bool {
        let req = &sent.req;
        let last = req.blocks.len() - 1;
        for (i, b) in req.blocks.iter().enumerate() {
            if self.stopped() {
                return false;
            }
            let path = match self.dirs.temp_file("temp_local") {
                Ok(p) => p,
                Err(e) => {
                    let detail = format!("cannot place a temp_local file for the block: {e}");
                    return self.fail(results, *b, detail);
                }
            };
            let file = TempFile { path };
            let source = self.source(b);
            let copied = (|| -> io::Result<()> {
                let mut src = File::open(source)?;
                src.seek(SeekFrom::Start(b.offset))?;
                let mut out = File::options()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&file.path)?;
                let n = io::copy(&mut src.take(b.size), &mut out)?;
                if n != b.size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ended {n} bytes into the block"),
                    ));
                }
                Ok(())
            })();
            if let Err(e) = copied {
                let detail = format!(
                    "fetching bytes [{}, {}) of map output {} to {}: {e}",
                    b.offset,
                    b.offset + b.size,
                    source.display(),
                    file.path.display()
                );
                return self.fail(results, *b, detail);
            }
            let fetched = Fetched::Block {
                block: *b,
                request_done: i == last,
                request_duration: (i == last).then(|| sent.at.elapsed()),
                data: BlockData::Disk(file),
            };
            if results.send(fetched).is_err() {
                return false;
            }
        }
        true
    }
}

/// Why reading one block stopped.
enum BlockError {
    /// The block's bytes did not verify, or could not be read.
    Damaged(String),
    /// The caller's error, or an interrupt.
    Task(TaskError),
}

/// The task's side: reads local blocks, takes remote results, hands records to `f`.
struct Reader<'a, F> {
    statuses: &'a [MapStatus],
    codec: Option<Codec>,
    f: F,
    metrics: ShuffleReadMetrics,
    wait: Duration,
    reqs_duration: Duration,
}

impl<F: FnMut(&[u8]) -> Result<(), TaskError>> Reader<'_, F> {
    /// Reads every block; returns the peak `bytesInFlight`.
    fn run(
        &mut self,
        local: Vec<Block>,
        mut flow: Flow,
        remote_blocks: usize,
        requests: Sender<Sent>,
        results: Receiver<Fetched>,
    ) -> Result<u64, TaskError> {
        // A send fails only once the fetcher has stopped, after sending its failure (or
        // panicking, which closes `results`): the loop below finds out.
        let mut send = |req: Request| {
            let _ = requests.send(Sent {
                req,
                at: Instant::now(),
            });
        };
        flow.fetch_up_to_max_bytes(&mut send);
        for block in local {
            self.read_local(&block)?;
        }
        let mut pending = remote_blocks;
        // Blocks refetched after a damaged copy, with the records the first copy delivered.
        let mut refetched: HashMap<ShuffleBlockId, u64> = HashMap::new();
        while pending > 0 {
            if flow.idle() {
                return Err(TaskError::Shuffle(format!(
                    "{pending} remote blocks to read and no fetch request in flight"
                )));
            }
            let (block, request_done, request_duration, data) = match self.take(&results)? {
                Fetched::Failed { block, detail } => {
                    return Err(self.fetch_failed(&block, detail));
                }
                Fetched::Block {
                    block,
                    request_done,
                    request_duration,
                    data,
                } => (block, request_done, request_duration, data),
            };
            flow.taken(&block, request_done);
            if let Some(d) = request_duration {
                self.reqs_duration += d;
            }
            self.metrics.remote_blocks_fetched += 1;
            self.metrics.remote_bytes_read += block.size;
            if matches!(data, BlockData::Disk(_)) {
                self.metrics.remote_bytes_read_to_disk += block.size;
            }
            flow.fetch_up_to_max_bytes(&mut send);
            let earlier = refetched.get(&block.id).copied();
            let in_memory = matches!(data, BlockData::Memory { .. });
            let mut delivered = earlier.unwrap_or(0);
            match self.read_remote(&block, data, &mut delivered) {
                Ok(()) => pending -= 1,
                Err(BlockError::Task(e)) => return Err(e),
                Err(BlockError::Damaged(detail)) if in_memory && earlier.is_none() => {
                    crate::log::warn(
                        "ShuffleBlockFetcherIterator",
                        &format!(
                            "got a corrupted block {} from executor {}, fetch again: {detail}",
                            block.id, block.executor
                        ),
                    );
                    refetched.insert(block.id, delivered);
                    flow.push(Request {
                        address: block.executor,
                        blocks: vec![block],
                        size: block.size,
                    });
                    flow.fetch_up_to_max_bytes(&mut send);
                }
                Err(BlockError::Damaged(detail)) => {
                    let how = match (in_memory, earlier.is_some()) {
                        (true, true) => "fetched into memory twice",
                        (true, false) => "fetched into memory",
                        (false, _) => "fetched to disk",
                    };
                    return Err(self.fetch_failed(&block, format!("{detail} ({how})")));
                }
            }
        }
        Ok(flow.peak_bytes_in_flight)
    }

    /// `results.take()`, timed as `fetchWaitTime`, checking for an interrupt meanwhile.
    fn take(&mut self, results: &Receiver<Fetched>) -> Result<Fetched, TaskError> {
        let started = Instant::now();
        let taken = loop {
            match results.recv_timeout(WAIT_SLICE) {
                Ok(r) => break Ok(r),
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = crate::interrupt::check() {
                        break Err(e.into());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    break Err(TaskError::Shuffle(
                        "the fetcher thread stopped without a result".into(),
                    ));
                }
            }
        };
        self.wait += started.elapsed();
        taken
    }

    fn fetch_failed(&self, block: &Block, detail: String) -> TaskError {
        TaskError::FetchFailed {
            block: block.id.to_string(),
            executor: block.executor,
            detail,
        }
    }

    /// Where a block is in its map output, for error messages.
    fn place(&self, block: &Block) -> String {
        format!(
            "bytes [{}, {}) of map output {}",
            block.offset,
            block.offset + block.size,
            self.statuses[block.map].files.data.display()
        )
    }

    /// A local block: straight from the data file.
    fn read_local(&mut self, block: &Block) -> Result<(), TaskError> {
        self.metrics.local_blocks_fetched += 1;
        self.metrics.local_bytes_read += block.size;
        let path = &self.statuses[block.map].files.data;
        let opened = File::open(path).and_then(|mut f| {
            f.seek(SeekFrom::Start(block.offset))?;
            Ok(f)
        });
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                let detail = format!("{e} (local, {})", self.place(block));
                return Err(self.fetch_failed(block, detail));
            }
        };
        let source = BufReader::with_capacity(LOCAL_READ_BUFFER, file.take(block.size));
        let mut delivered = 0;
        match self.stream(block, source, 0, &mut delivered) {
            Ok(()) => Ok(()),
            Err(BlockError::Task(e)) => Err(e),
            Err(BlockError::Damaged(detail)) => {
                let detail = format!("{detail} (local, {})", self.place(block));
                Err(self.fetch_failed(block, detail))
            }
        }
    }

    /// A fetched block, in memory or in its temporary file (deleted when this returns).
    fn read_remote(
        &mut self,
        block: &Block,
        data: BlockData,
        delivered: &mut u64,
    ) -> Result<(), BlockError> {
        let skip = *delivered;
        let place = self.place(block);
        match data {
            BlockData::Memory { buffer, start } => {
                let bytes = &buffer.map[start..start + block.size as usize];
                self.stream(block, bytes, skip, delivered)
                    .map_err(|e| with_place(e, &place))
            }
            BlockData::Disk(file) => {
                let opened = File::open(&file.path).map_err(|e| {
                    BlockError::Damaged(format!("opening {}: {e}", file.path.display()))
                })?;
                let source = BufReader::with_capacity(LOCAL_READ_BUFFER, opened);
                let read = self.stream(block, source, skip, delivered);
                let on = format!("{place}, in {}", file.path.display());
                drop(file);
                read.map_err(|e| with_place(e, &on))
            }
        }
    }

    /// Streams a block's records to `f`: the first `skip` verified but not handed out (a
    /// refetch's records an earlier copy delivered); `delivered` counts the block's records
    /// handed out so far.
    fn stream(
        &mut self,
        block: &Block,
        source: impl BufRead,
        skip: u64,
        delivered: &mut u64,
    ) -> Result<(), BlockError> {
        let tag = segment_tag(block.id.shuffle, block.id.map, block.id.reduce);
        let mut reader = SegmentReader::new(source, block.size, tag, self.codec);
        let mut seen = 0u64;
        loop {
            let record = match reader.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return Err(BlockError::Damaged(e.to_string())),
            };
            seen += 1;
            if seen <= skip {
                continue;
            }
            if self
                .metrics
                .records_read
                .is_multiple_of(crate::interrupt::CHECK_EVERY)
            {
                crate::interrupt::check().map_err(|e| BlockError::Task(e.into()))?;
            }
            (self.f)(record).map_err(BlockError::Task)?;
            self.metrics.records_read += 1;
            *delivered += 1;
        }
        if seen < skip {
            return Err(BlockError::Damaged(format!(
                "the block holds {seen} records, but an earlier copy delivered {skip}"
            )));
        }
        Ok(())
    }
}

fn with_place(e: BlockError, place: &str) -> BlockError {
    match e {
        BlockError::Damaged(d) => BlockError::Damaged(format!("{d}; {place}")),
        task => task,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(executor: u32, map: u32, size: u64) -> Block {
        Block {
            id: ShuffleBlockId {
                shuffle: 0,
                map,
                reduce: 0,
            },
            map: map as usize,
            executor,
            offset: 0,
            size,
        }
    }

    fn params(max_bytes: u64, max_reqs: u32, max_blocks: u32) -> FetchParams {
        FetchParams {
            max_bytes_in_flight: max_bytes,
            max_reqs_in_flight: max_reqs,
            max_blocks_in_flight_per_address: max_blocks,
            max_remote_block_size_fetch_to_mem: u64::MAX,
            codec: None,
        }
    }

    fn sizes(reqs: &[Request]) -> Vec<Vec<u64>> {
        reqs.iter()
            .map(|r| r.blocks.iter().map(|b| b.size).collect())
            .collect()
    }

    #[test]
    fn from_conf_reads_spark_s_defaults_and_units() {
        let p = FetchParams::from_conf(&SparkConf::new()).unwrap();
        assert_eq!(p.max_bytes_in_flight, 50_331_648);
        assert_eq!(p.target_request_size(), 10_066_329);
        assert_eq!(p.max_reqs_in_flight, i32::MAX as u32);
        assert_eq!(p.max_blocks_in_flight_per_address, i32::MAX as u32);
        assert_eq!(p.max_remote_block_size_fetch_to_mem, 200 << 20);
        assert!(p.codec.is_some());
        let conf = SparkConf::new()
            .with(keys::REDUCER_MAX_SIZE_IN_FLIGHT, "5")
            .with(keys::MAX_REMOTE_BLOCK_SIZE_FETCH_TO_MEM, "1k")
            .with(keys::SHUFFLE_COMPRESS, "false");
        let p = FetchParams::from_conf(&conf).unwrap();
        assert_eq!(p.max_bytes_in_flight, 5 << 20);
        assert_eq!(p.target_request_size(), 1_048_576);
        assert_eq!(p.max_remote_block_size_fetch_to_mem, 1024);
        assert_eq!(p.codec, None);
        assert_eq!(params(4, 1, 1).target_request_size(), 1);
    }

    #[test]
    fn requests_are_cut_at_the_target_size_or_the_block_limit() {
        let blocks: Vec<Block> = [30, 30, 50, 10, 10, 10, 70]
            .iter()
            .enumerate()
            .map(|(m, &s)| block(1, m as u32, s))
            .collect();
        let mut out = Vec::new();
        collect_requests(1, blocks.clone(), 60, 100, &mut out);
        assert_eq!(
            sizes(&out),
            vec![vec![30, 30], vec![50, 10], vec![10, 10, 70]]
        );
        assert_eq!(out[2].size, 90);
        let mut out = Vec::new();
        collect_requests(1, blocks.clone(), 1000, 3, &mut out);
        assert_eq!(
            sizes(&out),
            vec![vec![30, 30, 50], vec![10, 10, 10], vec![70]]
        );
        let mut out = Vec::new();
        collect_requests(1, blocks, 1, 100, &mut out);
        assert_eq!(out.len(), 7, "a target of one byte is a request per block");
    }

    #[test]
    fn randomize_is_a_seeded_permutation() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        randomize(&mut a, 7);
        randomize(&mut b, 7);
        assert_eq!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
        a.sort_unstable();
        assert_eq!(a, (0..50).collect::<Vec<_>>());
    }

    /// Runs the flow to completion with the task taking one block at a time; returns the
    /// largest `bytesInFlight`, the most requests and the most blocks per address in flight.
    fn simulate(p: &FetchParams, requests: Vec<Request>) -> (u64, u32, u32) {
        let mut flow = Flow::new(p, requests);
        let mut in_flight: VecDeque<Request> = VecDeque::new();
        let (mut most_reqs, mut most_blocks) = (0, 0);
        let mut send = |r: Request| in_flight.push_back(r);
        flow.fetch_up_to_max_bytes(&mut send);
        loop {
            most_reqs = most_reqs.max(flow.reqs_in_flight);
            most_blocks =
                most_blocks.max(flow.blocks_in_flight.values().copied().max().unwrap_or(0));
            let Some(mut req) = in_flight.pop_front() else {
                break;
            };
            let b = req.blocks.remove(0);
            let done = req.blocks.is_empty();
            if !done {
                in_flight.push_front(req);
            }
            flow.taken(&b, done);
            let mut send = |r: Request| in_flight.push_back(r);
            flow.fetch_up_to_max_bytes(&mut send);
        }
        assert!(
            flow.queue.is_empty() && flow.deferred.is_empty(),
            "{flow:?}"
        );
        assert_eq!((flow.bytes_in_flight, flow.reqs_in_flight), (0, 0));
        (flow.peak_bytes_in_flight, most_reqs, most_blocks)
    }

    fn requests(p: &FetchParams, per_address: &[(u32, Vec<u64>)]) -> Vec<Request> {
        let mut out = Vec::new();
        let mut m = 0;
        for (address, sizes) in per_address {
            let blocks = sizes
                .iter()
                .map(|&s| {
                    m += 1;
                    block(*address, m, s)
                })
                .collect();
            collect_requests(
                *address,
                blocks,
                p.target_request_size(),
                p.max_blocks_in_flight_per_address,
                &mut out,
            );
        }
        out
    }

    #[test]
    fn flow_control_keeps_spark_s_limits() {
        let layout = [(1, vec![40; 20]), (2, vec![25; 30]), (3, vec![300])];
        // Bytes: requests of about 100 bytes, at most 500 in flight; the 300-byte block alone.
        let p = params(500, u32::MAX, u32::MAX);
        let (peak, _, _) = simulate(&p, requests(&p, &layout));
        assert!((300..=500).contains(&peak), "{peak}");
        // A request larger than the limit still goes, alone.
        let p = params(1, u32::MAX, u32::MAX);
        let (peak, reqs, _) = simulate(&p, requests(&p, &layout));
        assert_eq!((peak, reqs), (300, 1));
        // One request at a time.
        let p = params(1 << 20, 1, u32::MAX);
        let (_, reqs, _) = simulate(&p, requests(&p, &layout));
        assert_eq!(reqs, 1);
        // One block per address at a time, several addresses at once.
        let p = params(1 << 20, u32::MAX, 1);
        let (_, reqs, blocks) = simulate(&p, requests(&p, &layout));
        assert_eq!(blocks, 1);
        assert_eq!(reqs, 3);
        // Two blocks per address with requests of three blocks: cut at two, never more.
        let p = params(1 << 20, u32::MAX, 2);
        let (_, _, blocks) = simulate(&p, requests(&p, &layout));
        assert_eq!(blocks, 2);
    }

    #[test]
    fn a_maxed_out_address_is_deferred_while_others_go() {
        let p = params(1 << 20, u32::MAX, 2);
        // Two requests for address 1 (two blocks each), one for address 2.
        let reqs = vec![
            Request {
                address: 1,
                blocks: vec![block(1, 0, 10), block(1, 1, 10)],
                size: 20,
            },
            Request {
                address: 1,
                blocks: vec![block(1, 2, 10), block(1, 3, 10)],
                size: 20,
            },
            Request {
                address: 2,
                blocks: vec![block(2, 4, 10)],
                size: 10,
            },
        ];
        let mut flow = Flow::new(&p, reqs);
        let mut sent = Vec::new();
        flow.fetch_up_to_max_bytes(&mut |r: Request| sent.push(r));
        assert_eq!(
            sent.iter().map(|r| r.address).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(flow.deferred[&1].len(), 1);
        // One block of address 1 taken: still 1 + 2 > 2.
        flow.taken(&block(1, 0, 10), false);
        sent.clear();
        flow.fetch_up_to_max_bytes(&mut |r: Request| sent.push(r));
        assert!(sent.is_empty());
        flow.taken(&block(1, 1, 10), true);
        flow.fetch_up_to_max_bytes(&mut |r: Request| sent.push(r));
        assert_eq!(sent.len(), 1);
        assert!(flow.deferred.is_empty());
    }
}
