//! Model-based test: random command sequences, applied in random batch sizes, against a
//! plain in-memory model (a full copy of the key space at every revision). Every
//! command result, range (current and historical) and event list must match.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const KEYS: &[&[u8]] = &[b"a", b"a\0", b"b", b"c", b"d"];
const ENDS: &[&[u8]] = &[b"", b"", b"\0", b"b", b"c", b"e", b"a\0"];
const VALUES: &[&[u8]] = &[b"", b"0", b"1", b"2"];

#[derive(Clone, Debug)]
enum Step {
    /// A command; `true` starts a new apply batch before it.
    Cmd(Command, bool),
    Range(RangeRequest),
    Events {
        from: u64,
        prev_kv: bool,
    },
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(KEYS).prop_map(<[u8]>::to_vec)
}

fn end() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(ENDS).prop_map(<[u8]>::to_vec)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(VALUES).prop_map(<[u8]>::to_vec)
}

fn revision() -> impl Strategy<Value = u64> {
    prop_oneof![2 => Just(0u64), 3 => 0u64..16]
}

fn range_req() -> impl Strategy<Value = RangeRequest> {
    (
        key(),
        end(),
        0u64..4,
        revision(),
        any::<bool>(),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(key, range_end, limit, revision, keys_only, count_only)| RangeRequest {
                key,
                range_end,
                limit,
                revision,
                keys_only,
                count_only,
            },
        )
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (key(), value(), any::<bool>()).prop_map(|(key, value, prev_kv)| PutRequest {
        key,
        value,
        lease: 0,
        prev_kv,
    })
}

fn delete_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn request_op() -> impl Strategy<Value = RequestOp> {
    prop_oneof![
        put_req().prop_map(RequestOp::Put),
        delete_req().prop_map(RequestOp::DeleteRange),
        range_req().prop_map(RequestOp::Range),
    ]
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        (0u64..4).prop_map(CompareTarget::Version),
        (0u64..12).prop_map(CompareTarget::CreateRevision),
        (0u64..12).prop_map(CompareTarget::ModRevision),
        value().prop_map(CompareTarget::Value),
        Just(CompareTarget::Lease(0)),
    ];
    let result = prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Less,
        CompareResult::Greater,
    ]);
    (
        key(),
        prop_oneof![3 => Just(Vec::new()), 1 => end()],
        target,
        result,
    )
        .prop_map(|(key, range_end, target, result)| Compare {
            key,
            range_end,
            target,
            result,
        })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => put_req().prop_map(Command::Put),
        2 => delete_req().prop_map(Command::DeleteRange),
        3 => (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(request_op(), 0..4),
            prop::collection::vec(request_op(), 0..3),
        )
            .prop_map(|(compare, success, failure)| Command::Txn(TxnRequest {
                compare,
                success,
                failure
            })),
        1 => (0u64..16).prop_map(|revision| Command::Compact { revision }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (command(), prop::bool::weighted(0.4)).prop_map(|(c, b)| Step::Cmd(c, b)),
        2 => range_req().prop_map(Step::Range),
        1 => (0u64..16, any::<bool>()).prop_map(|(from, prev_kv)| Step::Events { from, prev_kv }),
    ]
}

type State = BTreeMap<Vec<u8>, KeyValue>;

/// The obvious implementation: a full copy of the state at every revision.
#[derive(Default)]
struct Model {
    /// `states[r]` is the key space at revision r; `states[0]` is empty.
    states: Vec<State>,
    compact: u64,
    /// Every event ever, with `prev_kv` as of the full history.
    events: Vec<Event>,
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        _ => k >= key && k < end,
    }
}

impl Model {
    fn new() -> Model {
        Model {
            states: vec![State::new()],
            ..Model::default()
        }
    }

    fn rev(&self) -> u64 {
        self.states.len() as u64 - 1
    }

    fn range(
        &self,
        req: &RangeRequest,
        cur: Option<&State>,
    ) -> Result<RangeResponse, CommandError> {
        if req.key.is_empty() {
            return Err(CommandError::EmptyKey);
        }
        if req.revision > self.rev() {
            return Err(CommandError::FutureRevision {
                current: self.rev(),
            });
        }
        if req.revision > 0 && req.revision < self.compact {
            return Err(CommandError::Compacted {
                compact_revision: self.compact,
            });
        }
        let state = match (req.revision, cur) {
            (0, Some(cur)) => cur,
            (0, None) => &self.states[self.states.len() - 1],
            (r, _) => &self.states[r as usize],
        };
        let matching: Vec<KeyValue> = state
            .values()
            .filter(|kv| in_range(&kv.key, &req.key, &req.range_end))
            .cloned()
            .collect();
        let count = matching.len() as u64;
        let mut kvs: Vec<KeyValue> = if req.count_only {
            Vec::new()
        } else if req.limit > 0 {
            matching.into_iter().take(req.limit as usize).collect()
        } else {
            matching
        };
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(RangeResponse {
            more: !req.count_only && (kvs.len() as u64) < count,
            kvs,
            count,
            revision: self.rev(),
        })
    }

    fn compare(&self, c: &Compare) -> bool {
        let state = &self.states[self.states.len() - 1];
        let kvs: Vec<&KeyValue> = state
            .values()
            .filter(|kv| in_range(&kv.key, &c.key, &c.range_end))
            .collect();
        let zero = KeyValue::default();
        let kvs = if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return false;
            }
            vec![&zero]
        } else {
            kvs
        };
        kvs.iter().all(|kv| {
            let ord = match &c.target {
                CompareTarget::Version(v) => kv.version.cmp(v),
                CompareTarget::CreateRevision(v) => kv.create_revision.cmp(v),
                CompareTarget::ModRevision(v) => kv.mod_revision.cmp(v),
                CompareTarget::Value(v) => kv.value.cmp(v),
                CompareTarget::Lease(v) => kv.lease.cmp(v),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Less => ord.is_lt(),
                CompareResult::Greater => ord.is_gt(),
            }
        })
    }

    fn put(cur: &mut State, events: &mut Vec<Event>, rev: u64, req: &PutRequest) -> PutResponse {
        let prev = cur.get(&req.key).cloned();
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: req.value.clone(),
            lease: 0,
        };
        cur.insert(req.key.clone(), kv.clone());
        events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev.clone(),
        });
        PutResponse {
            revision: rev,
            prev_kv: if req.prev_kv { prev } else { None },
        }
    }

    fn delete(
        cur: &mut State,
        events: &mut Vec<Event>,
        rev: u64,
        req: &DeleteRangeRequest,
    ) -> DeleteRangeResponse {
        let gone: Vec<KeyValue> = cur
            .values()
            .filter(|kv| in_range(&kv.key, &req.key, &req.range_end))
            .cloned()
            .collect();
        for kv in &gone {
            cur.remove(&kv.key);
            events.push(Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: kv.key.clone(),
                    mod_revision: rev,
                    ..KeyValue::default()
                },
                prev_kv: Some(kv.clone()),
            });
        }
        DeleteRangeResponse {
            revision: rev,
            deleted: gone.len() as u64,
            prev_kvs: if req.prev_kv { gone } else { Vec::new() },
        }
    }

    fn check_ops(ops: &[RequestOp]) -> Result<(), CommandError> {
        for op in ops {
            let key = match op {
                RequestOp::Range(r) => &r.key,
                RequestOp::Put(p) => &p.key,
                RequestOp::DeleteRange(d) => &d.key,
            };
            if key.is_empty() {
                return Err(CommandError::EmptyKey);
            }
        }
        let puts: Vec<&[u8]> = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::Put(p) => Some(p.key.as_slice()),
                _ => None,
            })
            .collect();
        for (i, p) in puts.iter().enumerate() {
            if puts[..i].contains(p) {
                return Err(CommandError::DuplicateKeyInTxn);
            }
            for op in ops {
                if let RequestOp::DeleteRange(d) = op {
                    if in_range(p, &d.key, &d.range_end) {
                        return Err(CommandError::DuplicateKeyInTxn);
                    }
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, cmd: &Command) -> ApplyResult {
        let rev = self.rev() + 1;
        let mut cur = self.states[self.states.len() - 1].clone();
        let mut events = Vec::new();
        let result = match cmd {
            Command::Put(req) => {
                if req.key.is_empty() {
                    return Err(CommandError::EmptyKey);
                }
                CommandResult::Put(Self::put(&mut cur, &mut events, rev, req))
            }
            Command::DeleteRange(req) => {
                if req.key.is_empty() {
                    return Err(CommandError::EmptyKey);
                }
                CommandResult::DeleteRange(Self::delete(&mut cur, &mut events, rev, req))
            }
            Command::Txn(t) => {
                Self::check_ops(&t.success)?;
                Self::check_ops(&t.failure)?;
                let succeeded = t.compare.iter().all(|c| self.compare(c));
                let ops = if succeeded { &t.success } else { &t.failure };
                let mut responses = Vec::new();
                for op in ops {
                    responses.push(match op {
                        RequestOp::Range(r) => ResponseOp::Range(self.range(r, Some(&cur))?),
                        RequestOp::Put(p) => {
                            ResponseOp::Put(Self::put(&mut cur, &mut events, rev, p))
                        }
                        RequestOp::DeleteRange(d) => {
                            ResponseOp::DeleteRange(Self::delete(&mut cur, &mut events, rev, d))
                        }
                    });
                }
                let final_rev = if events.is_empty() { rev - 1 } else { rev };
                for r in &mut responses {
                    match r {
                        ResponseOp::Range(r) => r.revision = final_rev,
                        ResponseOp::Put(r) => r.revision = final_rev,
                        ResponseOp::DeleteRange(r) => r.revision = final_rev,
                    }
                }
                CommandResult::Txn(TxnResponse {
                    succeeded,
                    responses,
                    revision: final_rev,
                })
            }
            Command::Compact { revision } => {
                if *revision > self.rev() {
                    return Err(CommandError::FutureRevision {
                        current: self.rev(),
                    });
                }
                if *revision <= self.compact {
                    return Err(CommandError::Compacted {
                        compact_revision: self.compact,
                    });
                }
                self.compact = *revision;
                return Ok(CommandResult::Compact {
                    revision: *revision,
                });
            }
            other => panic!("model does not do {other:?}"),
        };
        let result = match result {
            CommandResult::DeleteRange(mut d) if events.is_empty() => {
                d.revision = rev - 1;
                CommandResult::DeleteRange(d)
            }
            r => r,
        };
        if !events.is_empty() {
            self.states.push(cur);
            self.events.extend(events);
        }
        Ok(result)
    }

    fn events(&self, from: u64, prev_kv: bool) -> Result<Vec<Event>, u64> {
        if from < self.compact {
            return Err(self.compact);
        }
        Ok(self
            .events
            .iter()
            .filter(|e| e.kv.mod_revision >= from)
            .map(|e| {
                let mut e = e.clone();
                // The version before an event at the compact revision is compacted away.
                if !prev_kv || e.kv.mod_revision <= self.compact {
                    e.prev_kv = None;
                }
                e
            })
            .collect())
    }
}

fn read_err(e: ReadError) -> CommandError {
    match e {
        ReadError::Compacted { compact_revision } => CommandError::Compacted { compact_revision },
        ReadError::FutureRevision { current } => CommandError::FutureRevision { current },
        ReadError::EmptyKey => CommandError::EmptyKey,
        ReadError::Storage(e) => panic!("storage error {e}"),
    }
}

fn check_reads(f: &Fixture, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(f.store.revision(), model.rev());
    prop_assert_eq!(f.store.compact_revision(), model.compact);
    for rev in model.compact.max(1)..=model.rev() {
        let req = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..RangeRequest::default()
        };
        prop_assert_eq!(
            f.store.range(&req).map_err(read_err),
            model.range(&req, None),
            "full range at {}",
            rev
        );
    }
    Ok(())
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut f = Fixture::new();
    let mut model = Model::new();
    let mut batch: Vec<Command> = Vec::new();
    let flush = |f: &mut Fixture, model: &mut Model, batch: &mut Vec<Command>| {
        if batch.is_empty() {
            return Ok(());
        }
        let cmds = std::mem::take(batch);
        let got = f.apply_all(cmds.clone());
        for (cmd, got) in cmds.iter().zip(got) {
            let want = model.apply(cmd);
            prop_assert_eq!(got, want, "command {:?}", cmd);
        }
        check_reads(f, model)
    };
    for step in steps {
        match step {
            Step::Cmd(cmd, new_batch) => {
                if new_batch {
                    flush(&mut f, &mut model, &mut batch)?;
                }
                batch.push(cmd);
            }
            Step::Range(req) => {
                flush(&mut f, &mut model, &mut batch)?;
                prop_assert_eq!(
                    f.store.range(&req).map_err(read_err),
                    model.range(&req, None),
                    "{:?}",
                    req
                );
            }
            Step::Events { from, prev_kv } => {
                flush(&mut f, &mut model, &mut batch)?;
                let got = f
                    .store
                    .events(from, &[0], &[0], 0, prev_kv)
                    .map_err(|e| match e {
                        ReadError::Compacted { compact_revision } => compact_revision,
                        other => panic!("{other}"),
                    });
                prop_assert_eq!(got, model.events(from, prev_kv), "events from {}", from);
            }
        }
    }
    flush(&mut f, &mut model, &mut batch)?;
    let from = model.compact;
    let got = f.store.events(from, &[0], &[0], 0, true).map_err(|_| from);
    prop_assert_eq!(got, model.events(from, true));
    // The image of whatever we built restores to the same thing.
    let mut buf = Vec::new();
    f.store.write_snapshot(&mut buf).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let restored = Store::restore(&dir.path().join("r"), &mut buf.as_slice()).unwrap();
    prop_assert_eq!(restored.hash().unwrap(), f.store.hash().unwrap());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(steps in prop::collection::vec(step(), 1..40)) {
        run(steps)?;
    }
}
