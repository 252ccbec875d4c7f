//! A 3-member cluster whose only network is this crate: election, replication both
//! ways, a lagging member caught up by a streamed snapshot, and a removed member told
//! that it is not a member any more.

use std::time::Duration;

use trireme_raft::Role;

use super::*;

async fn leader(members: &[Member], among: &[usize]) -> usize {
    wait_for(Duration::from_secs(15), || {
        among.iter().copied().find(|i| {
            let s = members[*i].handle.status();
            s.role == Role::Leader
                && among
                    .iter()
                    .all(|o| members[*o].handle.status().leader_id == members[*i].id)
        })
    })
    .await
    .expect("a leader is elected")
}

fn recv_files(m: &Member) -> Vec<String> {
    std::fs::read_dir(m.dir.path().join("snap"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("recv-"))
                .collect()
        })
        .unwrap_or_default()
}

/// 32 KiB payloads: the snapshot spans several 1 MiB chunks, batches several messages.
fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("while-down-{i}-").into_bytes();
    p.resize(32 * 1024, (i % 251) as u8);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_replicate_and_a_lagging_one_catches_up_by_snapshot() {
    let ca = pki::generate_ca("test cluster CA").unwrap();
    let mut members = start_cluster(&ca, &["replica-1", "replica-2", "replica-3"], 20).await;
    let all = [0, 1, 2];
    let first_leader = leader(&members, &all).await;

    // Proposals through every member: followers forward to the leader, the leader
    // replicates back, over the TLS streams in both directions.
    for i in 0..15usize {
        let via = &members[i % 3].handle;
        propose_retrying(via, format!("w{i}").as_bytes(), Duration::from_secs(10)).await;
    }
    let converged = wait_for(Duration::from_secs(10), || {
        let logs: Vec<_> = members.iter().map(|m| m.sm.payloads()).collect();
        (logs[0].len() >= 15 && logs.iter().all(|l| *l == logs[0])).then_some(())
    })
    .await;
    assert!(converged.is_some(), "every member applies the same entries");

    // Cut one follower off: stop its peer server (its own sends still go out; with
    // pre-vote it cannot disturb the others).
    let lagging = (0..3).find(|i| *i != first_leader).unwrap();
    members[lagging].server.take().unwrap().stop().await;
    let rest: Vec<usize> = all.iter().copied().filter(|i| *i != lagging).collect();
    let l = leader(&members, &rest).await;
    for i in 0..100u64 {
        propose_retrying(&members[l].handle, &payload(i), Duration::from_secs(10)).await;
    }
    let first = members[l].handle.status().first_index;
    let lagging_applied = members[lagging].handle.status().applied;
    assert!(
        first > lagging_applied + 1,
        "the leader compacted past the lagging member (first index {first}, lagging applied {lagging_applied})"
    );

    // Back on a new port: the others learn the new address (set_peer moves a peer).
    let server =
        RunningServer::start(members[lagging].tls.clone(), members[lagging].slot.clone()).await;
    let url = server.url();
    members[lagging].server = Some(server);
    let lagging_id = members[lagging].id;
    for m in members.iter().filter(|m| m.id != lagging_id) {
        m.transport.set_peer(lagging_id, &url).unwrap();
    }
    let expected = members[l].sm.payloads();
    let caught_up = wait_for(Duration::from_secs(20), || {
        (members[lagging].sm.payloads() == expected).then_some(())
    })
    .await;
    assert!(
        caught_up.is_some(),
        "{} installs the leader's snapshot",
        members[lagging].name
    );
    let snap_size: usize = expected.iter().map(Vec::len).sum();
    assert!(
        snap_size > 3 * 1024 * 1024,
        "the image spans several chunks"
    );
    // The status is published after the apply that the payload check saw: wait for it.
    let by_snapshot = wait_for(Duration::from_secs(10), || {
        (members[lagging].handle.status().first_index > lagging_applied).then_some(())
    })
    .await;
    assert!(
        by_snapshot.is_some(),
        "it caught up by snapshot, not by log"
    );
    assert!(
        recv_files(&members[lagging]).is_empty(),
        "no received snapshot file is left behind: {:?}",
        recv_files(&members[lagging])
    );

    // And it keeps following by log.
    propose_retrying(&members[l].handle, b"after", Duration::from_secs(10)).await;
    let expected = members[l].sm.payloads();
    let followed = wait_for(Duration::from_secs(10), || {
        (members[lagging].sm.payloads() == expected).then_some(())
    })
    .await;
    assert!(followed.is_some());

    for m in &mut members {
        m.handle.shutdown().await;
        m.slot.clear();
        if let Some(s) = m.server.take() {
            s.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_its_removal_is_told_over_its_own_stream() {
    let ca = pki::generate_ca("test cluster CA").unwrap();
    let mut members = start_cluster(&ca, &["replica-1", "replica-2", "replica-3"], 10_000).await;
    let all = [0, 1, 2];
    let l = leader(&members, &all).await;
    propose_retrying(&members[l].handle, b"x", Duration::from_secs(10)).await;
    // The victim hears nothing from now on (its server is down), so it cannot apply
    // its own removal; its own sends still reach the others.
    let victim = (0..3).find(|i| *i != l).unwrap();
    members[victim].server.take().unwrap().stop().await;
    let victim_id = members[victim].id;
    members[l].handle.remove(victim_id).await.unwrap();
    assert!(members[victim].handle.status().voters.contains(&victim_id));
    let told = wait_for(Duration::from_secs(15), || {
        members[victim].handle.status().removed.then_some(())
    })
    .await;
    assert!(
        told.is_some(),
        "the removed member learns it from a member's answer: {:?}",
        members[victim].handle.status()
    );
    assert!(!members[l].handle.status().removed);
    for m in &mut members {
        m.handle.shutdown().await;
        m.slot.clear();
        if let Some(s) = m.server.take() {
            s.stop().await;
        }
    }
}
