//! The recorded history: what each client asked, when, and what it was told.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// One client request against the cluster, as the harness recorded it.
///
/// Requests that definitely failed (refused, never applied) are not recorded at all;
/// a request whose outcome is unknown (timed out, connection lost) is recorded with
/// `ret` and `output` both `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique within the history; used to name operations in reports.
    pub id: u64,
    /// The client (connection) that issued it; informational only.
    pub client: u64,
    /// The one key the operation touches.
    pub key: String,
    /// When the request was sent, in ns since the start of the run.
    pub call: u64,
    /// When the response arrived, in ns since the start of the run. `None`: outcome
    /// unknown; the operation returns at +infinity and may or may not have taken effect.
    pub ret: Option<u64>,
    /// What was asked.
    pub input: Input,
    /// What was answered; `None` exactly when `ret` is `None`.
    pub output: Option<Output>,
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// Set the key to `value` (values are unique per key across the history).
    Put { value: String },
    /// Read the key.
    Get,
    /// Set the key to `new` if its value is `expected` (`None`: the key is absent).
    CompareAndSwap {
        expected: Option<String>,
        new: String,
    },
    /// Remove the key.
    Delete,
}

/// A response. `revision` is the store revision of the write (or, for a write that did
/// nothing, the header revision the server reported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Put {
        revision: u64,
    },
    /// `value` `None`: the key was absent (then `mod_revision` is not meaningful).
    Get {
        value: Option<String>,
        mod_revision: u64,
    },
    CompareAndSwap {
        succeeded: bool,
        revision: u64,
    },
    Delete {
        deleted: bool,
        revision: u64,
    },
}

impl Operation {
    /// The outcome is unknown: it may or may not have taken effect.
    pub fn is_unknown(&self) -> bool {
        self.ret.is_none()
    }

    /// The value this operation wrote, or may have written if its outcome is unknown:
    /// a put's value, a successful or unknown compare-and-swap's new value.
    pub fn written_value(&self) -> Option<&str> {
        match (&self.input, &self.output) {
            (Input::Put { value }, _) => Some(value),
            (Input::CompareAndSwap { new, .. }, None)
            | (
                Input::CompareAndSwap { new, .. },
                Some(Output::CompareAndSwap {
                    succeeded: true, ..
                }),
            ) => Some(new),
            _ => None,
        }
    }

    /// The revision of an acknowledged write that changed the store: a put, a
    /// compare-and-swap that succeeded, a delete that deleted. `None` for reads,
    /// unknown outcomes and writes that did nothing.
    pub fn acked_write_revision(&self) -> Option<u64> {
        match self.output.as_ref()? {
            Output::Put { revision } => Some(*revision),
            Output::CompareAndSwap {
                succeeded: true,
                revision,
            } => Some(*revision),
            Output::Delete {
                deleted: true,
                revision,
            } => Some(*revision),
            _ => None,
        }
    }

    /// The operation may have deleted the key: an unknown delete or one that deleted.
    pub fn may_have_deleted(&self) -> bool {
        matches!(
            (&self.input, &self.output),
            (Input::Delete, None) | (Input::Delete, Some(Output::Delete { deleted: true, .. }))
        )
    }
}

/// A history whose operations are well formed (see [`History::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<Operation>", into = "Vec<Operation>")]
pub struct History {
    ops: Vec<Operation>,
}

/// Why a recorded history is malformed (a harness bug, not a store bug).
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("operation {id}: returned at {ret} ns, before it was called at {call} ns")]
    ReturnBeforeCall { id: u64, call: u64, ret: u64 },
    #[error("operation {id}: output must be present exactly when the return time is")]
    OutputPresence { id: u64 },
    #[error("operation {id}: output kind does not match input kind")]
    OutputKind { id: u64 },
    #[error("operation id {id} appears more than once")]
    DuplicateId { id: u64 },
    #[error("history JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl History {
    /// Validates: unique ids, `call <= ret`, `output` present iff `ret` is, and the
    /// output variant matches the input variant.
    pub fn new(ops: Vec<Operation>) -> Result<Self, HistoryError> {
        let mut ids = HashSet::with_capacity(ops.len());
        for op in &ops {
            if !ids.insert(op.id) {
                return Err(HistoryError::DuplicateId { id: op.id });
            }
            if let Some(ret) = op.ret {
                if ret < op.call {
                    return Err(HistoryError::ReturnBeforeCall {
                        id: op.id,
                        call: op.call,
                        ret,
                    });
                }
            }
            if op.ret.is_some() != op.output.is_some() {
                return Err(HistoryError::OutputPresence { id: op.id });
            }
            let kind_ok = matches!(
                (&op.input, &op.output),
                (_, None)
                    | (Input::Put { .. }, Some(Output::Put { .. }))
                    | (Input::Get, Some(Output::Get { .. }))
                    | (
                        Input::CompareAndSwap { .. },
                        Some(Output::CompareAndSwap { .. })
                    )
                    | (Input::Delete, Some(Output::Delete { .. }))
            );
            if !kind_ok {
                return Err(HistoryError::OutputKind { id: op.id });
            }
        }
        Ok(Self { ops })
    }

    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<Operation> {
        self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn to_json(&self) -> Result<String, HistoryError> {
        Ok(serde_json::to_string(self)?)
    }

    /// Parses and validates.
    pub fn from_json(json: &str) -> Result<Self, HistoryError> {
        Ok(serde_json::from_str(json)?)
    }
}

impl TryFrom<Vec<Operation>> for History {
    type Error = HistoryError;
    fn try_from(ops: Vec<Operation>) -> Result<Self, Self::Error> {
        Self::new(ops)
    }
}

impl From<History> for Vec<Operation> {
    fn from(history: History) -> Self {
        history.ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(id: u64, call: u64, ret: Option<u64>) -> Operation {
        Operation {
            id,
            client: 0,
            key: "k".into(),
            call,
            ret,
            input: Input::Put {
                value: format!("v{id}"),
            },
            output: ret.map(|_| Output::Put { revision: id + 1 }),
        }
    }

    #[test]
    fn json_round_trip_keeps_unknown_ops() {
        let history = History::new(vec![put(1, 0, Some(5)), put(2, 3, None)]).unwrap();
        let json = history.to_json().unwrap();
        assert_eq!(History::from_json(&json).unwrap(), history);
    }

    #[test]
    fn malformed_histories_are_refused() {
        assert!(matches!(
            History::new(vec![put(1, 0, Some(5)), put(1, 6, Some(7))]),
            Err(HistoryError::DuplicateId { id: 1 })
        ));
        assert!(matches!(
            History::new(vec![put(1, 9, Some(5))]),
            Err(HistoryError::ReturnBeforeCall { id: 1, .. })
        ));
        let mut no_output = put(1, 0, Some(5));
        no_output.output = None;
        assert!(matches!(
            History::new(vec![no_output]),
            Err(HistoryError::OutputPresence { id: 1 })
        ));
        let mut wrong_kind = put(1, 0, Some(5));
        wrong_kind.output = Some(Output::Get {
            value: None,
            mod_revision: 0,
        });
        assert!(matches!(
            History::new(vec![wrong_kind]),
            Err(HistoryError::OutputKind { id: 1 })
        ));
        // Deserializing validates too.
        let json = r#"[{"id":1,"client":0,"key":"k","call":9,"ret":5,"input":"Get","output":{"Get":{"value":null,"mod_revision":0}}}]"#;
        assert!(History::from_json(json).is_err());
    }
}
