//! The etcd v3 JSON gateway for the KV, lease and maintenance APIs: the paths, field
//! names (proto names, snake_case), base64 bytes and string-encoded integers of etcd's
//! grpc-gateway, so that curl scripts and tools written for etcd work unchanged.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use trireme_mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, PutRequest, RangeRequest,
    RequestOp, ResponseOp, TxnRequest,
};
use trireme_store::Consistency;

use crate::error::ApiError;
use crate::json::{
    b64, de_i64, de_u64, is_false, is_zero_i64, is_zero_u64, ser_i64, ser_u64, EnumValue, JsonBody,
};
use crate::ApiState;

#[derive(Serialize)]
pub(crate) struct Header {
    #[serde(serialize_with = "ser_u64")]
    cluster_id: u64,
    #[serde(serialize_with = "ser_u64")]
    member_id: u64,
    #[serde(serialize_with = "ser_u64")]
    revision: u64,
    #[serde(serialize_with = "ser_u64")]
    raft_term: u64,
}

impl ApiState {
    pub(crate) fn header(&self, revision: u64) -> Header {
        Header {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: if revision == 0 {
                self.store.revision()
            } else {
                revision
            },
            raft_term: self.store.term(),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct KeyValueJson {
    #[serde(with = "b64")]
    key: Vec<u8>,
    #[serde(serialize_with = "ser_u64", skip_serializing_if = "is_zero_u64")]
    create_revision: u64,
    #[serde(serialize_with = "ser_u64", skip_serializing_if = "is_zero_u64")]
    mod_revision: u64,
    #[serde(serialize_with = "ser_u64", skip_serializing_if = "is_zero_u64")]
    version: u64,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    value: Vec<u8>,
    #[serde(serialize_with = "ser_i64", skip_serializing_if = "is_zero_i64")]
    lease: i64,
}

impl From<KeyValue> for KeyValueJson {
    fn from(kv: KeyValue) -> Self {
        KeyValueJson {
            key: kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value,
            lease: kv.lease,
        }
    }
}

// ---- put ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PutJson {
    #[serde(with = "b64")]
    pub(crate) key: Vec<u8>,
    #[serde(with = "b64")]
    pub(crate) value: Vec<u8>,
    #[serde(deserialize_with = "de_i64")]
    pub(crate) lease: i64,
    #[serde(alias = "prevKv")]
    pub(crate) prev_kv: bool,
    #[serde(alias = "ignoreValue")]
    pub(crate) ignore_value: bool,
    #[serde(alias = "ignoreLease")]
    pub(crate) ignore_lease: bool,
}

impl PutJson {
    pub(crate) fn into_request(self) -> Result<PutRequest, ApiError> {
        if self.ignore_value || self.ignore_lease {
            return Err(ApiError::BadRequest(
                "ignore_value and ignore_lease are not supported".into(),
            ));
        }
        if self.key.is_empty() {
            return Err(ApiError::BadRequest(
                "etcdserver: key is not provided".into(),
            ));
        }
        Ok(PutRequest {
            key: self.key,
            value: self.value,
            lease: self.lease,
            prev_kv: self.prev_kv,
        })
    }
}

#[derive(Serialize)]
pub struct PutResponseJson {
    header: Header,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_kv: Option<KeyValueJson>,
}

pub async fn put(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<PutJson>,
) -> Result<Json<PutResponseJson>, ApiError> {
    let r = s.store.put(req.into_request()?).await?;
    Ok(Json(PutResponseJson {
        header: s.header(r.revision),
        prev_kv: r.prev_kv.map(Into::into),
    }))
}

// ---- range ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RangeJson {
    #[serde(with = "b64")]
    pub(crate) key: Vec<u8>,
    #[serde(with = "b64", alias = "rangeEnd")]
    pub(crate) range_end: Vec<u8>,
    #[serde(deserialize_with = "de_i64")]
    pub(crate) limit: i64,
    #[serde(deserialize_with = "de_i64")]
    pub(crate) revision: i64,
    #[serde(alias = "sortOrder")]
    pub(crate) sort_order: EnumValue,
    #[serde(alias = "sortTarget")]
    pub(crate) sort_target: EnumValue,
    pub(crate) serializable: bool,
    #[serde(alias = "keysOnly")]
    pub(crate) keys_only: bool,
    #[serde(alias = "countOnly")]
    pub(crate) count_only: bool,
    #[serde(deserialize_with = "de_i64", alias = "minModRevision")]
    pub(crate) min_mod_revision: i64,
    #[serde(deserialize_with = "de_i64", alias = "maxModRevision")]
    pub(crate) max_mod_revision: i64,
    #[serde(deserialize_with = "de_i64", alias = "minCreateRevision")]
    pub(crate) min_create_revision: i64,
    #[serde(deserialize_with = "de_i64", alias = "maxCreateRevision")]
    pub(crate) max_create_revision: i64,
}

const SORT_ORDERS: &[&str] = &["NONE", "ASCEND", "DESCEND"];
const SORT_TARGETS: &[&str] = &["KEY", "VERSION", "CREATE", "MOD", "VALUE"];

/// A range request checked and split into what the store does and what this layer
/// does after it (descending order).
pub(crate) struct RangePlan {
    pub(crate) req: RangeRequest,
    pub(crate) descend: bool,
    limit: u64,
    serializable: bool,
}

impl RangeJson {
    pub(crate) fn plan(self) -> Result<RangePlan, ApiError> {
        if self.key.is_empty() {
            return Err(ApiError::BadRequest(
                "etcdserver: key is not provided".into(),
            ));
        }
        if self.limit < 0 || self.revision < 0 {
            return Err(ApiError::BadRequest(
                "limit and revision must not be negative".into(),
            ));
        }
        if self.min_mod_revision != 0
            || self.max_mod_revision != 0
            || self.min_create_revision != 0
            || self.max_create_revision != 0
        {
            return Err(ApiError::BadRequest(
                "min/max mod/create revision filters are not supported".into(),
            ));
        }
        let order = self.sort_order.resolve(SORT_ORDERS, "sort_order")?;
        let target = self.sort_target.resolve(SORT_TARGETS, "sort_target")?;
        if target != 0 {
            return Err(ApiError::BadRequest(
                "only sort_target KEY is supported".into(),
            ));
        }
        let descend = order == 2;
        let limit = self.limit as u64;
        Ok(RangePlan {
            req: RangeRequest {
                key: self.key,
                range_end: self.range_end,
                // A descending read needs the last keys: read all, then cut.
                limit: if descend { 0 } else { limit },
                revision: self.revision as u64,
                keys_only: self.keys_only,
                count_only: self.count_only,
            },
            descend,
            limit,
            serializable: self.serializable,
        })
    }
}

#[derive(Serialize)]
pub struct RangeResponseJson {
    header: Header,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kvs: Vec<KeyValueJson>,
    #[serde(skip_serializing_if = "is_false")]
    more: bool,
    #[serde(serialize_with = "ser_u64", skip_serializing_if = "is_zero_u64")]
    count: u64,
}

/// What a range answers, before it is encoded (JSON here, protobuf in `etcd_grpc`).
pub(crate) struct RangeOutcome {
    pub(crate) kvs: Vec<KeyValue>,
    pub(crate) more: bool,
    pub(crate) count: u64,
    pub(crate) revision: u64,
}

pub(crate) async fn range_outcome(s: &ApiState, plan: RangePlan) -> Result<RangeOutcome, ApiError> {
    let consistency = if plan.serializable {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    };
    let r = s.store.range(&plan.req, consistency).await?;
    let mut kvs = r.kvs;
    let mut more = r.more;
    if plan.descend {
        kvs.reverse();
        if plan.limit > 0 && kvs.len() as u64 > plan.limit {
            kvs.truncate(plan.limit as usize);
            more = true;
        }
    }
    Ok(RangeOutcome {
        kvs,
        more,
        count: r.count,
        revision: r.revision,
    })
}

async fn run_range(s: &ApiState, plan: RangePlan) -> Result<RangeResponseJson, ApiError> {
    let r = range_outcome(s, plan).await?;
    Ok(RangeResponseJson {
        header: s.header(r.revision),
        kvs: r.kvs.into_iter().map(Into::into).collect(),
        more: r.more,
        count: r.count,
    })
}

pub async fn range(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<RangeJson>,
) -> Result<Json<RangeResponseJson>, ApiError> {
    let plan = req.plan()?;
    Ok(Json(run_range(&s, plan).await?))
}

// ---- delete range ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DeleteRangeJson {
    #[serde(with = "b64")]
    pub(crate) key: Vec<u8>,
    #[serde(with = "b64", alias = "rangeEnd")]
    pub(crate) range_end: Vec<u8>,
    #[serde(alias = "prevKv")]
    pub(crate) prev_kv: bool,
}

impl DeleteRangeJson {
    pub(crate) fn into_request(self) -> Result<DeleteRangeRequest, ApiError> {
        if self.key.is_empty() {
            return Err(ApiError::BadRequest(
                "etcdserver: key is not provided".into(),
            ));
        }
        Ok(DeleteRangeRequest {
            key: self.key,
            range_end: self.range_end,
            prev_kv: self.prev_kv,
        })
    }
}

#[derive(Serialize)]
pub struct DeleteRangeResponseJson {
    header: Header,
    #[serde(serialize_with = "ser_u64", skip_serializing_if = "is_zero_u64")]
    deleted: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    prev_kvs: Vec<KeyValueJson>,
}

pub async fn delete_range(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<DeleteRangeJson>,
) -> Result<Json<DeleteRangeResponseJson>, ApiError> {
    let r = s.store.delete_range(req.into_request()?).await?;
    Ok(Json(DeleteRangeResponseJson {
        header: s.header(r.revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(Into::into).collect(),
    }))
}

// ---- txn ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CompareJson {
    pub(crate) result: EnumValue,
    pub(crate) target: EnumValue,
    #[serde(with = "b64")]
    pub(crate) key: Vec<u8>,
    #[serde(with = "b64", alias = "rangeEnd")]
    pub(crate) range_end: Vec<u8>,
    #[serde(deserialize_with = "de_u64")]
    pub(crate) version: u64,
    #[serde(deserialize_with = "de_u64", alias = "createRevision")]
    pub(crate) create_revision: u64,
    #[serde(deserialize_with = "de_u64", alias = "modRevision")]
    pub(crate) mod_revision: u64,
    #[serde(with = "b64")]
    pub(crate) value: Vec<u8>,
    #[serde(deserialize_with = "de_i64")]
    pub(crate) lease: i64,
}

const COMPARE_RESULTS: &[&str] = &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"];
const COMPARE_TARGETS: &[&str] = &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"];

impl CompareJson {
    pub(crate) fn into_compare(self) -> Result<Compare, ApiError> {
        let result = match self.result.resolve(COMPARE_RESULTS, "compare.result")? {
            0 => CompareResult::Equal,
            1 => CompareResult::Greater,
            2 => CompareResult::Less,
            _ => CompareResult::NotEqual,
        };
        let target = match self.target.resolve(COMPARE_TARGETS, "compare.target")? {
            0 => CompareTarget::Version(self.version),
            1 => CompareTarget::CreateRevision(self.create_revision),
            2 => CompareTarget::ModRevision(self.mod_revision),
            3 => CompareTarget::Value(self.value),
            _ => CompareTarget::Lease(self.lease),
        };
        if self.key.is_empty() {
            return Err(ApiError::BadRequest(
                "etcdserver: key is not provided".into(),
            ));
        }
        Ok(Compare {
            key: self.key,
            range_end: self.range_end,
            target,
            result,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RequestOpJson {
    #[serde(alias = "requestRange")]
    request_range: Option<RangeJson>,
    #[serde(alias = "requestPut")]
    request_put: Option<PutJson>,
    #[serde(alias = "requestDeleteRange")]
    request_delete_range: Option<DeleteRangeJson>,
    #[serde(alias = "requestTxn")]
    request_txn: Option<serde_json::Value>,
}

impl RequestOpJson {
    fn into_op(self) -> Result<RequestOp, ApiError> {
        match (self.request_range, self.request_put, self.request_delete_range, self.request_txn) {
            (Some(r), None, None, None) => {
                let plan = r.plan()?;
                if plan.descend {
                    return Err(ApiError::BadRequest("descending ranges inside a txn are not supported".into()));
                }
                Ok(RequestOp::Range(plan.req))
            }
            (None, Some(p), None, None) => Ok(RequestOp::Put(p.into_request()?)),
            (None, None, Some(d), None) => Ok(RequestOp::DeleteRange(d.into_request()?)),
            (None, None, None, Some(_)) => Err(ApiError::BadRequest("nested txn is not supported".into())),
            _ => Err(ApiError::BadRequest(
                "each txn operation needs exactly one of request_range, request_put, request_delete_range".into(),
            )),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TxnJson {
    compare: Vec<CompareJson>,
    success: Vec<RequestOpJson>,
    failure: Vec<RequestOpJson>,
}

#[derive(Serialize)]
pub struct ResponseOpJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    response_range: Option<RangeResponseJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_put: Option<PutResponseJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_delete_range: Option<DeleteRangeResponseJson>,
}

#[derive(Serialize)]
pub struct TxnResponseJson {
    header: Header,
    #[serde(skip_serializing_if = "is_false")]
    succeeded: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    responses: Vec<ResponseOpJson>,
}

pub async fn txn(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<TxnJson>,
) -> Result<Json<TxnResponseJson>, ApiError> {
    let txn = TxnRequest {
        compare: req
            .compare
            .into_iter()
            .map(CompareJson::into_compare)
            .collect::<Result<_, _>>()?,
        success: req
            .success
            .into_iter()
            .map(RequestOpJson::into_op)
            .collect::<Result<_, _>>()?,
        failure: req
            .failure
            .into_iter()
            .map(RequestOpJson::into_op)
            .collect::<Result<_, _>>()?,
    };
    let r = s.store.txn(txn).await?;
    let responses = r
        .responses
        .into_iter()
        .map(|op| match op {
            ResponseOp::Range(rr) => ResponseOpJson {
                response_range: Some(RangeResponseJson {
                    header: s.header(rr.revision),
                    kvs: rr.kvs.into_iter().map(Into::into).collect(),
                    more: rr.more,
                    count: rr.count,
                }),
                response_put: None,
                response_delete_range: None,
            },
            ResponseOp::Put(p) => ResponseOpJson {
                response_range: None,
                response_put: Some(PutResponseJson {
                    header: s.header(p.revision),
                    prev_kv: p.prev_kv.map(Into::into),
                }),
                response_delete_range: None,
            },
            ResponseOp::DeleteRange(d) => ResponseOpJson {
                response_range: None,
                response_put: None,
                response_delete_range: Some(DeleteRangeResponseJson {
                    header: s.header(d.revision),
                    deleted: d.deleted,
                    prev_kvs: d.prev_kvs.into_iter().map(Into::into).collect(),
                }),
            },
        })
        .collect();
    Ok(Json(TxnResponseJson {
        header: s.header(r.revision),
        succeeded: r.succeeded,
        responses,
    }))
}

// ---- compaction ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CompactionJson {
    #[serde(deserialize_with = "de_i64")]
    revision: i64,
    physical: bool,
}

#[derive(Serialize)]
pub struct HeaderOnly {
    header: Header,
}

pub async fn compaction(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<CompactionJson>,
) -> Result<Json<HeaderOnly>, ApiError> {
    let _ = req.physical; // compaction is always applied before the response
    if req.revision <= 0 {
        return Err(ApiError::BadRequest("revision must be positive".into()));
    }
    s.store.compact(req.revision as u64).await?;
    Ok(Json(HeaderOnly {
        header: s.header(0),
    }))
}

// ---- leases ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LeaseGrantJson {
    #[serde(rename = "TTL", alias = "ttl", deserialize_with = "de_i64")]
    ttl: i64,
    #[serde(rename = "ID", alias = "id", deserialize_with = "de_i64")]
    id: i64,
}

#[derive(Serialize)]
pub struct LeaseGrantResponseJson {
    header: Header,
    #[serde(rename = "ID", serialize_with = "ser_i64")]
    id: i64,
    #[serde(rename = "TTL", serialize_with = "ser_i64")]
    ttl: i64,
}

pub async fn lease_grant(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<LeaseGrantJson>,
) -> Result<Json<LeaseGrantResponseJson>, ApiError> {
    check_lease_grant(req.ttl, req.id)?;
    let (id, ttl) = s.store.lease_grant(req.id, req.ttl).await?;
    Ok(Json(LeaseGrantResponseJson {
        header: s.header(0),
        id,
        ttl,
    }))
}

/// A grant's TTL and requested id, checked as etcd does.
pub(crate) fn check_lease_grant(ttl: i64, id: i64) -> Result<(), ApiError> {
    if ttl > trireme_mvcc::MAX_LEASE_TTL {
        return Err(ApiError::LeaseTtlTooLarge);
    }
    if ttl <= 0 || id < 0 {
        return Err(ApiError::BadRequest(
            "TTL must be positive and ID not negative".into(),
        ));
    }
    Ok(())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LeaseIdJson {
    #[serde(rename = "ID", alias = "id", deserialize_with = "de_i64")]
    id: i64,
}

pub async fn lease_revoke(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<LeaseIdJson>,
) -> Result<Json<HeaderOnly>, ApiError> {
    let revision = s.store.lease_revoke(req.id).await?;
    Ok(Json(HeaderOnly {
        header: s.header(revision),
    }))
}

pub async fn lease_keep_alive(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<LeaseIdJson>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ttl = s.store.lease_keep_alive(req.id).await?;
    Ok(Json(serde_json::json!({
        "result": { "header": s.header(0), "ID": req.id.to_string(), "TTL": ttl.to_string() }
    })))
}

// ---- maintenance ----

#[derive(Serialize)]
#[allow(non_snake_case)] // etcd's proto names these fields in camelCase
pub struct StatusResponseJson {
    header: Header,
    version: &'static str,
    #[serde(serialize_with = "ser_u64")]
    dbSize: u64,
    #[serde(serialize_with = "ser_u64")]
    leader: u64,
    #[serde(serialize_with = "ser_u64")]
    raftIndex: u64,
    #[serde(serialize_with = "ser_u64")]
    raftTerm: u64,
    #[serde(serialize_with = "ser_u64")]
    raftAppliedIndex: u64,
    #[serde(skip_serializing_if = "is_false")]
    isLearner: bool,
    /// Not in etcd's message: the replica's failure zone, for `trireme ctl status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
}

/// The etcd API version this gateway follows.
pub const ETCD_API_VERSION: &str = "3.5.0";

pub async fn status(State(s): State<ApiState>) -> Json<StatusResponseJson> {
    let st = s.store.status();
    Json(StatusResponseJson {
        header: s.header(0),
        version: ETCD_API_VERSION,
        dbSize: dir_size(&s.data_dir),
        leader: st.leader_id,
        raftIndex: st.commit,
        raftTerm: st.term,
        raftAppliedIndex: st.applied,
        isLearner: st.learners.contains(&st.id),
        zone: s.zone.as_deref().map(str::to_owned),
    })
}

/// Bytes under `dir`, recursively (0 when unreadable).
pub(crate) fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

// ---- leadership transfer ----

/// How long a leadership transfer may take before the request fails (the transfer
/// itself is dropped by raft-rs after an election timeout).
pub(crate) const MOVE_LEADER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MoveLeaderJson {
    #[serde(rename = "targetID", alias = "target_id", deserialize_with = "de_u64")]
    target_id: u64,
}

/// `POST /v3/maintenance/transfer-leadership`: etcd's MoveLeader, sent to the leader.
pub async fn move_leader(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<MoveLeaderJson>,
) -> Result<Json<HeaderOnly>, ApiError> {
    if req.target_id == 0 {
        return Err(ApiError::BadRequest(
            "etcdserver: targetID is required (the new leader's member id)".into(),
        ));
    }
    s.store
        .move_leader(req.target_id, MOVE_LEADER_WITHIN)
        .await?;
    Ok(Json(HeaderOnly {
        header: s.header(0),
    }))
}

// ---- hash ----

#[derive(Serialize)]
pub struct HashKvResponseJson {
    header: Header,
    hash: u32,
    #[serde(serialize_with = "ser_u64")]
    compact_revision: u64,
    #[serde(serialize_with = "ser_u64")]
    raft_applied_index: u64,
}

/// `POST /v3/maintenance/hashkv`: a hash of this replica's whole MVCC state (every kept
/// version, not only up to a revision as in etcd) with the revision it covers, so that
/// replicas can be compared once they have applied the same index.
pub async fn hash_kv(State(s): State<ApiState>) -> Result<Json<HashKvResponseJson>, ApiError> {
    let h = consistent_hash(&s)?;
    Ok(Json(HashKvResponseJson {
        header: s.header(h.revision),
        hash: h.hash,
        compact_revision: h.compact_revision,
        raft_applied_index: h.applied,
    }))
}

/// A hash of this replica's MVCC state and what it covers.
pub(crate) struct StateHash {
    pub(crate) hash: u32,
    pub(crate) revision: u64,
    pub(crate) compact_revision: u64,
    pub(crate) applied: u64,
}

pub(crate) fn consistent_hash(s: &ApiState) -> Result<StateHash, ApiError> {
    // Applied index first: if it is unchanged after hashing, the hash is of that index.
    for _ in 0..10 {
        let before = s.store.status().applied;
        let revision = s.store.revision();
        let hash = s.store.hash()?;
        if s.store.status().applied == before {
            return Ok(StateHash {
                hash,
                revision,
                compact_revision: s.store.compact_revision(),
                applied: before,
            });
        }
    }
    Err(ApiError::Store(trireme_store::StoreError::Storage(
        "the state kept changing while it was hashed; retry".into(),
    )))
}
