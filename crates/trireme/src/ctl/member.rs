//! `trireme ctl member list|add|promote|remove`: the cluster's members through the
//! member API (etcd's `/v3/cluster/member/*`), on any replica.

use clap::Subcommand;
use trireme_client::{Client, ClusterMember};

use super::{out, render_table};

#[derive(Subcommand)]
pub enum MemberCmd {
    /// Every member: id, name, status (started once it published its API URL),
    /// role, peer and client URLs.
    List,
    /// Add a replica (start it afterwards with an empty data dir and `join = true`).
    Add {
        /// The replica name: the CN of its peer certificate (its id derives from it).
        name: String,
        /// Its peer URL, https://host:port (repeatable).
        #[arg(long = "peer-url", required = true)]
        peer_urls: Vec<String>,
        /// Add it as a learner (promote it once it caught up); else as a voter.
        #[arg(long)]
        learner: bool,
    },
    /// Make a learner a voter (refused until it caught up with the leader).
    Promote {
        /// The member's name, or its id (hex as listed, or decimal).
        member: String,
    },
    /// Remove a member; the removed replica stops (exit code 3).
    Remove {
        /// The member's name, or its id (hex as listed, or decimal).
        member: String,
    },
}

pub async fn run(client: &Client, cmd: MemberCmd) -> anyhow::Result<()> {
    match cmd {
        MemberCmd::List => {
            let members = client.member_list().await?;
            out(&table(&members))
        }
        MemberCmd::Add {
            name,
            peer_urls,
            learner,
        } => {
            let (m, _) = client.member_add(&name, &peer_urls, learner).await?;
            out(&format!(
                "member {} (id {:x}) added as a {}; start it with join = true\n",
                m.name,
                m.id,
                role(&m)
            ))
        }
        MemberCmd::Promote { member } => {
            let m = resolve(client, &member).await?;
            client.member_promote(m.id).await?;
            out(&format!(
                "member {} (id {:x}) promoted to voter\n",
                display_name(&m),
                m.id
            ))
        }
        MemberCmd::Remove { member } => {
            let m = resolve(client, &member).await?;
            client.member_remove(m.id).await?;
            out(&format!(
                "member {} (id {:x}) removed\n",
                display_name(&m),
                m.id
            ))
        }
    }
}

fn role(m: &ClusterMember) -> &'static str {
    if m.is_learner {
        "learner"
    } else {
        "voter"
    }
}

fn display_name(m: &ClusterMember) -> String {
    if m.name.is_empty() {
        format!("{:x}", m.id)
    } else {
        m.name.clone()
    }
}

fn table(members: &[ClusterMember]) -> String {
    let header: Vec<String> = ["ID", "NAME", "STATUS", "ROLE", "PEER URLS", "CLIENT URLS"]
        .map(String::from)
        .to_vec();
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let or_none = |v: &[String]| {
                if v.is_empty() {
                    "<none>".to_string()
                } else {
                    v.join(",")
                }
            };
            vec![
                format!("{:x}", m.id),
                if m.name.is_empty() {
                    "<none>".into()
                } else {
                    m.name.clone()
                },
                if m.client_urls.is_empty() {
                    "unstarted".into()
                } else {
                    "started".into()
                },
                role(m).into(),
                or_none(&m.peer_urls),
                or_none(&m.client_urls),
            ]
        })
        .collect();
    render_table(&header, &rows)
}

/// A member by name, else by id: hex as `member list` prints it (`0x` optional),
/// else decimal as the JSON API gives it.
fn find<'a>(members: &'a [ClusterMember], key: &str) -> Option<&'a ClusterMember> {
    if let Some(m) = members.iter().find(|m| m.name == key) {
        return Some(m);
    }
    let hex = key.strip_prefix("0x").unwrap_or(key);
    let by_id = |id: u64| members.iter().find(|m| m.id == id);
    u64::from_str_radix(hex, 16)
        .ok()
        .and_then(by_id)
        .or_else(|| key.parse::<u64>().ok().and_then(by_id))
}

async fn resolve(client: &Client, key: &str) -> anyhow::Result<ClusterMember> {
    let members = client.member_list().await?;
    find(&members, key).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "member not found: no member is named {key:?} or has that id (see `trireme ctl member list`)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, name: &str, learner: bool, client: &[&str]) -> ClusterMember {
        ClusterMember {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://{name}:7001")],
            client_urls: client.iter().map(|s| s.to_string()).collect(),
            is_learner: learner,
        }
    }

    #[test]
    fn members_are_found_by_name_then_hex_then_decimal_id() {
        let ms = [
            m(0xab, "replica-1", false, &[]),
            m(171, "replica-2", false, &[]),
            m(0x10, "ab", false, &[]),
        ];
        let id = |k: &str| find(&ms, k).map(|m| m.id);
        assert_eq!(id("replica-2"), Some(171));
        assert_eq!(id("ab"), Some(0x10), "a name wins over an id");
        assert_eq!(id("0xab"), Some(0xab));
        assert_eq!(id("10"), Some(0x10), "hex first, as listed");
        assert_eq!(id("nope"), None);
    }

    #[test]
    fn the_table_shows_status_and_role() {
        let t = table(&[
            m(0x1f, "replica-1", false, &["https://replica-1:6443"]),
            m(0x2e, "replica-4", true, &[]),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("ID   NAME        STATUS      ROLE"),
            "{t}"
        );
        assert!(lines[1].contains("replica-1   started     voter"), "{t}");
        assert!(lines[2].contains("replica-4   unstarted   learner"), "{t}");
        assert!(lines[2].ends_with("<none>"), "{t}");
    }
}
