//! Replicas in their own network namespaces, joined by veth pairs to a bridge, so that
//! partitions are real packet loss: nftables rules inside a namespace drop a peer
//! link's packets (TCP connections stall, nothing is reset), and a replica's link can
//! be set down (it loses clients and peers alike).
//!
//! Layout for a run by harness process P with n replicas, on subnet 10.77.S.0/24:
//! bridge `trcPb` at 10.77.S.1 in the host namespace (the harness, its clients and the
//! peer-link proxies live there), namespace `trcP-i` with `eth0` at 10.77.S.(10+i).
//! Everything is named after P, so concurrent runs do not collide and leftovers of a
//! harness that was SIGKILLed can be recognised (its PID is gone) and removed.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables).

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// The nftables table the harness owns inside each namespace.
const TABLE: &str = "trireme_chaos";

/// Why namespaces cannot be used here, or `None` when they can.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("network namespaces need root".into());
    }
    for tool in ["ip", "nft"] {
        if !on_path(tool) {
            return Some(format!(
                "`{tool}` is not installed (Debian packages iproute2 and nftables)"
            ));
        }
    }
    None
}

/// True when `tool` is an executable file in a `PATH` directory.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Runs a command, failing with its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// The namespaces and bridge of one run; removed on drop.
pub struct Network {
    prefix: String,
    subnet: u8,
    namespaces: Vec<String>,
    bridge: String,
    /// Per namespace: the TCP ports on the host (bridge) address whose traffic is
    /// dropped, both directions.
    blocked: Vec<BTreeSet<u16>>,
}

impl Network {
    /// Creates the bridge and `n` namespaces. Leftovers of dead harness processes are
    /// removed first.
    pub fn create(n: usize) -> anyhow::Result<Network> {
        if let Some(why) = unavailable() {
            bail!("{why}");
        }
        remove_leftovers();
        let pid = std::process::id();
        let prefix = format!("trc{pid}");
        let subnet = free_subnet(pid)?;
        let mut net = Network {
            bridge: format!("{prefix}b"),
            namespaces: Vec::new(),
            prefix,
            subnet,
            blocked: vec![BTreeSet::new(); n],
        };
        // From here on, a failure drops `net`, which removes what was created.
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.host_addr()),
            "dev",
            &net.bridge,
        ])?;
        for i in 0..n {
            let ns = format!("{}-{}", net.prefix, i + 1);
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let host_side = format!("{ns}h");
            ip(&[
                "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &host_side, "master", &net.bridge, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.replica_addr(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            net.apply_rules(i)?;
        }
        Ok(net)
    }

    /// The harness's address on the bridge (clients and proxies use it).
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    /// Replica `i`'s address inside its namespace.
    pub fn replica_addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 11 + i as u8)
    }

    /// The namespace replica `i` runs in.
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// Drops, in replica `i`'s namespace, every packet to or from the bridge address's
    /// TCP `port` (a peer-link proxy the replica dials).
    pub fn block(&mut self, i: usize, port: u16) -> anyhow::Result<()> {
        if self.blocked[i].insert(port) {
            self.apply_rules(i)?;
        }
        Ok(())
    }

    /// Removes every drop rule in every namespace.
    pub fn unblock_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.namespaces.len() {
            if !self.blocked[i].is_empty() {
                self.blocked[i].clear();
                self.apply_rules(i)?;
            }
        }
        Ok(())
    }

    /// Sets replica `i`'s only interface down (`false`) or up.
    pub fn set_link(&self, i: usize, up: bool) -> anyhow::Result<()> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", self.namespace(i), "link", "set", "eth0", state])?;
        Ok(())
    }

    /// Replaces the namespace's table with one holding the current drops, atomically
    /// (one `nft -f` transaction).
    fn apply_rules(&self, i: usize) -> anyhow::Result<()> {
        let ports: Vec<String> = self.blocked[i].iter().map(u16::to_string).collect();
        let host = self.host_addr();
        let (input, output) = if ports.is_empty() {
            (String::new(), String::new())
        } else {
            let set = ports.join(", ");
            (
                format!("ip saddr {host} tcp sport {{ {set} }} drop;"),
                format!("ip daddr {host} tcp dport {{ {set} }} drop;"),
            )
        };
        let script = format!(
            "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n\
             chain input {{ type filter hook input priority 0; policy accept; {input} }}\n\
             chain output {{ type filter hook output priority 0; policy accept; {output} }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.namespace(i), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("run nft")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).context("write to nft")?;
        }
        let out = child.wait_with_output().context("wait for nft")?;
        if !out.status.success() {
            bail!(
                "nft in {} failed: {}",
                self.namespace(i),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            // Deleting the namespace deletes its veth end, and with it the host end.
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A third octet for 10.77.S.0/24 that no interface on the host uses yet.
fn free_subnet(pid: u32) -> anyhow::Result<u8> {
    let used = ip(&["-o", "-4", "addr", "show"])?;
    let start = (pid % 250) as u8;
    for k in 0..250u8 {
        let s = 1 + (start.wrapping_add(k) % 250);
        if !used.contains(&format!("10.77.{s}.")) {
            return Ok(s);
        }
    }
    bail!("no free 10.77.x.0/24 subnet for the chaos bridge")
}

/// The PID in a name of ours (`trc<PID>b`, `trc<PID>-<i>`), if it is one.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("trc")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    if digits.is_empty() || !(tail == "b" || tail.starts_with('-')) {
        return None;
    }
    digits.parse().ok()
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; EPERM still means it exists.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Removes namespaces and bridges left by harness processes that no longer exist.
fn remove_leftovers() {
    if let Ok(list) = ip(&["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if owner_pid(ns).is_some_and(|p| !alive(p)) {
                let _ = ip(&["netns", "del", ns]);
            }
        }
    }
    if let Ok(list) = ip(&["-o", "link", "show", "type", "bridge"]) {
        for line in list.lines() {
            // "7: trc123b: <BROADCAST,...>"
            let Some(name) = line.split(':').nth(1).map(str::trim) else {
                continue;
            };
            if owner_pid(name).is_some_and(|p| !alive(p)) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_have_an_owner() {
        assert_eq!(owner_pid("trc123b"), Some(123));
        assert_eq!(owner_pid("trc123-2"), Some(123));
        assert_eq!(owner_pid("trc123-2h"), Some(123));
        assert_eq!(owner_pid("trcb"), None);
        assert_eq!(owner_pid("trc123x"), None);
        assert_eq!(owner_pid("docker0"), None);
        assert_eq!(owner_pid("tr1"), None);
    }
}
