//! A small HTTPS client for the etcd-shaped API, used by dev-cluster (and tests) to
//! find the leader.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

pub struct Client {
    http: reqwest::Client,
}

impl Client {
    /// Trusts `pki/ca.crt` and presents `pki/admin.crt`.
    pub fn from_pki(pki: &Path) -> anyhow::Result<Self> {
        let read = |n: &str| {
            std::fs::read(pki.join(n)).with_context(|| format!("read {}", pki.join(n).display()))
        };
        let ca = reqwest::Certificate::from_pem(&read("ca.crt")?)?;
        let mut identity = read("admin.crt")?;
        identity.extend_from_slice(&read("admin.key")?);
        let identity = reqwest::Identity::from_pem(&identity)?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .timeout(Duration::from_secs(3))
            .build()?;
        Ok(Client { http })
    }

    /// `POST /v3/maintenance/status` on `endpoint`.
    pub async fn status(&self, endpoint: &str) -> anyhow::Result<serde_json::Value> {
        let r = self
            .http
            .post(format!("{endpoint}/v3/maintenance/status"))
            .body("{}")
            .send()
            .await?
            .error_for_status()?;
        Ok(r.json().await?)
    }

    /// The member id of the leader, once every endpoint answers and agrees on one.
    pub async fn find_leader(&self, endpoints: &[String]) -> Option<String> {
        let mut leader = None;
        for e in endpoints {
            let s = self.status(e).await.ok()?;
            let l = s.get("leader")?.as_str()?.to_string();
            if l == "0" || leader.as_ref().is_some_and(|x| *x != l) {
                return None;
            }
            leader = Some(l);
        }
        leader
    }
}
