//! The key index: for every key with a kept version, where its versions are, in
//! memory, like etcd's `treeIndex`. The versions themselves are the `r` records of the
//! sled tree ([`crate::keys`]); the index is rebuilt from them when the store opens.
//!
//! Inside an apply the index is seen through [`Touched`]: for each key the apply group
//! changed, the versions it dropped and added ([`Change`]), which the index takes once
//! the group is written. A change costs what the group did, not the key's history.

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
    pub meta: Meta,
}

/// A key's create revision, version and lease while it exists (all 0 when deleted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub create_revision: u64,
    pub version: u64,
    pub lease: i64,
}

impl KeyEntry {
    /// Appends version `ver` with the key's meta after it.
    fn push(&mut self, ver: Ver, meta: Meta) {
        self.meta = meta;
        self.versions.push(ver);
    }

    pub(crate) fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            base: &self.versions,
            added: &[],
            meta: self.meta,
        }
    }

    /// Takes an apply group's change: drops versions from the front, appends its own.
    pub(crate) fn apply(&mut self, change: Change) {
        let dropped = change.dropped.min(self.versions.len());
        self.versions.drain(..dropped);
        self.versions.extend(change.added);
        self.meta = change.meta;
    }
}

/// What an apply group did to one key so far, relative to the index: changing an
/// entry costs what the group did, not the length of the key's history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    /// Versions dropped from the front of the indexed entry (by a compaction).
    pub dropped: usize,
    /// Versions added after the indexed ones.
    pub added: Vec<Ver>,
    pub meta: Meta,
}

/// A key's entry as an apply group sees it: the indexed versions it kept, then its own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryRef<'a> {
    base: &'a [Ver],
    added: &'a [Ver],
    pub meta: Meta,
}

impl<'a> EntryRef<'a> {
    pub(crate) fn is_empty(&self) -> bool {
        self.base.is_empty() && self.added.is_empty()
    }

    /// How many of the versions are the index's (the rest are the group's).
    pub(crate) fn indexed(&self) -> usize {
        self.base.len()
    }

    /// The versions, oldest first.
    pub(crate) fn versions(&self) -> impl Iterator<Item = Ver> + 'a {
        self.base.iter().chain(self.added.iter()).copied()
    }

    fn last(&self) -> Option<Ver> {
        self.added.last().or(self.base.last()).copied()
    }

    /// The version just before the first one for which `after` holds (versions are
    /// ordered, so `after` holds on a suffix).
    fn last_before(&self, after: impl Fn(&Ver) -> bool) -> Option<Ver> {
        let in_added = self.added.partition_point(|v| !after(v));
        if in_added > 0 {
            return self.added.get(in_added - 1).copied();
        }
        let in_base = self.base.partition_point(|v| !after(v));
        in_base
            .checked_sub(1)
            .and_then(|i| self.base.get(i))
            .copied()
    }

    /// The newest version, if it is a put: the key exists now.
    pub(crate) fn live(&self) -> Option<Ver> {
        self.last().filter(|v| v.put)
    }

    /// The newest version at or below revision `at`.
    pub(crate) fn at(&self, at: u64) -> Option<Ver> {
        self.last_before(|v| v.rev > at)
    }

    /// The newest version before (rev, sub).
    pub(crate) fn before(&self, rev: u64, sub: u32) -> Option<Ver> {
        self.last_before(|v| (v.rev, v.sub) >= (rev, sub))
    }

    /// How many versions (from the oldest) a compaction at `revision` makes
    /// unreadable: of the versions at or below it only the newest stays, and a deletion
    /// only if it is exactly at `revision` (its event is still watchable from there).
    pub(crate) fn compacted_by(&self, revision: u64) -> usize {
        let at_or_below = self.versions().take_while(|v| v.rev <= revision).count();
        let Some(newest) = at_or_below.checked_sub(1) else {
            return 0;
        };
        let keep_newest = self
            .versions()
            .nth(newest)
            .is_some_and(|v| v.put || v.rev == revision);
        if keep_newest {
            newest
        } else {
            at_or_below
        }
    }
}

impl Change {
    /// The change that leaves an entry with `meta` as it is.
    pub(crate) fn none(meta: Meta) -> Change {
        Change {
            dropped: 0,
            added: Vec::new(),
            meta,
        }
    }

    /// Drops the `n` oldest versions of the entry it changes, of which the indexed
    /// entry still has `indexed` after what was dropped before.
    pub(crate) fn drop_oldest(&mut self, n: usize, indexed: usize) {
        let from_index = n.min(indexed);
        self.dropped += from_index;
        let rest = (n - from_index).min(self.added.len());
        self.added.drain(..rest);
    }
}

/// Every key with a kept version.
pub(crate) type Index = BTreeMap<Vec<u8>, KeyEntry>;

/// The keys an apply group changed and how.
pub(crate) type Touched = BTreeMap<Vec<u8>, Change>;

/// The index seen through an apply group's changes.
#[derive(Clone, Copy)]
pub(crate) struct IndexView<'a> {
    pub base: &'a Index,
    pub touched: Option<&'a Touched>,
}

/// `entry` as changed by `change`.
fn changed<'a>(entry: Option<&'a KeyEntry>, change: &'a Change) -> EntryRef<'a> {
    let base = entry.map_or(&[][..], |e| &e.versions[..]);
    EntryRef {
        base: base.get(change.dropped..).unwrap_or(&[]),
        added: &change.added,
        meta: change.meta,
    }
}

impl<'a> IndexView<'a> {
    pub(crate) fn get(&self, key: &[u8]) -> Option<EntryRef<'a>> {
        let base = self.base.get(key);
        let entry = match self.touched.and_then(|t| t.get(key)) {
            Some(change) => changed(base, change),
            None => base?.as_ref(),
        };
        (!entry.is_empty()).then_some(entry)
    }

    /// The entries of the keys in `keys`, in key order.
    pub(crate) fn range(&self, keys: &KeyRange) -> IndexRange<'a> {
        let Some(bounds) = keys.bounds() else {
            return IndexRange {
                base: None,
                base_peek: None,
                touched: None,
                index: self.base,
            };
        };
        IndexRange {
            base: Some(self.base.range::<[u8], _>(bounds)),
            base_peek: None,
            touched: self.touched.map(|t| t.range::<[u8], _>(bounds).peekable()),
            index: self.base,
        }
    }
}

type TouchedRange<'a> = Peekable<btree_map::Range<'a, Vec<u8>, Change>>;

/// A merge of the base index and an apply group's changes.
pub(crate) struct IndexRange<'a> {
    base: Option<btree_map::Range<'a, Vec<u8>, KeyEntry>>,
    base_peek: Option<(&'a Vec<u8>, &'a KeyEntry)>,
    touched: Option<TouchedRange<'a>>,
    index: &'a Index,
}

impl<'a> Iterator for IndexRange<'a> {
    type Item = (&'a [u8], EntryRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.base_peek.is_none() {
                self.base_peek = self.base.as_mut().and_then(Iterator::next);
            }
            let Some(touched) = self.touched.as_mut() else {
                return self
                    .base_peek
                    .take()
                    .map(|(k, e)| (k.as_slice(), e.as_ref()));
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
                return self
                    .base_peek
                    .take()
                    .map(|(k, e)| (k.as_slice(), e.as_ref()));
            }
            // A key whose versions are all gone is skipped: look again.
            if let Some((k, change)) = touched.next() {
                let entry = changed(self.index.get(k), change);
                if !entry.is_empty() {
                    return Some((k.as_slice(), entry));
                }
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
        let meta = rec
            .put
            .map_or(Meta::default(), |(create_revision, version, lease, _)| {
                Meta {
                    create_revision,
                    version,
                    lease,
                }
            });
        entry.push(ver, meta);
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(rev: u64, put: bool) -> Ver {
        Ver { rev, sub: 0, put }
    }

    fn entry(versions: &[(u64, bool)]) -> KeyEntry {
        KeyEntry {
            versions: versions.iter().map(|&(r, p)| v(r, p)).collect(),
            meta: Meta::default(),
        }
    }

    #[test]
    fn versions_are_found_by_revision_across_the_index_and_a_change() {
        let base = entry(&[(2, true), (4, true)]);
        let change = Change {
            dropped: 0,
            added: vec![v(6, false), v(8, true)],
            meta: Meta::default(),
        };
        let e = changed(Some(&base), &change);
        assert_eq!(e.live(), Some(v(8, true)));
        assert_eq!(e.at(1), None);
        assert_eq!(e.at(5), Some(v(4, true)));
        assert_eq!(e.at(6), Some(v(6, false)));
        assert_eq!(e.at(100), Some(v(8, true)));
        assert_eq!(e.before(4, 0), Some(v(2, true)));
        assert_eq!(e.before(4, 1), Some(v(4, true)));
        assert_eq!(e.before(8, 0), Some(v(6, false)));
        assert_eq!(e.before(2, 0), None);
        let delete = Change {
            added: vec![v(6, false)],
            ..Change::default()
        };
        assert_eq!(changed(Some(&base), &delete).live(), None);
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_above_it_need() {
        let mut e = entry(&[(1, true), (3, true), (5, false), (7, true)]);
        // A read at 2 needs the put at 1; one at 3 no longer does.
        assert_eq!(e.as_ref().compacted_by(2), 0);
        assert_eq!(e.as_ref().compacted_by(3), 1);
        // A deletion exactly at the compaction revision stays, one below goes.
        assert_eq!(e.as_ref().compacted_by(5), 2);
        assert_eq!(e.as_ref().compacted_by(6), 3);
        assert_eq!(e.as_ref().compacted_by(9), 3);
        let mut c = Change::none(e.meta);
        c.drop_oldest(2, 4);
        c.added.push(v(9, false));
        e.apply(c);
        assert_eq!(e, entry(&[(5, false), (7, true), (9, false)]));
        // Dropping reaches into what the group added once the indexed ones are gone.
        let mut c = Change {
            added: vec![v(11, true), v(12, true)],
            ..Change::default()
        };
        c.drop_oldest(4, 3);
        e.apply(c);
        assert_eq!(e, entry(&[(12, true)]));
    }

    #[test]
    fn the_view_merges_changes_over_the_base() {
        let base: Index = [("a", 1), ("c", 2), ("e", 3)]
            .into_iter()
            .map(|(k, r)| (k.as_bytes().to_vec(), entry(&[(r, true)])))
            .collect();
        let add = |r| Change {
            added: vec![v(r, true)],
            ..Change::default()
        };
        let touched: Touched = [
            ("b", add(4)),
            (
                "c",
                Change {
                    dropped: 1,
                    ..Change::default()
                },
            ),
            ("e", add(5)),
        ]
        .into_iter()
        .map(|(k, c)| (k.as_bytes().to_vec(), c))
        .collect();
        let view = IndexView {
            base: &base,
            touched: Some(&touched),
        };
        let got: Vec<_> = view
            .range(&KeyRange::new(b"a", b"\0"))
            .map(|(k, e)| (k.to_vec(), e.versions().map(|v| v.rev).collect::<Vec<_>>()))
            .collect();
        let want: Vec<_> = [("a", vec![1]), ("b", vec![4]), ("e", vec![3, 5])]
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
