//! Store-level tests, one file per area, sharing the [`Fixture`] below.

mod cluster;
mod compact;
mod durability;
mod kv;
mod lease;
mod model;
mod snapshot;
mod txn;

use crate::*;

/// A store in a temp dir that numbers entries itself.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub next_index: u64,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        Fixture {
            dir,
            store,
            next_index: 1,
        }
    }

    pub fn entry(&mut self, command: Option<Command>) -> ApplyEntry {
        let index = self.next_index;
        self.next_index += 1;
        ApplyEntry {
            index,
            term: 1,
            command,
            conf_state: None,
            cluster: Vec::new(),
        }
    }

    /// Applies all commands in one batch.
    pub fn apply_all(&mut self, cmds: Vec<Command>) -> Vec<ApplyResult> {
        let entries: Vec<_> = cmds.into_iter().map(|c| self.entry(Some(c))).collect();
        self.store.apply_batch(&entries).unwrap()
    }

    pub fn apply(&mut self, cmd: Command) -> ApplyResult {
        self.apply_all(vec![cmd]).pop().unwrap()
    }

    pub fn put(&mut self, key: &str, value: &str) -> PutResponse {
        match self.apply(put(key, value)).unwrap() {
            CommandResult::Put(r) => r,
            other => panic!("{other:?}"),
        }
    }

    pub fn delete(&mut self, key: &str, end: &str) -> DeleteRangeResponse {
        match self.apply(delete(key, end, true)).unwrap() {
            CommandResult::DeleteRange(r) => r,
            other => panic!("{other:?}"),
        }
    }

    pub fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, CommandError> {
        self.apply(Command::Txn(req)).map(|r| match r {
            CommandResult::Txn(t) => t,
            other => panic!("{other:?}"),
        })
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.store.range(&range_req(key, "", 0)).unwrap().kvs.pop()
    }

    pub fn get_at(&self, key: &str, revision: u64) -> Option<KeyValue> {
        self.store
            .range(&range_req(key, "", revision))
            .unwrap()
            .kvs
            .pop()
    }

    pub fn keys(&self, key: &str, end: &str, revision: u64) -> Vec<String> {
        self.store
            .range(&range_req(key, end, revision))
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).unwrap())
            .collect()
    }

    pub fn reopen(&mut self) {
        let path = self.dir.path().to_path_buf();
        // Replace the store with a throwaway first so the old one is dropped (sled
        // holds a lock on the directory).
        let scratch = tempfile::tempdir().unwrap();
        let old = std::mem::replace(&mut self.store, Store::open(scratch.path()).unwrap());
        drop(old);
        // sled's IO threads can hold its file (and the directory lock) a moment after
        // the store is dropped: retry, bounded.
        let mut tries = 0;
        self.store = loop {
            match Store::open(&path) {
                Ok(store) => break store,
                Err(e) if tries < 100 && e.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
    }
}

pub(crate) fn put(key: &str, value: &str) -> Command {
    Command::Put(put_req(key, value))
}

pub(crate) fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        lease: 0,
        prev_kv: true,
    }
}

pub(crate) fn delete(key: &str, end: &str, prev_kv: bool) -> Command {
    Command::DeleteRange(delete_req(key, end, prev_kv))
}

pub(crate) fn delete_req(key: &str, end: &str, prev_kv: bool) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.as_bytes().to_vec(),
        prev_kv,
    }
}

pub(crate) fn range_req(key: &str, end: &str, revision: u64) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.as_bytes().to_vec(),
        revision,
        ..RangeRequest::default()
    }
}

pub(crate) fn kv(key: &str, value: &str, create: u64, modr: u64, version: u64) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec(),
        create_revision: create,
        mod_revision: modr,
        version,
        value: value.as_bytes().to_vec(),
        lease: 0,
    }
}
