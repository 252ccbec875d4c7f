//! [`View`]: the sled tree and the key index seen through the pending writes of the
//! apply group being built, so that an entry sees the writes of the entries before it
//! in the same batch. Readers outside an apply use a view with no overlay.

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;

use sled::IVec;

use crate::error::StorageError;
use crate::index::{Index, IndexView, Ver};
use crate::keys;
use crate::types::KeyValue;

/// Raw key -> new value (`None`: removed), not yet written to sled.
pub(crate) type Pending = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    tree: &'a sled::Tree,
    pending: Option<&'a Pending>,
    pub index: IndexView<'a>,
}

impl<'a> View<'a> {
    /// The committed state: no overlay.
    pub(crate) fn committed(tree: &'a sled::Tree, index: &'a Index) -> Self {
        View {
            tree,
            pending: None,
            index: IndexView {
                base: index,
                touched: None,
            },
        }
    }

    pub(crate) fn new(
        tree: &'a sled::Tree,
        pending: Option<&'a Pending>,
        index: IndexView<'a>,
    ) -> Self {
        View {
            tree,
            pending,
            index,
        }
    }

    /// The key-value version `ver` of `key` holds, `None` for a deletion.
    pub(crate) fn kv(&self, ver: Ver) -> Result<Option<KeyValue>, StorageError> {
        let raw = self.get(&keys::rev_key(ver.rev, ver.sub))?.ok_or_else(|| {
            StorageError::corrupt(
                "key index",
                format!("no record for revision {}.{}", ver.rev, ver.sub),
            )
        })?;
        Ok(keys::parse_record(&raw)?.to_owned().into_kv(ver.rev))
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<IVec>, StorageError> {
        if let Some(p) = self.pending.and_then(|p| p.get(key)) {
            return Ok(p.as_deref().map(IVec::from));
        }
        Ok(self.tree.get(key)?)
    }

    /// Every live record with a raw key in `[lo, hi)`, in key order.
    pub(crate) fn scan(&self, lo: Vec<u8>, hi: Bound<Vec<u8>>) -> Merged<'a> {
        let tree = self.tree.range((Bound::Included(lo.clone()), hi.clone()));
        let pending = self
            .pending
            .map(|p| p.range((Bound::Included(lo), hi)).peekable());
        Merged {
            tree,
            tree_peek: None,
            pending,
        }
    }
}

type PendingRange<'a> = btree_map::Range<'a, Vec<u8>, Option<Vec<u8>>>;

/// A merge of a sled range and a pending-map range; pending entries win.
pub(crate) struct Merged<'a> {
    tree: sled::Iter,
    tree_peek: Option<(IVec, IVec)>,
    pending: Option<Peekable<PendingRange<'a>>>,
}

impl Iterator for Merged<'_> {
    type Item = Result<(IVec, IVec), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.tree_peek.is_none() {
                match self.tree.next() {
                    Some(Ok(kv)) => self.tree_peek = Some(kv),
                    Some(Err(e)) => return Some(Err(e.into())),
                    None => {}
                }
            }
            let Some(pending) = self.pending.as_mut() else {
                return self.tree_peek.take().map(Ok);
            };
            let take_pending = match (&self.tree_peek, pending.peek()) {
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some((tk, _)), Some((pk, _))) => pk.as_slice().cmp(tk.as_ref()),
            };
            let take_pending = match take_pending {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal => {
                    // The pending write replaces the stored record.
                    self.tree_peek = None;
                    true
                }
                std::cmp::Ordering::Greater => false,
            };
            if !take_pending {
                return self.tree_peek.take().map(Ok);
            }
            // A pending removal (`None` value) is skipped: look again.
            if let Some((k, Some(v))) = pending.next() {
                return Some(Ok((IVec::from(k.as_slice()), IVec::from(v.as_slice()))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn merged_scan_prefers_pending_and_skips_removals() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        for k in ["a", "c", "e", "g"] {
            tree.insert(k, k).unwrap();
        }
        let mut p = Pending::new();
        p.insert(b"b".to_vec(), Some(b"B".to_vec()));
        p.insert(b"c".to_vec(), None);
        p.insert(b"e".to_vec(), Some(b"E".to_vec()));
        p.insert(b"h".to_vec(), Some(b"H".to_vec()));
        let index = Index::new();
        let iv = IndexView {
            base: &index,
            touched: None,
        };
        let view = View::new(&tree, Some(&p), iv);
        let got: Vec<(String, String)> = view
            .scan(b"a".to_vec(), Bound::Excluded(b"h".to_vec()))
            .map(|r| {
                let (k, v) = r.unwrap();
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect();
        let want = [("a", "a"), ("b", "B"), ("e", "E"), ("g", "g")];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(view.get(b"c").unwrap(), None);
        assert_eq!(view.get(b"e").unwrap().unwrap().as_ref(), b"E");
        assert_eq!(view.get(b"g").unwrap().unwrap().as_ref(), b"g");
        let plain = View::committed(&tree, &index);
        assert_eq!(plain.scan(b"a".to_vec(), Bound::Unbounded).count(), 4);
    }
}
