//! `etcdserverpb.Cluster` (the member API) and `etcdserverpb.Maintenance` (status,
//! alarms, the MVCC hash).

use tonic::{Request, Response, Status};
use trireme_store::Member;

use super::header;
use super::pb::etcdserverpb::{self as pb, alarm_request, cluster_server, maintenance_server};
use crate::error::ApiError;
use crate::etcd::{consistent_hash, dir_size, ETCD_API_VERSION};
use crate::ApiState;

use crate::etcd::MOVE_LEADER_WITHIN;

pub(crate) struct ClusterService(pub(crate) ApiState);
pub(crate) struct MaintenanceService(pub(crate) ApiState);

fn member(m: Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

fn members(ms: Vec<Member>) -> Vec<pb::Member> {
    ms.into_iter().map(member).collect()
}

fn member_id(id: u64) -> Result<u64, Status> {
    if id == 0 {
        return Err(ApiError::BadRequest(
            "etcdserver: ID is required (the member's id, as listed by member list)".into(),
        )
        .into());
    }
    Ok(id)
}

#[tonic::async_trait]
impl cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        _request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        // etcd's MemberAddRequest has no name, and Trireme derives a member's id from
        // its replica name (the CN of its peer certificate).
        Err(Status::failed_precondition(
            "trireme: a new member needs its replica name, which etcd's MemberAdd does not carry; use `trireme ctl member add NAME --peer-url URL` or POST /v3/cluster/member/add with \"name\"",
        ))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let s = &self.0;
        let id = member_id(request.into_inner().id)?;
        let list = s.store.member_remove(id).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(header(s, 0)),
            members: members(list),
        }))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        // Linearizable whatever the request says, as the JSON gateway's default.
        let s = &self.0;
        let list = s.store.members().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::MemberListResponse {
            header: Some(header(s, 0)),
            members: members(list),
        }))
    }

    async fn member_update(
        &self,
        _request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(
            "trireme: a member's peer URL is the one it publishes when it starts; change it in the replica's config and restart the replica",
        ))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let s = &self.0;
        let id = member_id(request.into_inner().id)?;
        let list = s.store.member_promote(id).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(header(s, 0)),
            members: members(list),
        }))
    }
}

#[tonic::async_trait]
impl maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        // Trireme raises no alarms (no space quota, no corruption check): there is
        // never one to list or to clear.
        let action = request.into_inner().action;
        if action == alarm_request::AlarmAction::Activate as i32 {
            return Err(Status::unimplemented(
                "trireme: alarms are not raised on this server",
            ));
        }
        Ok(Response::new(pb::AlarmResponse {
            header: Some(header(&self.0, 0)),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = &self.0;
        let st = s.store.status();
        let db_size = i64::try_from(dir_size(&s.data_dir)).unwrap_or(i64::MAX);
        Ok(Response::new(pb::StatusResponse {
            header: Some(header(s, 0)),
            version: ETCD_API_VERSION.into(),
            db_size,
            leader: st.leader_id,
            raft_index: st.commit,
            raft_term: st.term,
            raft_applied_index: st.applied,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: st.learners.contains(&st.id),
        }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Err(Status::unimplemented(
            "trireme: there is nothing to defragment; the store (sled) reuses the space of compacted revisions itself",
        ))
    }

    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        Err(Status::unimplemented(
            "trireme: Hash hashes etcd's bolt file; use HashKV (etcdctl endpoint hashkv)",
        ))
    }

    type SnapshotStream = futures_util::stream::Empty<Result<pb::SnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented(
            "trireme: snapshot save writes an etcd bolt file, which Trireme does not have",
        ))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let s = &self.0;
        let to = member_id(request.into_inner().target_id)?;
        s.store
            .move_leader(to, MOVE_LEADER_WITHIN)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(header(s, 0)),
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let s = &self.0;
        if request.into_inner().revision != 0 {
            return Err(ApiError::BadRequest(
                "trireme: hash_kv covers the whole current state; send revision 0".into(),
            )
            .into());
        }
        let h = consistent_hash(s)?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(header(s, h.revision)),
            hash: h.hash,
            compact_revision: super::signed(h.compact_revision),
        }))
    }
}
