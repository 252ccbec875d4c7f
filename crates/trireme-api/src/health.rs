//! Liveness, readiness and version.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::ApiState;

/// The process is up and its Raft node has not stopped.
pub async fn livez(State(s): State<ApiState>) -> (StatusCode, &'static str) {
    let st = s.store.status();
    if st.failed.is_some() || st.stopped {
        (StatusCode::SERVICE_UNAVAILABLE, "raft node stopped\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// Ready while this replica knows a leader and has applied everything it knows to be
/// committed: a replica cut off from the quorum loses its leader within an election
/// timeout (pre-vote resets it) and turns 503, so a load balancer stops routing to it.
/// A replica removed from the cluster is never ready (it exits soon after).
pub async fn readyz(State(s): State<ApiState>) -> (StatusCode, String) {
    let st = s.store.status();
    if st.failed.is_some() || st.stopped {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "raft node stopped\n".into(),
        );
    }
    if st.removed {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "removed from the cluster\n".into(),
        );
    }
    if st.leader_id == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "no leader\n".into());
    }
    if st.applied < st.commit {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "applying: {} of {} committed entries\n",
                st.applied, st.commit
            ),
        );
    }
    (StatusCode::OK, "ok\n".into())
}

/// Kubernetes' `version.Info` shape, which `kubectl version` reads.
pub async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "major": "1",
        "minor": "32",
        "gitVersion": concat!("v1.32.0-trireme.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}
