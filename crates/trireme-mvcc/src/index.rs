//! The key index: for every key with a kept version, where its versions are, in
//! memory, like etcd's `treeIndex`. The versions themselves are the `r` records of the
//! sled tree ([`crate::keys`]); the index is rebuilt from them when the store opens.
//!
//! Inside an apply the index is seen through [`Touched`], the entries the apply group
//! has changed so far, which replace the base entries once its sled batch is written.

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::iter::Peekable;

use crate::error::StorageError;
use crate::keys::{self, KeyRange};

/// Where one version of a key is: the `r` record at (rev, sub).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ver {
    pub rev: u64,
    pub sub: u32,
    /// A put (false: a deletion).
    pub put: bool,
}

/// Everything the index keeps of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    /// Kept versions, oldest first; never empty in an index.
    pub versions: Vec<Ver>,
    /// Of the newest version when it is a put (all 0 when it is a deletion), so that a
    /// put learns them without reading the record.
    pub create_revision: u64,
    pub version: u64,
    pub lease: i64,
}

impl KeyEntry {
    /// The newest version, if it is a put: the key exists now.
    pub(crate) fn live(&self) -> Option<Ver> {
        self.versions.last().copied().filter(|v| v.put)
    }

    /// The newest version at or below revision `at`.
    pub(crate) fn at(&self, at: u64) -> Option<Ver> {
        let n = self.versions.partition_point(|v| v.rev <= at);
        n.checked_sub(1).and_then(|i| self.versions.get(i)).copied()
    }

    /// The newest version before (rev, sub).
    pub(crate) fn before(&self, rev: u64, sub: u32) -> Option<Ver> {
        let n = self
            .versions
            .partition_point(|v| (v.rev, v.sub) < (rev, sub));
        n.checked_sub(1).and_then(|i| self.versions.get(i)).copied()
    }

    /// Appends version `ver`; `live` is its (create_revision, version, lease) if it is
    /// a put.
    fn push(&mut self, ver: Ver, live: Option<(u64, u64, i64)>) {
        (self.create_revision, self.version, self.lease) = live.unwrap_or_default();
        self.versions.push(ver);
    }

    /// Adds a put at (rev, sub) and returns the record to store for it.
    pub(crate) fn put(
        &mut self,
        key: &[u8],
        rev: u64,
        sub: u32,
        lease: i64,
        value: &[u8],
    ) -> Vec<u8> {
        let (create_revision, version) = match self.live() {
            Some(_) => (self.create_revision, self.version + 1),
            None => (rev, 1),
        };
        let ver = Ver {
            rev,
            sub,
            put: true,
        };
        self.push(ver, Some((create_revision, version, lease)));
        keys::encode_put(key, create_revision, version, lease, value)
    }

    /// Adds a deletion at (rev, sub) and returns the record to store for it.
    pub(crate) fn delete(&mut self, key: &[u8], rev: u64, sub: u32) -> Vec<u8> {
        let ver = Ver {
            rev,
            sub,
            put: false,
        };
        self.push(ver, None);
        keys::encode_delete(key)
    }

    /// Drops the versions a compaction at `revision` makes unreadable and returns them:
    /// of the versions at or below it only the newest stays, and a deletion only if it
    /// is exactly at `revision` (its event is still watchable from there).
    pub(crate) fn compact(&mut self, revision: u64) -> Vec<Ver> {
        let at_or_below = self.versions.partition_point(|v| v.rev <= revision);
        let Some(newest) = at_or_below.checked_sub(1) else {
            return Vec::new();
        };
        let keep_newest = self
            .versions
            .get(newest)
            .is_some_and(|v| v.put || v.rev == revision);
        let drop_to = if keep_newest { newest } else { at_or_below };
        self.versions.drain(..drop_to).collect()
    }
}

/// Every key with a kept version.
pub(crate) type Index = BTreeMap<Vec<u8>, KeyEntry>;

/// Entries an apply group changed: key -> new entry (`None`: the key left the index).
pub(crate) type Touched = BTreeMap<Vec<u8>, Option<KeyEntry>>;

/// The index seen through an apply group's changes.
#[derive(Clone, Copy)]
pub(crate) struct IndexView<'a> {
    pub base: &'a Index,
    pub touched: Option<&'a Touched>,
}

impl<'a> IndexView<'a> {
    pub(crate) fn get(&self, key: &[u8]) -> Option<&'a KeyEntry> {
        if let Some(t) = self.touched.and_then(|t| t.get(key)) {
            return t.as_ref();
        }
        self.base.get(key)
    }

    /// The entries of the keys in `keys`, in key order.
    pub(crate) fn range(&self, keys: &KeyRange) -> IndexRange<'a> {
        let Some(bounds) = keys.bounds() else {
            return IndexRange {
                base: None,
                base_peek: None,
                touched: None,
            };
        };
        IndexRange {
            base: Some(self.base.range::<[u8], _>(bounds)),
            base_peek: None,
            touched: self.touched.map(|t| t.range::<[u8], _>(bounds).peekable()),
        }
    }
}

type TouchedRange<'a> = Peekable<btree_map::Range<'a, Vec<u8>, Option<KeyEntry>>>;

/// A merge of the base index and an apply group's changes; the changes win.
pub(crate) struct IndexRange<'a> {
    base: Option<btree_map::Range<'a, Vec<u8>, KeyEntry>>,
    base_peek: Option<(&'a Vec<u8>, &'a KeyEntry)>,
    touched: Option<TouchedRange<'a>>,
}

impl<'a> Iterator for IndexRange<'a> {
    type Item = (&'a [u8], &'a KeyEntry);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.base_peek.is_none() {
                self.base_peek = self.base.as_mut().and_then(Iterator::next);
            }
            let Some(touched) = self.touched.as_mut() else {
                return self.base_peek.take().map(|(k, e)| (k.as_slice(), e));
            };
            let take_touched = match (&self.base_peek, touched.peek()) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((bk, _)), Some((tk, _))) => match tk.as_slice().cmp(bk.as_slice()) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Equal => {
                        self.base_peek = None;
                        true
                    }
                    std::cmp::Ordering::Greater => false,
                },
            };
            if !take_touched {
                return self.base_peek.take().map(|(k, e)| (k.as_slice(), e));
            }
            // A key that left the index (`None`) is skipped: look again.
            if let Some((k, Some(e))) = touched.next() {
                return Some((k.as_slice(), e));
            }
        }
    }
}

/// Rebuilds the index from the `r` records, which come in revision order.
pub(crate) fn rebuild(tree: &sled::Tree) -> Result<Index, StorageError> {
    let mut index = Index::new();
    for item in tree.scan_prefix([keys::REV]) {
        let (raw_key, raw) = item?;
        let (rev, sub) = keys::parse_rev_key(&raw_key)?;
        let rec = keys::parse_record(&raw)?;
        let entry = match index.get_mut(rec.key) {
            Some(e) => e,
            None => index.entry(rec.key.to_vec()).or_default(),
        };
        if entry
            .versions
            .last()
            .is_some_and(|v| (v.rev, v.sub) >= (rev, sub))
        {
            return Err(StorageError::corrupt("revision record", "out of order"));
        }
        let ver = Ver {
            rev,
            sub,
            put: rec.put.is_some(),
        };
        entry.push(ver, rec.put.map(|(c, v, lease, _)| (c, v, lease)));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(rev: u64, put: bool) -> Ver {
        Ver { rev, sub: 0, put }
    }

    #[test]
    fn versions_are_found_by_revision() {
        let mut e = KeyEntry::default();
        e.put(b"k", 2, 0, 0, b"a");
        e.put(b"k", 4, 1, 5, b"b");
        e.delete(b"k", 6, 0);
        assert_eq!(e.live(), None);
        assert_eq!((e.version, e.create_revision, e.lease), (0, 0, 0));
        e.put(b"k", 8, 0, 0, b"c");
        assert_eq!((e.version, e.create_revision), (1, 8));
        assert_eq!(e.live(), Some(v(8, true)));
        assert_eq!(e.at(1), None);
        assert_eq!(e.at(5).map(|v| v.rev), Some(4));
        assert_eq!(e.at(6), Some(v(6, false)));
        assert_eq!(e.before(4, 1).map(|v| v.rev), Some(2));
        assert_eq!(e.before(4, 2).map(|v| v.rev), Some(4));
        assert_eq!(e.before(2, 0), None);
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_above_it_need() {
        let mut e = KeyEntry {
            versions: vec![v(1, true), v(3, true), v(5, false), v(7, true)],
            ..KeyEntry::default()
        };
        // A read at 2 needs the put at 1; one at 3 no longer does.
        assert_eq!(e.compact(2), vec![]);
        assert_eq!(e.compact(3), vec![v(1, true)]);
        // A deletion exactly at the compaction revision stays, one below goes.
        assert_eq!(e.compact(5), vec![v(3, true)]);
        assert_eq!(e.versions, vec![v(5, false), v(7, true)]);
        assert_eq!(e.compact(6), vec![v(5, false)]);
        assert_eq!(e.compact(9), vec![]);
        assert_eq!(e.versions, vec![v(7, true)]);
    }

    #[test]
    fn the_view_merges_changes_over_the_base() {
        let entry = |rev| KeyEntry {
            versions: vec![v(rev, true)],
            ..KeyEntry::default()
        };
        let base: Index = [("a", 1), ("c", 2), ("e", 3)]
            .into_iter()
            .map(|(k, r)| (k.as_bytes().to_vec(), entry(r)))
            .collect();
        let touched: Touched = [("b", Some(entry(4))), ("c", None), ("e", Some(entry(5)))]
            .into_iter()
            .map(|(k, e)| (k.as_bytes().to_vec(), e))
            .collect();
        let view = IndexView {
            base: &base,
            touched: Some(&touched),
        };
        let got: Vec<_> = view
            .range(&KeyRange::new(b"a", b"\0"))
            .map(|(k, e)| (k.to_vec(), e.versions[0].rev))
            .collect();
        let want: Vec<_> = [("a", 1), ("b", 4), ("e", 5)]
            .into_iter()
            .map(|(k, r)| (k.as_bytes().to_vec(), r))
            .collect();
        assert_eq!(got, want);
        assert!(view.get(b"c").is_none());
        assert_eq!(view.range(&KeyRange::new(b"c", b"")).count(), 0);
        assert_eq!(view.range(&KeyRange::new(b"e", b"")).count(), 1);
        assert_eq!(view.range(&KeyRange::new(b"e", b"a")).count(), 0);
    }
}
