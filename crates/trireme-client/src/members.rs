//! The cluster's member API (etcd's JSON gateway, `/v3/cluster/member/*`): list,
//! add, remove, promote. Writes go to any replica; the answer is the member list
//! after the change as that replica applied it.

use reqwest::Method;
use serde_json::{json, Value};

use crate::{Client, Error, Result};

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    pub id: u64,
    /// Empty for a founding member that has not published its attributes yet.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the replica runs and published them ("unstarted").
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl ClusterMember {
    /// Reads one member in etcd's gateway shape (`ID` a string or a number, default
    /// values absent).
    pub fn from_json(v: &Value) -> Option<ClusterMember> {
        let id = match v.get("ID")? {
            Value::String(s) => s.parse().ok()?,
            Value::Number(n) => n.as_u64()?,
            _ => return None,
        };
        let strings = |field: &str| -> Vec<String> {
            v.get(field)
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|u| u.as_str().map(String::from))
                .collect()
        };
        Some(ClusterMember {
            id,
            name: v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            peer_urls: strings("peerURLs"),
            client_urls: strings("clientURLs"),
            is_learner: v.get("isLearner").and_then(Value::as_bool).unwrap_or(false),
        })
    }
}

fn members(endpoint: &str, v: &Value) -> Result<Vec<ClusterMember>> {
    v.get("members")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|m| {
            ClusterMember::from_json(m).ok_or_else(|| Error::Decode {
                endpoint: endpoint.to_string(),
                message: format!("not a member: {m}"),
            })
        })
        .collect()
}

impl Client {
    async fn post_json(&self, path: &'static str, body: Value) -> Result<Value> {
        self.json_with_body(Method::POST, path, "application/json", &body)
            .await
    }

    /// Every member (voters and learners), linearizable.
    pub async fn member_list(&self) -> Result<Vec<ClusterMember>> {
        let path = "/v3/cluster/member/list";
        let v = self.post_json(path, json!({})).await?;
        members(path, &v)
    }

    /// Adds the replica `name` at `peer_urls`; returns it and the members after.
    pub async fn member_add(
        &self,
        name: &str,
        peer_urls: &[String],
        is_learner: bool,
    ) -> Result<(ClusterMember, Vec<ClusterMember>)> {
        let path = "/v3/cluster/member/add";
        let v = self
            .post_json(
                path,
                json!({"name": name, "peerURLs": peer_urls, "isLearner": is_learner}),
            )
            .await?;
        let added = v
            .get("member")
            .and_then(ClusterMember::from_json)
            .ok_or_else(|| Error::Decode {
                endpoint: path.to_string(),
                message: "the answer has no member".into(),
            })?;
        Ok((added, members(path, &v)?))
    }

    /// Removes member `id`; returns the members after.
    pub async fn member_remove(&self, id: u64) -> Result<Vec<ClusterMember>> {
        let path = "/v3/cluster/member/remove";
        let v = self.post_json(path, json!({"ID": id.to_string()})).await?;
        members(path, &v)
    }

    /// Promotes learner `id` to voter; returns the members after.
    pub async fn member_promote(&self, id: u64) -> Result<Vec<ClusterMember>> {
        let path = "/v3/cluster/member/promote";
        let v = self.post_json(path, json!({"ID": id.to_string()})).await?;
        members(path, &v)
    }
}
