//! k-way merge of sorted runs (spill files and in-memory runs) through a tournament tree.
//!
//! The tree orders the runs by `(key of the current record, run index)`; records stay in their
//! run's buffer (zero-copy). Ties on the key go to the lower run index, so records with equal
//! keys come out in run order, and in their order within a run: the merge is stable as if the
//! runs were concatenated in order and stably sorted. Per record: one `advance` of the run
//! just consumed, one key computation and ⌈log₂ k⌉ comparisons; no allocation unless the key
//! function allocates.

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

/// A merging iterator over sorted runs, ordered by `key(record)` and then by run index.
///
/// A tournament tree of losers (Knuth, TAOCP 5.4.1): `losers[1..k]` hold the run that lost
/// the match at each internal node, `winner` the overall winner. When the winner's run
/// advances, only the matches on its path to the root are replayed: ⌈log₂ k⌉ key comparisons
/// per record, against up to twice that for a binary heap's sift-down, and each run's key is
/// computed once per record and cached.
pub struct SortedMerge<R, K, F> {
    runs: Vec<R>,
    /// Each run's current key; `None` once the run is exhausted (it loses every match).
    keys: Vec<Option<K>>,
    /// `losers[node]` for internal nodes `1..k`; run `i` is leaf `k + i`.
    losers: Vec<usize>,
    /// The run holding the smallest current record (meaningless when every key is `None`).
    winner: usize,
    key: F,
    /// A record was returned from `winner`; its run advances on the next call.
    pending: bool,
    failed: bool,
}

impl<R: SortedRun, K: Ord, F: Fn(&[u8]) -> K> SortedMerge<R, K, F> {
    /// Reads the first record of every run.
    pub fn new(mut runs: Vec<R>, key: F) -> Result<Self, SpillError> {
        let mut keys = Vec::with_capacity(runs.len());
        for r in runs.iter_mut() {
            keys.push(if r.advance()? {
                Some(key(r.current()))
            } else {
                None
            });
        }
        let k = runs.len();
        let mut merge = Self {
            runs,
            keys,
            losers: vec![0; k.max(1)],
            winner: 0,
            key,
            pending: false,
            failed: false,
        };
        // Play every match bottom-up: `won[node]` is the winner below `node`.
        let mut won = vec![0usize; 2 * k];
        for (i, w) in won[k..].iter_mut().enumerate() {
            *w = i;
        }
        for node in (1..k).rev() {
            let (a, b) = (won[2 * node], won[2 * node + 1]);
            let (w, l) = if merge.beats(b, a) { (b, a) } else { (a, b) };
            won[node] = w;
            merge.losers[node] = l;
        }
        merge.winner = if k > 1 { won[1] } else { 0 };
        Ok(merge)
    }

    /// Whether run `a`'s current record comes before run `b`'s: smaller key, or equal keys
    /// and the earlier run; an exhausted run comes after everything.
    #[inline(always)]
    fn beats(&self, a: usize, b: usize) -> bool {
        match (&self.keys[a], &self.keys[b]) {
            (Some(x), Some(y)) => {
                // Bitwise, not short-circuit: the outcome is unpredictable in a merge, so no
                // branch on it.
                let c = x.cmp(y);
                c.is_lt() | (c.is_eq() & (a < b))
            }
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => a < b,
        }
    }

    /// Replays the matches from run `run`'s leaf to the root after its key changed.
    #[inline]
    fn replay(&mut self, run: usize) {
        let k = self.runs.len();
        let mut w = run;
        let mut node = (k + run) / 2;
        while node > 0 {
            let other = self.losers[node];
            let swap = self.beats(other, w);
            // Selects rather than a branch (see `beats`).
            self.losers[node] = if swap { w } else { other };
            w = if swap { other } else { w };
            node /= 2;
        }
        self.winner = w;
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
        if self.runs.is_empty() {
            return Ok(None);
        }
        if self.pending {
            self.pending = false;
            let run = self.winner;
            match self.runs[run].advance() {
                Ok(true) => self.keys[run] = Some((self.key)(self.runs[run].current())),
                Ok(false) => self.keys[run] = None,
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
            self.replay(run);
        }
        if self.keys[self.winner].is_none() {
            return Ok(None);
        }
        self.pending = true;
        Ok(Some(self.runs[self.winner].current()))
    }

    /// The index of the run the last returned record came from.
    pub fn last_run(&self) -> Option<usize> {
        self.pending.then_some(self.winner)
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
