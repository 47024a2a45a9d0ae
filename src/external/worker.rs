//! `spillway worker`: the spillway binary acting as a PySpark worker, for hosts without
//! `python3` and for comparison with it. It follows `python_worker.py` (and through it PySpark's
//! `worker.py` and `shuffle.py`) step for step: it lowers its own `RLIMIT_AS` from
//! `PYSPARK_EXECUTOR_MEMORY_MB`, answers the protocol of [`super::protocol`], and aggregates
//! through the same `ExternalMerger` rules. Allocation failures are caught (`try_reserve`) and
//! reported as `MemoryError`, as Python raises it; the worker then exits, as PySpark's does.

use std::collections::HashMap;
use std::collections::TryReserveError;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use super::agg::{
    AggregateResult, INITIAL_BATCH, SPILL_PARTITIONS, UDF_BLOCK_BYTES, key_digest, next_record,
    spill_partition, udf_block, udf_checksum_of,
};
use super::protocol::{ProtocolError, Reply, Request, read_frame, write_frame};
use crate::proc_ctl::{get_rlimit_as, set_rlimit_as};

/// The worker's exit code after a task failed (PySpark: `sys.exit(-1)`).
const EXIT_AFTER_ERROR: u8 = 255;

/// Runs the worker on stdin/stdout until the executor closes stdin.
pub fn worker_main() -> ExitCode {
    let memory_limit_mb: i64 = std::env::var("PYSPARK_EXECUTOR_MEMORY_MB")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1);
    let (rlimit_set, warning) = apply_memory_limit(memory_limit_mb);
    let limits = get_rlimit_as().ok();
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = BufWriter::new(std::io::stdout().lock());
    let hello = Reply::Hello {
        pid: std::process::id(),
        kind: "spillway".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        memory_limit_mb,
        rlimit_as_soft: limits.and_then(|l| l.soft_bytes),
        rlimit_as_hard: limits.and_then(|l| l.hard_bytes),
        rlimit_set,
        warning,
    };
    if write_frame(&mut output, &hello).is_err() {
        return ExitCode::FAILURE;
    }
    // The last task's output stays alive until the executor's END_OF_STREAM, as a PySpark
    // worker holds its UDF's objects while the JVM reads the results.
    let mut _held: Option<Vec<u8>> = None;
    loop {
        let request: Request = match read_frame(&mut input) {
            Ok(r) => r,
            Err(ProtocolError::Eof) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("spillway worker {}: {e}", std::process::id());
                return ExitCode::FAILURE;
            }
        };
        let reply = match request {
            Request::EndOfStream => {
                _held = None;
                Ok(Reply::EndOfStream)
            }
            Request::Udf { task, bytes, seed } => match udf(bytes, seed) {
                Ok((buf, checksum)) => {
                    _held = Some(buf);
                    Ok(Reply::UdfDone {
                        task,
                        bytes,
                        checksum,
                    })
                }
                Err(e) => Err(memory_error(task, &format!("udf of {bytes} bytes"), e)),
            },
            Request::Aggregate {
                task,
                records,
                distinct_keys,
                seed,
                memory_limit_mib,
            } => match aggregate(task, records, distinct_keys, seed, memory_limit_mib) {
                Ok(r) => Ok(r),
                Err(AggError::Memory(e)) => Err(memory_error(
                    task,
                    &format!("aggregation of {records} records"),
                    e,
                )),
                Err(AggError::Io(e)) => Err(Reply::Error {
                    task,
                    class: "OSError".into(),
                    message: e.to_string(),
                    traceback: format!("OSError: {e}"),
                }),
            },
        };
        let failed = reply.is_err();
        let reply = reply.unwrap_or_else(|e| e);
        if write_frame(&mut output, &reply).is_err() {
            return ExitCode::FAILURE;
        }
        if failed {
            return ExitCode::from(EXIT_AFTER_ERROR);
        }
    }
}

/// PySpark's worker: if `PYSPARK_EXECUTOR_MEMORY_MB` > 0 and the current soft limit is
/// unlimited or larger, set soft = hard = that many MiB; a failure only warns (on stderr).
fn apply_memory_limit(memory_limit_mb: i64) -> (bool, Option<String>) {
    if memory_limit_mb <= 0 {
        return (false, None);
    }
    let new_limit = memory_limit_mb as u64 * 1024 * 1024;
    let result = get_rlimit_as().and_then(|cur| {
        eprintln!(
            "Current mem limits: {} of max {}",
            fmt_limit(cur.soft_bytes),
            fmt_limit(cur.hard_bytes)
        );
        if cur.soft_bytes.is_none_or(|soft| new_limit < soft) {
            eprintln!("Setting mem limits to {new_limit} of max {new_limit}");
            set_rlimit_as(new_limit).map(|()| true)
        } else {
            Ok(false)
        }
    });
    match result {
        Ok(set) => (set, None),
        Err(e) => {
            let w = format!("Failed to set memory limit: {e}");
            eprintln!("ResourceWarning: {w}");
            (false, Some(w))
        }
    }
}

fn fmt_limit(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".to_string(), |b| b.to_string())
}

fn memory_error(task: u64, what: &str, e: TryReserveError) -> Reply {
    let rlimit = get_rlimit_as()
        .ok()
        .and_then(|l| l.soft_bytes)
        .map_or_else(|| "unlimited".to_string(), |b| format!("{b} bytes"));
    let message = format!("{e} (RLIMIT_AS {rlimit})");
    Reply::Error {
        task,
        class: "MemoryError".into(),
        traceback: format!(
            "Traceback (most recent call last):\n  File \"spillway worker\", in {}\nMemoryError: {message}\n",
            what.split(' ').next().unwrap_or("task")
        ),
        message,
    }
}

/// Allocates `bytes`, fills them with the pattern of `seed`, and re-reads them.
fn udf(bytes: u64, seed: u64) -> Result<(Vec<u8>, u64), TryReserveError> {
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(bytes as usize)?;
    let block = udf_block(seed);
    while buf.len() < bytes as usize {
        let n = (bytes as usize - buf.len()).min(UDF_BLOCK_BYTES);
        buf.extend_from_slice(&block[..n]);
    }
    let checksum = udf_checksum_of(&buf);
    Ok((buf, checksum))
}

enum AggError {
    Memory(TryReserveError),
    Io(std::io::Error),
}

impl From<TryReserveError> for AggError {
    fn from(e: TryReserveError) -> Self {
        AggError::Memory(e)
    }
}

impl From<std::io::Error> for AggError {
    fn from(e: std::io::Error) -> Self {
        AggError::Io(e)
    }
}

/// The resident set in MiB, as `shuffle.get_used_memory` reads it.
fn used_memory_mib() -> u64 {
    crate::region::process_rss_bytes_fast().unwrap_or(0) >> 20
}

type Combiners = HashMap<u64, (u64, u64)>;

/// `createCombiner`/`mergeValue` of `reduceByKey(add)` over (count, sum), growing the map with
/// `try_reserve` so that an address-space limit is a `MemoryError`, not an abort.
fn merge_into(map: &mut Combiners, key: u64, count: u64, sum: u64) -> Result<(), TryReserveError> {
    if map.len() == map.capacity() {
        map.try_reserve(map.len().max(16))?;
    }
    let e = map.entry(key).or_insert((0, 0));
    e.0 += count;
    e.1 = e.1.wrapping_add(sum);
    Ok(())
}

/// PySpark's `ExternalMerger`, without the recursive re-partitioning of oversized partitions.
struct ExternalMerger {
    memory_limit_mib: f64,
    dirs: Vec<PathBuf>,
    data: Combiners,
    pdata: Vec<Combiners>,
    spills: u64,
    seed: u64,
    memory_bytes_spilled: u64,
    disk_bytes_spilled: u64,
    rss_checks: u64,
}

impl ExternalMerger {
    fn new(memory_limit_mib: u64, sub: &str) -> ExternalMerger {
        // shuffle._get_local_dirs: SPARK_LOCAL_DIRS (default /tmp)/python/<pid>/<sub>.
        let dirs = std::env::var("SPARK_LOCAL_DIRS")
            .unwrap_or_else(|_| "/tmp".into())
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| {
                PathBuf::from(d)
                    .join("python")
                    .join(std::process::id().to_string())
                    .join(sub)
            })
            .collect();
        ExternalMerger {
            memory_limit_mib: memory_limit_mib as f64,
            dirs,
            data: HashMap::new(),
            pdata: Vec::new(),
            spills: 0,
            seed: 0x9e37_79b9 ^ std::process::id() as u64,
            memory_bytes_spilled: 0,
            disk_bytes_spilled: 0,
            rss_checks: 0,
        }
    }

    fn used(&mut self) -> u64 {
        self.rss_checks += 1;
        used_memory_mib()
    }

    fn spill_dir(&self, n: u64) -> PathBuf {
        self.dirs[n as usize % self.dirs.len()].join(n.to_string())
    }

    fn next_limit(&mut self) -> f64 {
        self.memory_limit_mib.max(self.used() as f64 * 1.05)
    }

    fn merge_values(
        &mut self,
        records: u64,
        distinct_keys: u64,
        mut state: u64,
    ) -> Result<(), AggError> {
        let (mut c, mut batch, mut limit) = (0u64, INITIAL_BATCH, self.memory_limit_mib);
        for _ in 0..records {
            let (k, v) = next_record(&mut state, distinct_keys);
            if self.pdata.is_empty() {
                merge_into(&mut self.data, k, 1, v)?;
            } else {
                let p = spill_partition(k, self.seed);
                merge_into(&mut self.pdata[p], k, 1, v)?;
            }
            c += 1;
            if c as f64 >= batch {
                if self.used() as f64 >= limit {
                    self.spill()?;
                    limit = self.next_limit();
                    batch /= 2.0;
                    c = 0;
                } else {
                    batch *= 1.5;
                }
            }
        }
        if self.used() as f64 >= limit {
            self.spill()?;
        }
        Ok(())
    }

    fn write_partition(path: &std::path::Path, map: &Combiners) -> std::io::Result<u64> {
        let mut w = BufWriter::new(std::fs::File::create(path)?);
        for (k, (c, s)) in map {
            w.write_all(&k.to_le_bytes())?;
            w.write_all(&c.to_le_bytes())?;
            w.write_all(&s.to_le_bytes())?;
        }
        w.flush()?;
        Ok(std::fs::metadata(path)?.len())
    }

    /// `_spill`: the first time, partition `data` into 59 files; afterwards write each of the
    /// 59 partition maps to its file.
    fn spill(&mut self) -> Result<(), AggError> {
        let path = self.spill_dir(self.spills);
        std::fs::create_dir_all(&path)?;
        let used = self.used();
        if self.pdata.is_empty() {
            let mut parts: Vec<Combiners> =
                (0..SPILL_PARTITIONS).map(|_| Combiners::new()).collect();
            for (k, (c, s)) in std::mem::take(&mut self.data) {
                merge_into(&mut parts[spill_partition(k, self.seed)], k, c, s)?;
            }
            for (i, part) in parts.iter().enumerate() {
                self.disk_bytes_spilled += Self::write_partition(&path.join(i.to_string()), part)?;
            }
            drop(parts);
            self.pdata = (0..SPILL_PARTITIONS).map(|_| Combiners::new()).collect();
        } else {
            for i in 0..SPILL_PARTITIONS {
                let map = std::mem::take(&mut self.pdata[i]);
                self.disk_bytes_spilled += Self::write_partition(&path.join(i.to_string()), &map)?;
            }
        }
        self.spills += 1;
        self.memory_bytes_spilled += used.saturating_sub(self.used()) << 20;
        Ok(())
    }

    /// `items()`: the merged result, folded into the digest the executor checks.
    fn finish(&mut self) -> Result<AggregateResult, AggError> {
        let mut out = AggregateResult::default();
        let mut fold = |map: &Combiners| {
            for (k, (c, s)) in map {
                out.keys += 1;
                out.records += c;
                out.value_sum = out.value_sum.wrapping_add(*s);
                out.digest = out.digest.wrapping_add(key_digest(*k, *c, *s));
            }
        };
        if self.spills == 0 && self.pdata.is_empty() {
            fold(&self.data);
            return Ok(out);
        }
        if self.pdata.iter().any(|m| !m.is_empty()) {
            self.spill()?;
        }
        self.pdata.clear();
        for i in 0..SPILL_PARTITIONS {
            let mut merged = Combiners::new();
            for j in 0..self.spills {
                let p = self.spill_dir(j).join(i.to_string());
                let mut r = BufReader::new(std::fs::File::open(&p)?);
                let mut rec = [0u8; 24];
                loop {
                    match r.read_exact(&mut rec) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                        Err(e) => return Err(e.into()),
                    }
                    let word =
                        |n: usize| u64::from_le_bytes(rec[n * 8..n * 8 + 8].try_into().expect("8"));
                    merge_into(&mut merged, word(0), word(1), word(2))?;
                }
            }
            fold(&merged);
            for j in 0..self.spills {
                std::fs::remove_file(self.spill_dir(j).join(i.to_string()))?;
            }
        }
        Ok(out)
    }
}

impl Drop for ExternalMerger {
    /// `_cleanup`: remove the merger's directories, on success and on failure.
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
            // Also the per-pid directory when it is left empty.
            if let Some(parent) = d.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

fn aggregate(
    task: u64,
    records: u64,
    distinct_keys: u64,
    seed: u64,
    memory_limit_mib: u64,
) -> Result<Reply, AggError> {
    let mut merger = ExternalMerger::new(memory_limit_mib, &format!("merger-{task}"));
    merger.merge_values(records, distinct_keys, seed)?;
    let r = merger.finish()?;
    Ok(Reply::AggregateDone {
        task,
        records: r.records,
        keys: r.keys,
        value_sum: r.value_sum,
        digest: r.digest,
        spills: merger.spills,
        memory_bytes_spilled: merger.memory_bytes_spilled,
        disk_bytes_spilled: merger.disk_bytes_spilled,
        rss_checks: merger.rss_checks,
    })
}
