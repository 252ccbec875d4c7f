//! Linearizability of a per-key register, Wing–Gong–Lowe search as Porcupine does it.
//!
//! The model: each key is a register whose state is `Option<String>` (absent or a
//! value). A put sets it; a delete clears it (and reports `deleted` iff it was set); a
//! get returns it; a compare-and-swap succeeds iff the state equals `expected`, then
//! sets `new`. Revisions are ignored here (see `revisions`).
//!
//! Keys are independent registers, so the history is split per key and each key is
//! searched alone. An operation with an unknown outcome returns at +infinity: it is
//! never "before" anything, and it need not be linearized at all (placing it after
//! every known operation is the same as it never having happened), so the search
//! succeeds as soon as every known operation is linearized.
//!
//! The search walks the call/return events in time order, linearizing an operation
//! whose call comes before every pending return, and backtracks on reaching a return.
//! A cache of (linearized set, state) prunes states already explored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::history::{History, Input, Operation, Output};

/// How much work a check may do before giving up with [`CheckResult::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Search steps allowed for each key.
    pub max_steps_per_key: u64,
    /// Wall-clock limit for the whole check, shrinking included.
    pub max_time: Option<Duration>,
    /// Re-checks allowed when shrinking a violation to a small failing sub-history.
    pub max_shrink_checks: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_steps_per_key: 10_000_000,
            max_time: Some(Duration::from_secs(60)),
            max_shrink_checks: 300,
        }
    }
}

/// The verdict on a history (or on one key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    Linearizable,
    Violation(Violation),
    /// The budget ran out before the search decided.
    Unknown,
}

/// A key whose operations cannot be linearized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// A small failing sub-history of that key, ordered by call time: no single
    /// operation can be removed (within the shrink effort) while keeping it failing
    /// and keeping the writer of every value it reads.
    pub ops: Vec<Operation>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "key {:?}: not linearizable; failing sub-history of {} ops:",
            self.key,
            self.ops.len()
        )?;
        for op in &self.ops {
            let ret = op.ret.map_or_else(|| "inf".to_string(), |r| r.to_string());
            writeln!(
                f,
                "  #{} client {} [{}, {}] {:?} -> {:?}",
                op.id, op.client, op.call, ret, op.input, op.output
            )?;
        }
        Ok(())
    }
}

/// Checks every key; returns the first violation (by key order), else `Unknown` if
/// any key ran out of budget, else `Linearizable`.
pub fn check(history: &History, budget: &Budget) -> CheckResult {
    let per_key = check_per_key(history, budget);
    let mut unknown = false;
    for (_, result) in per_key {
        match result {
            CheckResult::Violation(v) => return CheckResult::Violation(v),
            CheckResult::Unknown => unknown = true,
            CheckResult::Linearizable => {}
        }
    }
    if unknown {
        CheckResult::Unknown
    } else {
        CheckResult::Linearizable
    }
}

/// Checks each key independently and returns every key's verdict.
pub fn check_per_key(history: &History, budget: &Budget) -> BTreeMap<String, CheckResult> {
    let deadline = budget.max_time.and_then(|t| Instant::now().checked_add(t));
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history.ops() {
        // A get with an unknown outcome neither constrains nor changes anything.
        if op.is_unknown() && matches!(op.input, Input::Get) {
            by_key.entry(&op.key).or_default();
            continue;
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key
        .into_iter()
        .map(|(key, ops)| {
            let result = check_key(key, ops, budget, deadline);
            (key.to_string(), result)
        })
        .collect()
}

fn check_key(
    key: &str,
    mut ops: Vec<&Operation>,
    budget: &Budget,
    deadline: Option<Instant>,
) -> CheckResult {
    ops.sort_by_key(|op| (op.call, op.id));
    match search(&ops, budget.max_steps_per_key, deadline) {
        Outcome::Linearizable => CheckResult::Linearizable,
        Outcome::Exhausted => CheckResult::Unknown,
        Outcome::Violation => {
            let small = shrink(ops, budget, deadline);
            CheckResult::Violation(Violation {
                key: key.to_string(),
                ops: small.into_iter().cloned().collect(),
            })
        }
    }
}

/// Search steps for each re-check while shrinking.
const SHRINK_STEPS: u64 = 200_000;

/// Makes a failing key history small: first the shortest failing prefix (by call
/// time) that binary search finds, then greedy removal of single operations. A
/// candidate must keep the writer of every value its reads and successful
/// compare-and-swaps observe, so the result explains itself.
fn shrink<'a>(
    mut ops: Vec<&'a Operation>,
    budget: &Budget,
    deadline: Option<Instant>,
) -> Vec<&'a Operation> {
    let writers = Writers::of(&ops);
    let mut checks = 0u32;
    let fails = |candidate: &[&Operation], checks: &mut u32| -> bool {
        *checks += 1;
        writers.closed(candidate)
            && search(
                candidate,
                budget.max_steps_per_key.min(SHRINK_STEPS),
                deadline,
            ) == Outcome::Violation
    };
    let (mut lo, mut hi) = (1, ops.len());
    while lo < hi && checks < budget.max_shrink_checks {
        let mid = lo + (hi - lo) / 2;
        if fails(&ops[..mid], &mut checks) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    ops.truncate(hi);
    loop {
        let mut changed = false;
        for i in (0..ops.len()).rev() {
            if checks >= budget.max_shrink_checks {
                return ops;
            }
            let mut candidate = ops.clone();
            candidate.remove(i);
            if !writers.closed(&candidate) {
                continue;
            }
            if fails(&candidate, &mut checks) {
                ops = candidate;
                changed = true;
            }
        }
        if !changed {
            return ops;
        }
    }
}

/// Which operation wrote each value, for keeping shrunk histories self-explaining.
struct Writers {
    by_value: HashMap<String, u64>,
}

impl Writers {
    fn of(ops: &[&Operation]) -> Self {
        let by_value = ops
            .iter()
            .filter_map(|op| op.written_value().map(|v| (v.to_string(), op.id)))
            .collect();
        Self { by_value }
    }

    /// Every observed value's writer (when the full history has one) is present, and
    /// a delete that deleted has some write before it to delete.
    fn closed(&self, ops: &[&Operation]) -> bool {
        let ids: HashSet<u64> = ops.iter().map(|op| op.id).collect();
        let has_writer = |value: &str| self.by_value.get(value).is_none_or(|id| ids.contains(id));
        let any_write = ops.iter().any(|op| op.written_value().is_some());
        ops.iter().all(|op| match (&op.input, &op.output) {
            (_, Some(Output::Get { value: Some(v), .. })) => has_writer(v),
            (
                Input::CompareAndSwap {
                    expected: Some(e), ..
                },
                Some(Output::CompareAndSwap {
                    succeeded: true, ..
                }),
            ) => has_writer(e),
            (_, Some(Output::Delete { deleted: true, .. })) => any_write,
            _ => true,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Linearizable,
    Violation,
    Exhausted,
}

/// Interned register value.
type State = Option<u32>;

/// One operation as the model sees it, values interned. `None` outcomes: unknown.
#[derive(Debug, Clone, Copy)]
enum Step {
    Put(u32),
    Get(Option<u32>),
    Cas {
        expected: Option<u32>,
        new: u32,
        succeeded: Option<bool>,
    },
    Delete(Option<bool>),
    /// Observes and changes nothing.
    Nothing,
    /// Output kind does not match input kind: can never be linearized.
    Impossible,
}

impl Step {
    /// The state after this operation, or `None` if its output is impossible here.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Put(v) => Some(Some(v)),
            Step::Get(observed) => (observed == state).then_some(state),
            Step::Cas {
                expected,
                new,
                succeeded,
            } => {
                let matches = state == expected;
                match succeeded {
                    None => Some(if matches { Some(new) } else { state }),
                    Some(true) => matches.then_some(Some(new)),
                    Some(false) => (!matches).then_some(state),
                }
            }
            Step::Delete(deleted) => match deleted {
                None => Some(None),
                Some(d) => (d == state.is_some()).then_some(None),
            },
            Step::Nothing => Some(state),
            Step::Impossible => None,
        }
    }
}

struct Interner<'a> {
    ids: HashMap<&'a str, u32>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, value: &'a str) -> u32 {
        let next = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        *self.ids.entry(value).or_insert(next)
    }
}

fn to_step<'a>(op: &'a Operation, interner: &mut Interner<'a>) -> Step {
    match (&op.input, &op.output) {
        (Input::Put { value }, None | Some(Output::Put { .. })) => Step::Put(interner.id(value)),
        (Input::Get, Some(Output::Get { value, .. })) => {
            Step::Get(value.as_deref().map(|v| interner.id(v)))
        }
        // Unknown gets are filtered out before the search; harmless anyway.
        (Input::Get, None) => Step::Nothing,
        (Input::CompareAndSwap { expected, new }, output) => {
            let succeeded = match output {
                None => None,
                Some(Output::CompareAndSwap { succeeded, .. }) => Some(*succeeded),
                Some(_) => return Step::Impossible,
            };
            Step::Cas {
                expected: expected.as_deref().map(|v| interner.id(v)),
                new: interner.id(new),
                succeeded,
            }
        }
        (Input::Delete, None) => Step::Delete(None),
        (Input::Delete, Some(Output::Delete { deleted, .. })) => Step::Delete(Some(*deleted)),
        _ => Step::Impossible,
    }
}

const NIL: usize = usize::MAX;

/// The doubly linked list of call/return events that the search lifts operations out
/// of and puts back into, in LIFO order. Node 0 is the head sentinel.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each node: its operation and whether it is the call event.
    node: Vec<(usize, bool)>,
    call_node: Vec<usize>,
    ret_node: Vec<usize>,
}

impl Events {
    fn new(ops: &[&Operation]) -> Self {
        // Sort key: finite times first (infinite returns last), then time, then calls
        // before returns at equal times (touching intervals overlap).
        let mut events: Vec<((bool, u64, u8), usize, bool)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push(((false, op.call, 0), i, true));
            let ret_key = op.ret.map_or((true, 0, 1), |r| (false, r, 1));
            events.push((ret_key, i, false));
        }
        events.sort_by_key(|&(key, op, _)| (key, op));
        let len = events.len() + 1;
        let mut list = Events {
            next: (1..=len).map(|n| if n == len { NIL } else { n }).collect(),
            prev: (0..len).map(|n| n.wrapping_sub(1)).collect(),
            node: Vec::with_capacity(len),
            call_node: vec![0; ops.len()],
            ret_node: vec![0; ops.len()],
        };
        list.node.push((NIL, false));
        for (n, &(_, op, is_call)) in events.iter().enumerate() {
            let node = n + 1;
            list.node.push((op, is_call));
            if is_call {
                list.call_node[op] = node;
            } else {
                list.ret_node[op] = node;
            }
        }
        list
    }

    fn remove(&mut self, n: usize) {
        let (p, nx) = (self.prev[n], self.next[n]);
        self.next[p] = nx;
        if nx != NIL {
            self.prev[nx] = p;
        }
    }

    fn reinsert(&mut self, n: usize) {
        let (p, nx) = (self.prev[n], self.next[n]);
        self.next[p] = n;
        if nx != NIL {
            self.prev[nx] = n;
        }
    }

    fn lift(&mut self, op: usize) {
        self.remove(self.call_node[op]);
        self.remove(self.ret_node[op]);
    }

    fn unlift(&mut self, op: usize) {
        self.reinsert(self.ret_node[op]);
        self.reinsert(self.call_node[op]);
    }
}

/// The WGL search over one key's operations.
fn search(ops: &[&Operation], max_steps: u64, deadline: Option<Instant>) -> Outcome {
    let mut interner = Interner {
        ids: HashMap::new(),
    };
    let steps: Vec<Step> = ops.iter().map(|op| to_step(op, &mut interner)).collect();
    let known: Vec<bool> = ops.iter().map(|op| op.ret.is_some()).collect();
    let mut remaining_known = known.iter().filter(|k| **k).count();
    if remaining_known == 0 {
        return Outcome::Linearizable;
    }
    let mut events = Events::new(ops);
    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut cur = events.next[0];
    let mut taken = 0u64;
    loop {
        taken += 1;
        if taken > max_steps {
            return Outcome::Exhausted;
        }
        if taken & 0xfff == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            return Outcome::Exhausted;
        }
        let (op, is_call) = events.node.get(cur).copied().unwrap_or((NIL, false));
        if is_call {
            if let Some(new_state) = steps[op].apply(state) {
                let (word, bit) = (op / 64, 1u64 << (op % 64));
                linearized[word] |= bit;
                if cache.insert((linearized.clone(), new_state)) {
                    stack.push((op, state));
                    state = new_state;
                    events.lift(op);
                    if known[op] {
                        remaining_known -= 1;
                        if remaining_known == 0 {
                            return Outcome::Linearizable;
                        }
                    }
                    cur = events.next[0];
                    continue;
                }
                linearized[word] &= !bit;
            }
            cur = events.next[cur];
        } else {
            // A pending operation's return: nothing earlier can be linearized next.
            let Some((op, previous)) = stack.pop() else {
                return Outcome::Violation;
            };
            state = previous;
            linearized[op / 64] &= !(1u64 << (op % 64));
            events.unlift(op);
            if known[op] {
                remaining_known += 1;
            }
            cur = events.next[events.call_node[op]];
        }
    }
}
