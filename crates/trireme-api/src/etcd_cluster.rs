//! The etcd v3 JSON gateway for the cluster (member) API: `POST
//! /v3/cluster/member/list|add|remove|promote`, in etcd's shapes (`ID` as a string,
//! `peerURLs`, `clientURLs`, `isLearner`; default values left out).
//!
//! Trireme extensions: `member/add` requires `name` (member ids derive from the
//! replica name, the CN of its peer certificate); `member/list` is linearizable unless
//! the request says `"serializable": true`.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use trireme_store::Member;

use crate::error::ApiError;
use crate::etcd::Header;
use crate::json::{de_u64, is_false, ser_u64, JsonBody};
use crate::ApiState;

#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct MemberJson {
    #[serde(rename = "ID", serialize_with = "ser_u64")]
    id: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(rename = "peerURLs", skip_serializing_if = "Vec::is_empty")]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", skip_serializing_if = "Vec::is_empty")]
    client_urls: Vec<String>,
    #[serde(rename = "isLearner", skip_serializing_if = "is_false")]
    is_learner: bool,
}

impl From<Member> for MemberJson {
    fn from(m: Member) -> Self {
        MemberJson {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
            is_learner: m.is_learner,
        }
    }
}

fn members_json(members: Vec<Member>) -> Vec<MemberJson> {
    members.into_iter().map(Into::into).collect()
}

// ---- list ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MemberListJson {
    /// etcd's option; lists here are linearizable unless `serializable` is set.
    linearizable: bool,
    serializable: bool,
}

#[derive(Serialize)]
pub struct MemberListResponseJson {
    header: Header,
    members: Vec<MemberJson>,
}

pub async fn member_list(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<MemberListJson>,
) -> Result<Json<MemberListResponseJson>, ApiError> {
    let members = if req.serializable && !req.linearizable {
        s.store.members_local()?
    } else {
        s.store.members().await?
    };
    Ok(Json(MemberListResponseJson {
        header: s.header(0),
        members: members_json(members),
    }))
}

// ---- add ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MemberAddJson {
    #[serde(rename = "peerURLs", alias = "peer_urls", alias = "peerUrls")]
    peer_urls: Vec<String>,
    #[serde(rename = "isLearner", alias = "is_learner")]
    is_learner: bool,
    /// Trireme: the replica name (its member id is derived from it). Required.
    name: Option<String>,
}

#[derive(Serialize)]
pub struct MemberAddResponseJson {
    header: Header,
    member: MemberJson,
    members: Vec<MemberJson>,
}

pub async fn member_add(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<MemberAddJson>,
) -> Result<Json<MemberAddResponseJson>, ApiError> {
    let name = req.name.filter(|n| !n.is_empty()).ok_or_else(|| {
        ApiError::BadRequest(
            "etcdserver: member name is required: Trireme derives member IDs from the replica name (the CN of its peer certificate); add \"name\"".into(),
        )
    })?;
    if req.peer_urls.is_empty() {
        return Err(ApiError::BadRequest(
            "etcdserver: peerURLs is required (the new replica's https://host:port)".into(),
        ));
    }
    let member = s
        .store
        .member_add(&name, req.peer_urls, req.is_learner)
        .await?;
    let members = s.store.members_local()?;
    Ok(Json(MemberAddResponseJson {
        header: s.header(0),
        member: member.into(),
        members: members_json(members),
    }))
}

// ---- remove / promote ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MemberIdJson {
    #[serde(rename = "ID", alias = "id", deserialize_with = "de_u64")]
    id: u64,
}

impl MemberIdJson {
    fn id(&self) -> Result<u64, ApiError> {
        if self.id == 0 {
            return Err(ApiError::BadRequest(
                "etcdserver: ID is required (the member's id, as listed by member/list)".into(),
            ));
        }
        Ok(self.id)
    }
}

#[derive(Serialize)]
pub struct MembersResponseJson {
    header: Header,
    members: Vec<MemberJson>,
}

pub async fn member_remove(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<MemberIdJson>,
) -> Result<Json<MembersResponseJson>, ApiError> {
    let members = s.store.member_remove(req.id()?).await?;
    Ok(Json(MembersResponseJson {
        header: s.header(0),
        members: members_json(members),
    }))
}

pub async fn member_promote(
    State(s): State<ApiState>,
    JsonBody(req): JsonBody<MemberIdJson>,
) -> Result<Json<MembersResponseJson>, ApiError> {
    let members = s.store.member_promote(req.id()?).await?;
    Ok(Json(MembersResponseJson {
        header: s.header(0),
        members: members_json(members),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn members_serialize_like_etcds_gateway() {
        let m = MemberJson::from(Member {
            id: 10501334649042878790,
            name: "replica-4".into(),
            peer_urls: vec!["https://127.0.0.1:7004".into()],
            client_urls: vec![],
            is_learner: true,
        });
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({
                "ID": "10501334649042878790",
                "name": "replica-4",
                "peerURLs": ["https://127.0.0.1:7004"],
                "isLearner": true
            })
        );
        let voter = MemberJson::from(Member {
            id: 1,
            ..Default::default()
        });
        assert_eq!(
            serde_json::to_value(&voter).unwrap(),
            serde_json::json!({"ID": "1"})
        );
    }

    #[test]
    fn ids_are_read_as_strings_or_numbers() {
        for body in [r#"{"ID":"42"}"#, r#"{"ID":42}"#, r#"{"id":"42"}"#] {
            let r: MemberIdJson = serde_json::from_str(body).unwrap();
            assert_eq!(r.id().unwrap(), 42, "{body}");
        }
        let r: MemberIdJson = serde_json::from_str("{}").unwrap();
        assert!(r.id().is_err());
        assert!(serde_json::from_str::<MemberIdJson>(r#"{"ID":"-1"}"#).is_err());
        assert!(serde_json::from_str::<MemberIdJson>(r#"{"ID":"x"}"#).is_err());
    }
}
