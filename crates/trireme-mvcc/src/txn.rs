//! Transactions: compares against the current state, then one branch of ops applied in
//! order at one revision, each op seeing the earlier ops' writes.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use crate::apply::{Applier, ApplyError};
use crate::error::{CommandError, ReadError, MAX_TXN_OPS};
use crate::keys::KeyRange;
use crate::read::{self, ReadCtx};
use crate::types::{
    Compare, CompareResult, CompareTarget, KeyValue, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};
use crate::view::View;

impl Applier<'_> {
    pub(crate) fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, ApplyError> {
        if req.compare.len() > MAX_TXN_OPS
            || req.success.len() > MAX_TXN_OPS
            || req.failure.len() > MAX_TXN_OPS
        {
            return Err(CommandError::TooManyOps.into());
        }
        check_ops(&req.success)?;
        check_ops(&req.failure)?;
        let mut succeeded = true;
        for c in &req.compare {
            if !compare_holds(self.view(), c)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut w = self.begin();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let ctx = ReadCtx {
                        current: self.revision,
                        compact: self.compact_revision,
                        kv_revision: (!w.wrote()).then_some(self.revision),
                    };
                    let resp = read::range(self.view(), r, ctx).map_err(|e| match e {
                        ReadError::Compacted { compact_revision } => {
                            CommandError::Compacted { compact_revision }.into()
                        }
                        ReadError::FutureRevision { current } => {
                            CommandError::FutureRevision { current }.into()
                        }
                        ReadError::EmptyKey => CommandError::EmptyKey.into(),
                        ReadError::Storage(e) => ApplyError::Storage(e),
                    })?;
                    ResponseOp::Range(resp)
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(p, &mut w)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(d, &mut w)?),
            });
        }
        let revision = self.finish(&w);
        for r in &mut responses {
            match r {
                ResponseOp::Range(r) => r.revision = revision,
                ResponseOp::Put(r) => r.revision = revision,
                ResponseOp::DeleteRange(r) => r.revision = revision,
            }
        }
        Ok(TxnResponse {
            succeeded,
            responses,
            revision,
        })
    }
}

/// Rejects empty keys and, as etcd does, a key put twice or put and deleted in one list.
fn check_ops(ops: &[RequestOp]) -> Result<(), CommandError> {
    let mut puts = BTreeSet::new();
    for op in ops {
        let key = match op {
            RequestOp::Range(r) => &r.key,
            RequestOp::Put(p) => &p.key,
            RequestOp::DeleteRange(d) => &d.key,
        };
        if key.is_empty() {
            return Err(CommandError::EmptyKey);
        }
        if let RequestOp::Put(p) = op {
            if !puts.insert(p.key.as_slice()) {
                return Err(CommandError::DuplicateKeyInTxn);
            }
        }
    }
    for op in ops {
        if let RequestOp::DeleteRange(d) = op {
            let range = KeyRange::new(&d.key, &d.range_end);
            if puts.iter().any(|k| range.contains(k)) {
                return Err(CommandError::DuplicateKeyInTxn);
            }
        }
    }
    Ok(())
}

/// etcd's compare: a missing key (or an empty range) compares as a zero key-value,
/// except that a `Value` compare on it is false; with a range, every key must hold.
fn compare_holds(view: View<'_>, c: &Compare) -> Result<bool, ApplyError> {
    let kvs = read::current_kvs(view, &KeyRange::new(&c.key, &c.range_end))?;
    if kvs.is_empty() {
        if matches!(c.target, CompareTarget::Value(_)) {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::CreateRevision(v) => kv.create_revision.cmp(v),
        CompareTarget::ModRevision(v) => kv.mod_revision.cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Less => ord == Ordering::Less,
        CompareResult::Greater => ord == Ordering::Greater,
    }
}
