//! The API's errors and the one place they become HTTP responses. For the etcd v3
//! gateway that is grpc-gateway's shape: `{"error": ..., "code": <grpc code>,
//! "message": ...}` with the HTTP status grpc-gateway gives that code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use trireme_mvcc::CommandError;
use trireme_raft::{ProposeError, ReadError};
use trireme_store::{MemberError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("etcdserver: request is too large")]
    TooLarge,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// gRPC status codes the gateway reports: etcd's for each of its errors (a timeout
/// is UNAVAILABLE, which etcd's clients retry on another endpoint).
const INVALID_ARGUMENT: u16 = 3;
const NOT_FOUND: u16 = 5;
const ALREADY_EXISTS: u16 = 6;
const RESOURCE_EXHAUSTED: u16 = 8;
const FAILED_PRECONDITION: u16 = 9;
const OUT_OF_RANGE: u16 = 11;
const INTERNAL: u16 = 13;
const UNAVAILABLE: u16 = 14;

impl ApiError {
    /// (HTTP status, gRPC code, etcd's message).
    pub(crate) fn parts(&self) -> (StatusCode, u16, String) {
        match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT, m.clone()),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID_ARGUMENT,
                self.to_string(),
            ),
            ApiError::LeaseTtlTooLarge => (StatusCode::BAD_REQUEST, OUT_OF_RANGE, self.to_string()),
            ApiError::Store(e) => store_parts(e),
        }
    }
}

fn store_parts(e: &StoreError) -> (StatusCode, u16, String) {
    use StatusCode as S;
    match e {
        StoreError::Propose(ProposeError::Uncertain(trireme_raft::UncertainReason::Timeout)) => (
            S::GATEWAY_TIMEOUT,
            UNAVAILABLE,
            "etcdserver: request timed out".into(),
        ),
        StoreError::Propose(
            ProposeError::Removed | ProposeError::Uncertain(trireme_raft::UncertainReason::Removed),
        )
        | StoreError::ReadIndex(ReadError::Removed) => (
            S::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "etcdserver: the member has been permanently removed from the cluster".into(),
        ),
        StoreError::Propose(ProposeError::Uncertain(_)) => (
            S::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "etcdserver: leader changed".into(),
        ),
        StoreError::Propose(ProposeError::Dropped) => (
            S::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "etcdserver: no leader".into(),
        ),
        StoreError::Propose(ProposeError::Busy) | StoreError::ReadIndex(ReadError::Busy) => (
            S::TOO_MANY_REQUESTS,
            RESOURCE_EXHAUSTED,
            "etcdserver: too many requests".into(),
        ),
        StoreError::Propose(ProposeError::InvalidConfChange(m)) => {
            (S::BAD_REQUEST, FAILED_PRECONDITION, m.clone())
        }
        StoreError::Propose(ProposeError::ConfChangePending) => (
            S::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "etcdserver: a membership change is already in progress; retry".into(),
        ),
        StoreError::Propose(ProposeError::NotEnoughActive) => (
            S::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "etcdserver: unhealthy cluster".into(),
        ),
        StoreError::Propose(ProposeError::LearnerNotReady) => (
            S::BAD_REQUEST,
            FAILED_PRECONDITION,
            "etcdserver: can only promote a learner member which is in sync with leader".into(),
        ),
        StoreError::Member(m) => member_parts(m),
        StoreError::Propose(ProposeError::Stopped) | StoreError::ReadIndex(ReadError::Stopped) => (
            S::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "etcdserver: server stopped".into(),
        ),
        StoreError::ReadIndex(ReadError::Timeout) => (
            S::GATEWAY_TIMEOUT,
            UNAVAILABLE,
            "etcdserver: request timed out".into(),
        ),
        StoreError::ReadIndex(_) => (
            S::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "etcdserver: leader changed".into(),
        ),
        StoreError::Command(c) => command_parts(c),
        StoreError::Compacted { .. } => (
            S::BAD_REQUEST,
            OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted".into(),
        ),
        StoreError::FutureRevision { .. } => (
            S::BAD_REQUEST,
            OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision".into(),
        ),
        StoreError::EmptyKey => (
            S::BAD_REQUEST,
            INVALID_ARGUMENT,
            "etcdserver: key is not provided".into(),
        ),
        StoreError::TooLarge { .. } => (
            S::PAYLOAD_TOO_LARGE,
            INVALID_ARGUMENT,
            "etcdserver: request is too large".into(),
        ),
        StoreError::Malformed(m) | StoreError::Storage(m) => {
            (S::INTERNAL_SERVER_ERROR, INTERNAL, m.clone())
        }
    }
}

/// etcd's messages where etcd has one; grpc-gateway's HTTP status for the code.
fn member_parts(e: &MemberError) -> (StatusCode, u16, String) {
    use StatusCode as S;
    match e {
        MemberError::NotFound(_) => (
            S::NOT_FOUND,
            NOT_FOUND,
            "etcdserver: member not found".into(),
        ),
        MemberError::AlreadyExists { .. } => (
            S::CONFLICT,
            ALREADY_EXISTS,
            format!("etcdserver: member ID already exist ({e})"),
        ),
        MemberError::PeerUrlExists { .. } => (
            S::CONFLICT,
            ALREADY_EXISTS,
            format!("etcdserver: Peer URLs already exists ({e})"),
        ),
        MemberError::NotLearner(_) => (
            S::BAD_REQUEST,
            FAILED_PRECONDITION,
            "etcdserver: can only promote a learner member".into(),
        ),
        MemberError::LastVoter(_) | MemberError::NotMember(_) => (
            S::BAD_REQUEST,
            FAILED_PRECONDITION,
            format!("etcdserver: {e}"),
        ),
        MemberError::InvalidUrl { .. } => (
            S::BAD_REQUEST,
            INVALID_ARGUMENT,
            format!("etcdserver: given member URLs are invalid ({e})"),
        ),
        MemberError::InvalidName { .. } | MemberError::NoPeerUrl => {
            (S::BAD_REQUEST, INVALID_ARGUMENT, format!("etcdserver: {e}"))
        }
        MemberError::NotLeader => (
            S::BAD_REQUEST,
            FAILED_PRECONDITION,
            "etcdserver: not leader".into(),
        ),
        MemberError::BadTransferee(_) => (
            S::BAD_REQUEST,
            FAILED_PRECONDITION,
            "etcdserver: bad leader transferee".into(),
        ),
        MemberError::TransferTimeout(_) => (
            S::GATEWAY_TIMEOUT,
            UNAVAILABLE,
            "etcdserver: request timed out, leader transfer took too long".into(),
        ),
    }
}

fn command_parts(c: &CommandError) -> (StatusCode, u16, String) {
    use StatusCode as S;
    let (status, code, msg) = match c {
        CommandError::EmptyKey => (
            S::BAD_REQUEST,
            INVALID_ARGUMENT,
            "etcdserver: key is not provided",
        ),
        CommandError::LeaseNotFound(_) => (
            S::NOT_FOUND,
            NOT_FOUND,
            "etcdserver: requested lease not found",
        ),
        CommandError::LeaseExists(_) => (
            S::BAD_REQUEST,
            FAILED_PRECONDITION,
            "etcdserver: lease already exists",
        ),
        CommandError::InvalidLease { .. } => (
            S::BAD_REQUEST,
            INVALID_ARGUMENT,
            "etcdserver: lease TTL must be positive",
        ),
        CommandError::Compacted { .. } => (
            S::BAD_REQUEST,
            OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        CommandError::FutureRevision { .. } => (
            S::BAD_REQUEST,
            OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        CommandError::DuplicateKeyInTxn => (
            S::BAD_REQUEST,
            INVALID_ARGUMENT,
            "etcdserver: duplicate key given in txn request",
        ),
        CommandError::TooManyOps => (
            S::BAD_REQUEST,
            INVALID_ARGUMENT,
            "etcdserver: too many operations in txn request",
        ),
        CommandError::AlreadyApplied => (
            S::INTERNAL_SERVER_ERROR,
            INTERNAL,
            "etcdserver: entry already applied",
        ),
    };
    (status, code, msg.to_string())
}

/// The etcd gateway on the TLS port serves only clients with a certificate of the
/// cluster CA (etcd's `--client-cert-auth`); requests that did not come through
/// `serve` (tests calling the router) carry no identity and pass.
pub async fn require_client_certificate(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if crate::ClientIdentity::is_anonymous(req.extensions()) {
        let message = "etcdserver: a client certificate of the cluster CA is required";
        let body = serde_json::json!({ "error": message, "code": 16, "message": message });
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    next.run(req).await
}

/// etcd's gRPC API answers with the code and message its gateway reports: etcd's
/// clients recognise errors such as "required revision has been compacted" by them.
impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let (_, code, message) = e.parts();
        tonic::Status::new(tonic::Code::from_i32(i32::from(code)), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let body = serde_json::json!({ "error": message, "code": code, "message": message });
        let mut resp = (status, Json(body)).into_response();
        if matches!(
            self,
            ApiError::Store(StoreError::Propose(ProposeError::ConfChangePending))
        ) {
            // Nothing was committed: the same request can be sent again shortly.
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::KubeError;
    use trireme_raft::UncertainReason;

    #[test]
    fn a_change_without_enough_voters_up_is_etcds_retryable_refusal() {
        let (status, code, message) =
            store_parts(&StoreError::Propose(ProposeError::NotEnoughActive));
        assert_eq!(
            (status, code),
            (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)
        );
        assert_eq!(message, "etcdserver: unhealthy cluster");
    }

    #[test]
    fn a_removed_replica_says_so_and_sends_clients_elsewhere() {
        let removed = [
            StoreError::Propose(ProposeError::Removed),
            StoreError::Propose(ProposeError::Uncertain(UncertainReason::Removed)),
            StoreError::ReadIndex(ReadError::Removed),
        ];
        for e in removed {
            let (status, code, message) = store_parts(&e);
            assert_eq!(
                (status, code),
                (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)
            );
            assert!(message.contains("permanently removed"), "{message}");
            let kube = KubeError::from(e);
            assert_eq!(
                kube.code,
                StatusCode::SERVICE_UNAVAILABLE,
                "{}",
                kube.message
            );
            assert!(kube.message.contains("removed from the cluster"));
        }
    }
}
