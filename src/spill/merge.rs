//! k-way merge of sorted runs (spill files and in-memory runs) through a binary heap.
//!
//! The heap holds one `(key, run index)` entry per run that has a current record; records stay
//! in their run's buffer (zero-copy). Ties on the key go to the lower run index, so records
//! with equal keys come out in run order, and in their order within a run: the merge is stable
//! as if the runs were concatenated in order and stably sorted. Per record: one `advance` of
//! the run just consumed, one key computation and one sift of the heap top (`PeekMut`); no
//! allocation unless the key function allocates.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::fmt;

use super::error::SpillError;
use super::reader::SpillReader;

/// A sorted run the merge can read: a spill file, or a sorted run still in memory.
pub trait SortedRun {
    /// Moves to the next record; `false` when the run is exhausted (for a spill file: and
    /// verified against its footer).
    fn advance(&mut self) -> Result<bool, SpillError>;
    /// The record `advance` last moved to. Only called after `advance` returned `true`.
    fn current(&self) -> &[u8];
}

impl SortedRun for SpillReader {
    #[inline]
    fn advance(&mut self) -> Result<bool, SpillError> {
        SpillReader::advance(self)
    }
    #[inline]
    fn current(&self) -> &[u8] {
        self.current_record()
    }
}

impl<R: SortedRun + ?Sized> SortedRun for Box<R> {
    #[inline]
    fn advance(&mut self) -> Result<bool, SpillError> {
        (**self).advance()
    }
    #[inline]
    fn current(&self) -> &[u8] {
        (**self).current()
    }
}

impl<R: SortedRun + ?Sized> SortedRun for &mut R {
    #[inline]
    fn advance(&mut self) -> Result<bool, SpillError> {
        (**self).advance()
    }
    #[inline]
    fn current(&self) -> &[u8] {
        (**self).current()
    }
}

/// An in-memory sorted run over borrowed records (e.g. the sorter's last, unspilled run).
#[derive(Debug)]
pub struct MemoryRun<'a, I: Iterator<Item = &'a [u8]>> {
    records: I,
    current: &'a [u8],
}

impl<'a, I: Iterator<Item = &'a [u8]>> MemoryRun<'a, I> {
    /// A run yielding `records` in the order given (which must be sorted by the merge key).
    pub fn new(records: impl IntoIterator<IntoIter = I>) -> Self {
        Self {
            records: records.into_iter(),
            current: &[],
        }
    }
}

impl<'a, I: Iterator<Item = &'a [u8]>> SortedRun for MemoryRun<'a, I> {
    #[inline]
    fn advance(&mut self) -> Result<bool, SpillError> {
        match self.records.next() {
            Some(r) => {
                self.current = r;
                Ok(true)
            }
            None => Ok(false),
        }
    }
    #[inline]
    fn current(&self) -> &[u8] {
        self.current
    }
}

struct Entry<K> {
    key: K,
    run: usize,
}

// Reversed, so that std's max-heap pops the smallest (key, run).
impl<K: Ord> Ord for Entry<K> {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key
            .cmp(&self.key)
            .then_with(|| other.run.cmp(&self.run))
    }
}
impl<K: Ord> PartialOrd for Entry<K> {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord> Eq for Entry<K> {}

/// A merging iterator over sorted runs, ordered by `key(record)` and then by run index.
pub struct SortedMerge<R, K, F> {
    runs: Vec<R>,
    heap: BinaryHeap<Entry<K>>,
    key: F,
    /// The run whose current record was returned last; it advances on the next call.
    last: Option<usize>,
    failed: bool,
}

impl<R: SortedRun, K: Ord, F: Fn(&[u8]) -> K> SortedMerge<R, K, F> {
    /// Reads the first record of every run.
    pub fn new(mut runs: Vec<R>, key: F) -> Result<Self, SpillError> {
        let mut heap = BinaryHeap::with_capacity(runs.len());
        for (run, r) in runs.iter_mut().enumerate() {
            if r.advance()? {
                heap.push(Entry {
                    key: key(r.current()),
                    run,
                });
            }
        }
        Ok(Self {
            runs,
            heap,
            key,
            last: None,
            failed: false,
        })
    }

    /// The next record in merged order, borrowed from its run; `None` when all runs are
    /// exhausted (and, for spill files, verified).
    #[inline]
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, SpillError> {
        if self.failed {
            return Err(SpillError::Poisoned {
                path: "<merge>".into(),
                role: "merge",
            });
        }
        if let Some(run) = self.last.take() {
            let mut top = self.heap.peek_mut().expect("the last run is on the heap");
            debug_assert_eq!(top.run, run);
            match self.runs[run].advance() {
                Ok(true) => top.key = (self.key)(self.runs[run].current()),
                Ok(false) => {
                    PeekMut::pop(top);
                }
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        match self.heap.peek() {
            Some(top) => {
                self.last = Some(top.run);
                Ok(Some(self.runs[top.run].current()))
            }
            None => Ok(None),
        }
    }

    /// The index of the run the last returned record came from.
    pub fn last_run(&self) -> Option<usize> {
        self.last
    }

    /// Gives the runs back (e.g. to read their verified infos).
    pub fn into_runs(self) -> Vec<R> {
        self.runs
    }
}

/// Merges sorted `runs` by `key` into `sink`; returns the number of records merged. Equal keys
/// keep run order. Every spill file run is verified to its footer before this returns `Ok`.
pub fn merge_sorted_runs<R, K, E>(
    runs: Vec<R>,
    key: impl Fn(&[u8]) -> K,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, MergeError<E>>
where
    R: SortedRun,
    K: Ord,
{
    let mut merge = SortedMerge::new(runs, key).map_err(MergeError::Run)?;
    let mut n = 0u64;
    while let Some(r) = merge.next_record().map_err(MergeError::Run)? {
        sink(r).map_err(MergeError::Sink)?;
        n += 1;
    }
    Ok(n)
}

/// A merge failed reading a run or in the sink.
#[derive(Debug)]
pub enum MergeError<E> {
    Run(SpillError),
    Sink(E),
}

impl<E: fmt::Display> fmt::Display for MergeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Run(e) => write!(f, "merge: reading a run: {e}"),
            Self::Sink(e) => write!(f, "merge: writing the output: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for MergeError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Run(e) => Some(e),
            Self::Sink(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_memory_runs_stably() {
        let a: Vec<&[u8]> = vec![b"a1", b"b1", b"b2", b"d1"];
        let b: Vec<&[u8]> = vec![b"b3", b"c1"];
        let c: Vec<&[u8]> = vec![];
        let d: Vec<&[u8]> = vec![b"a2", b"b4"];
        let runs = vec![
            MemoryRun::new(a.iter().copied()),
            MemoryRun::new(b.iter().copied()),
            MemoryRun::new(c.iter().copied()),
            MemoryRun::new(d.iter().copied()),
        ];
        let mut out = Vec::new();
        let n = merge_sorted_runs(
            runs,
            |r| r[0],
            |r| {
                out.push(String::from_utf8(r.to_vec()).unwrap());
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert_eq!(n, 8);
        assert_eq!(out, ["a1", "a2", "b1", "b2", "b3", "b4", "c1", "d1"]);
    }
}
