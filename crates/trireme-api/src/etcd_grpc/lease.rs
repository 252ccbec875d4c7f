//! `etcdserverpb.Lease`: grant, revoke, the keep-alive stream, time-to-live and the
//! lease list. A keep-alive or time-to-live of a lease that does not exist answers as
//! etcd does (TTL 0 and -1), which is how clients learn that a lease expired.

use std::pin::Pin;

use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};
use trireme_mvcc::CommandError;
use trireme_store::{Consistency, StoreError};

use super::header;
use super::pb::etcdserverpb::{self as pb, lease_server};
use crate::error::ApiError;
use crate::etcd::check_lease_grant;
use crate::ApiState;

pub(crate) struct LeaseService(pub(crate) ApiState);

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let s = &self.0;
        let req = request.into_inner();
        check_lease_grant(req.ttl, req.id)?;
        let (id, ttl) = s
            .store
            .lease_grant(req.id, req.ttl)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: Some(header(s, 0)),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let s = &self.0;
        let revision = s
            .store
            .lease_revoke(request.into_inner().id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(header(s, revision)),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let inbound = request.into_inner();
        let out = futures_util::stream::unfold(
            (inbound, self.0.clone(), false),
            |(mut inbound, s, failed)| async move {
                if failed {
                    return None;
                }
                // The client closing its side, or its stream breaking, ends ours.
                let req = inbound.message().await.ok().flatten()?;
                let answer = match s.store.lease_keep_alive(req.id).await {
                    Ok(ttl) => Ok(ttl),
                    Err(StoreError::Command(CommandError::LeaseNotFound(_))) => Ok(0),
                    Err(e) => Err(Status::from(ApiError::from(e))),
                };
                let failed = answer.is_err();
                let item = answer.map(|ttl| pb::LeaseKeepAliveResponse {
                    header: Some(header(&s, 0)),
                    id: req.id,
                    ttl,
                });
                Some((item, (inbound, s, failed)))
            },
        );
        Ok(Response::new(Box::pin(out)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let s = &self.0;
        let req = request.into_inner();
        let lease = s
            .store
            .lease(req.id, Consistency::Linearizable)
            .await
            .map_err(ApiError::from)?;
        let Some(lease) = lease else {
            return Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header: Some(header(s, 0)),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        let remaining = s
            .store
            .lease_time_to_live(req.id)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: Some(header(s, 0)),
            id: req.id,
            ttl: remaining,
            granted_ttl: lease.ttl_seconds,
            keys: if req.keys { lease.keys } else { Vec::new() },
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let s = &self.0;
        let leases = s
            .store
            .leases(Consistency::Linearizable)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(header(s, 0)),
            leases: leases
                .into_iter()
                .map(|l| pb::LeaseStatus { id: l.id })
                .collect(),
        }))
    }
}
