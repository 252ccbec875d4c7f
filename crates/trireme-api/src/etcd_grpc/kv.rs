//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact. Each request is turned
//! into the JSON gateway's request shape and checked by the same code, so both APIs
//! accept and refuse the same things.

use tonic::{Request, Response, Status};
use trireme_mvcc::{RequestOp, ResponseOp, TxnRequest};

use super::pb::etcdserverpb::{self as pb, kv_server, request_op, response_op};
use super::{header, kv, signed};
use crate::error::ApiError;
use crate::etcd::{range_outcome, CompareJson, DeleteRangeJson, PutJson, RangeJson};
use crate::json::EnumValue;
use crate::ApiState;

pub(crate) struct Kv(pub(crate) ApiState);

fn range_json(r: pb::RangeRequest) -> RangeJson {
    RangeJson {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order: EnumValue::Number(r.sort_order.into()),
        sort_target: EnumValue::Number(r.sort_target.into()),
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

fn put_json(p: pb::PutRequest) -> PutJson {
    PutJson {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

fn delete_json(d: pb::DeleteRangeRequest) -> DeleteRangeJson {
    DeleteRangeJson {
        key: d.key,
        range_end: d.range_end,
        prev_kv: d.prev_kv,
    }
}

fn unsigned(v: i64, field: &str) -> Result<u64, ApiError> {
    u64::try_from(v).map_err(|_| ApiError::BadRequest(format!("{field} must not be negative")))
}

fn compare_json(c: pb::Compare) -> Result<CompareJson, ApiError> {
    use pb::compare::TargetUnion;
    let mut j = CompareJson {
        result: EnumValue::Number(c.result.into()),
        target: EnumValue::Number(c.target.into()),
        key: c.key,
        range_end: c.range_end,
        ..CompareJson::default()
    };
    match c.target_union {
        Some(TargetUnion::Version(v)) => j.version = unsigned(v, "compare.version")?,
        Some(TargetUnion::CreateRevision(v)) => {
            j.create_revision = unsigned(v, "compare.create_revision")?;
        }
        Some(TargetUnion::ModRevision(v)) => {
            j.mod_revision = unsigned(v, "compare.mod_revision")?;
        }
        Some(TargetUnion::Value(v)) => j.value = v,
        Some(TargetUnion::Lease(v)) => j.lease = v,
        None => {}
    }
    Ok(j)
}

fn request_op(op: pb::RequestOp) -> Result<RequestOp, ApiError> {
    match op.request {
        Some(request_op::Request::RequestRange(r)) => {
            let plan = range_json(r).plan()?;
            if plan.descend {
                return Err(ApiError::BadRequest(
                    "descending ranges inside a txn are not supported".into(),
                ));
            }
            Ok(RequestOp::Range(plan.req))
        }
        Some(request_op::Request::RequestPut(p)) => Ok(RequestOp::Put(put_json(p).into_request()?)),
        Some(request_op::Request::RequestDeleteRange(d)) => {
            Ok(RequestOp::DeleteRange(delete_json(d).into_request()?))
        }
        Some(request_op::Request::RequestTxn(_)) => {
            Err(ApiError::BadRequest("nested txn is not supported".into()))
        }
        None => Err(ApiError::BadRequest(
            "each txn operation needs exactly one of request_range, request_put, request_delete_range".into(),
        )),
    }
}

fn txn_request(t: pb::TxnRequest) -> Result<TxnRequest, ApiError> {
    Ok(TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(|c| compare_json(c)?.into_compare())
            .collect::<Result<_, _>>()?,
        success: t
            .success
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
        failure: t
            .failure
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
    })
}

// The answers of a range, put and delete, alone or inside a txn.

fn range_response(
    s: &ApiState,
    revision: u64,
    kvs: Vec<trireme_mvcc::KeyValue>,
    more: bool,
    count: u64,
) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header(s, revision)),
        kvs: kvs.into_iter().map(kv).collect(),
        more,
        count: signed(count),
    }
}

fn put_response(s: &ApiState, r: trireme_mvcc::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(header(s, r.revision)),
        prev_kv: r.prev_kv.map(kv),
    }
}

fn delete_response(s: &ApiState, r: trireme_mvcc::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header(s, r.revision)),
        deleted: signed(r.deleted),
        prev_kvs: r.prev_kvs.into_iter().map(kv).collect(),
    }
}

#[tonic::async_trait]
impl kv_server::Kv for Kv {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let s = &self.0;
        let plan = range_json(request.into_inner()).plan()?;
        let r = range_outcome(s, plan).await?;
        Ok(Response::new(range_response(
            s, r.revision, r.kvs, r.more, r.count,
        )))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let s = &self.0;
        let req = put_json(request.into_inner()).into_request()?;
        let r = s.store.put(req).await.map_err(ApiError::from)?;
        Ok(Response::new(put_response(s, r)))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let s = &self.0;
        let req = delete_json(request.into_inner()).into_request()?;
        let r = s.store.delete_range(req).await.map_err(ApiError::from)?;
        Ok(Response::new(delete_response(s, r)))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let s = &self.0;
        let txn = txn_request(request.into_inner())?;
        let r = s.store.txn(txn).await.map_err(ApiError::from)?;
        let responses = r
            .responses
            .into_iter()
            .map(|op| pb::ResponseOp {
                response: Some(match op {
                    ResponseOp::Range(r) => response_op::Response::ResponseRange(range_response(
                        s, r.revision, r.kvs, r.more, r.count,
                    )),
                    ResponseOp::Put(p) => response_op::Response::ResponsePut(put_response(s, p)),
                    ResponseOp::DeleteRange(d) => {
                        response_op::Response::ResponseDeleteRange(delete_response(s, d))
                    }
                }),
            })
            .collect();
        Ok(Response::new(pb::TxnResponse {
            header: Some(header(s, r.revision)),
            succeeded: r.succeeded,
            responses,
        }))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let s = &self.0;
        // `physical` needs nothing more: compaction is applied before the answer.
        let revision = request.into_inner().revision;
        if revision <= 0 {
            return Err(ApiError::BadRequest("revision must be positive".into()).into());
        }
        s.store
            .compact(revision.unsigned_abs())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::CompactionResponse {
            header: Some(header(s, 0)),
        }))
    }
}
