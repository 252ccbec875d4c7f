//! In-process clusters of real nodes (real log files, real fsyncs) on the in-memory
//! network, with a state machine that records the entries it applies.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod support;

use std::time::Duration;

use support::{config, promote_when_ready, start_node, start_node_with_sm, Cluster};
use trireme_raft::memory::MemoryNetwork;
use trireme_raft::testing::{propose_retrying, wait_for, BackgroundSyncMode, RecordingSm};
use trireme_raft::{Bootstrap, ProposeError, ReadError, Role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_and_apply_the_same_entries_in_order() {
    let c = Cluster::start(3, 10_000);
    c.leader(&[1, 2, 3]).await;
    for i in 0..30u64 {
        let via = i % 3 + 1;
        propose_retrying(
            &c.node(via).handle,
            format!("w{i}").as_bytes(),
            Duration::from_secs(10),
        )
        .await;
    }
    // A retry after an uncertain outcome (a leader change on a loaded machine) may
    // apply a payload twice; every payload is there and every node has the same log.
    let converged = wait_for(Duration::from_secs(10), || {
        let logs: Vec<_> = (1..=3).map(|id| c.node(id).sm.payloads()).collect();
        (logs[0].len() >= 30 && logs.iter().all(|l| *l == logs[0])).then(|| logs[0].clone())
    })
    .await
    .expect("every node applies the same entries in the same order");
    for i in 0..30u64 {
        assert!(
            converged.contains(&format!("w{i}").into_bytes()),
            "w{i} applied"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leaders_proposals_fail_and_the_majority_goes_on() {
    let c = Cluster::start(3, 10_000);
    let old = c.leader(&[1, 2, 3]).await;
    propose_retrying(&c.node(old).handle, b"before", Duration::from_secs(10)).await;
    c.net.isolate(old);
    // The old leader cannot commit: its proposal must fail, never succeed.
    let stranded = c.node(old).handle.propose(b"stranded".to_vec()).await;
    assert!(
        matches!(
            stranded,
            Err(ProposeError::Uncertain(_)) | Err(ProposeError::Dropped)
        ),
        "{stranded:?}"
    );
    let rest: Vec<u64> = (1..=3).filter(|i| *i != old).collect();
    let new = c.leader(&rest).await;
    assert_ne!(new, old);
    propose_retrying(&c.node(new).handle, b"after", Duration::from_secs(10)).await;
    c.net.heal();
    let expected = c.node(new).sm.payloads();
    let converged = wait_for(Duration::from_secs(10), || {
        (c.node(old).sm.payloads() == expected).then_some(())
    })
    .await;
    assert!(converged.is_some(), "old leader converges after healing");
    assert!(!expected.contains(&b"stranded".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_read_linearizably() {
    let c = Cluster::start(3, 10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    assert!(c.node(follower).handle.read_index().await.is_ok());
    c.net.isolate(follower);
    let r = c.node(follower).handle.read_index().await;
    assert!(
        matches!(
            r,
            Err(ReadError::Timeout | ReadError::NoLeader | ReadError::LeadershipChanged)
        ),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_by_snapshot_after_compaction() {
    let c = Cluster::start(3, 20);
    let leader = c.leader(&[1, 2, 3]).await;
    let lagging = (1..=3).find(|i| *i != leader).unwrap();
    c.net.isolate(lagging);
    let rest: Vec<u64> = (1..=3).filter(|i| *i != lagging).collect();
    let leader = c.leader(&rest).await;
    for i in 0..100u64 {
        propose_retrying(
            &c.node(leader).handle,
            format!("w{i}").as_bytes(),
            Duration::from_secs(10),
        )
        .await;
    }
    let first = c.node(leader).handle.status().first_index;
    assert!(
        first > 50,
        "the leader compacted its log (first index {first})"
    );
    c.net.heal();
    let expected = c.node(leader).sm.payloads();
    let caught_up = wait_for(Duration::from_secs(15), || {
        (c.node(lagging).sm.payloads() == expected).then_some(())
    })
    .await;
    assert!(caught_up.is_some(), "lagging node installs the snapshot");
    // And keeps following by log afterwards.
    propose_retrying(
        &c.node(leader).handle,
        b"after-snapshot",
        Duration::from_secs(10),
    )
    .await;
    let expected = c.node(leader).sm.payloads();
    let followed = wait_for(Duration::from_secs(10), || {
        (c.node(lagging).sm.payloads() == expected).then_some(())
    })
    .await;
    assert!(followed.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_add_learner_promote_and_remove() {
    let mut c = Cluster::start(3, 10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    propose_retrying(
        &c.node(leader).handle,
        b"before-join",
        Duration::from_secs(10),
    )
    .await;
    c.nodes
        .push(Some(start_node(&c.net, 4, Bootstrap::Join, 10_000)));
    let cs = c.node(leader).handle.add_learner(4).await.unwrap();
    assert!(cs.learners.contains(&4));
    let expected = c.node(leader).sm.payloads();
    let joined = wait_for(Duration::from_secs(10), || {
        (c.node(4).sm.payloads() == expected).then_some(())
    })
    .await;
    assert!(
        joined.is_some(),
        "the learner catches up (snapshot, then log)"
    );
    let cs = promote_when_ready(&c.node(leader).handle, 4).await;
    assert!(cs.voters.contains(&4));
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let cs = c.node(leader).handle.remove(victim).await.unwrap();
    assert!(!cs.voters.contains(&victim));
    propose_retrying(
        &c.node(leader).handle,
        b"after-remove",
        Duration::from_secs(10),
    )
    .await;
    let voters = c.node(4).handle.status().voters;
    let expected_voters: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|i| *i != victim).collect();
    let seen = wait_for(Duration::from_secs(10), || {
        (c.node(4).handle.status().voters == expected_voters).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "node 4 sees the new voter set (had {voters:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_can_be_transferred() {
    let c = Cluster::start(3, 10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    propose_retrying(&c.node(leader).handle, b"x", Duration::from_secs(10)).await;
    let target = (1..=3).find(|i| *i != leader).unwrap();
    // The target must have the leader's log for the transfer to go through.
    wait_for(Duration::from_secs(10), || {
        (c.node(target).sm.payloads().len() == 1).then_some(())
    })
    .await;
    c.node(leader).handle.transfer_leader(target);
    let moved = wait_for(Duration::from_secs(10), || {
        (c.node(target).handle.status().role == Role::Leader).then_some(())
    })
    .await;
    assert!(moved.is_some(), "leadership moves to {target}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_reported_by_the_transport_stops_the_node() {
    let net = MemoryNetwork::new();
    let n = start_node(&net, 1, Bootstrap::Initial(vec![1]), 10_000);
    propose_retrying(&n.handle, b"before", Duration::from_secs(10)).await;
    n.handle
        .mailbox()
        .fatal("fsync of a received snapshot failed".into());
    let stopped = wait_for(Duration::from_secs(10), || {
        let s = n.handle.status();
        (s.stopped && s.failed.as_deref() == Some("fsync of a received snapshot failed"))
            .then_some(())
    })
    .await;
    assert!(
        stopped.is_some(),
        "the node stops on a fail-stop error: {:?}",
        n.handle.status()
    );
    assert_eq!(
        n.handle.propose(b"after".to_vec()).await,
        Err(ProposeError::Stopped)
    );
    // The Raft thread ends (its status sender goes) without running the state
    // machine's destructor, which could write to the failed disk again.
    let mut status = n.handle.subscribe();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while status.changed().await.is_ok() {}
    })
    .await;
    assert!(ended.is_ok(), "the Raft thread ends");
    assert_eq!(
        n.sm.clones_alive(),
        2,
        "the node's state machine was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joint_membership_change_enters_and_leaves_joint_consensus() {
    let mut c = Cluster::start(3, 10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    c.nodes
        .push(Some(start_node(&c.net, 4, Bootstrap::Join, 10_000)));
    c.node(leader).handle.add_learner(4).await.unwrap();
    propose_retrying(&c.node(leader).handle, b"x", Duration::from_secs(10)).await;
    let expected = c.node(leader).sm.payloads();
    wait_for(Duration::from_secs(10), || {
        (c.node(4).sm.payloads() == expected).then_some(())
    })
    .await;
    // Promote 4 and remove a follower in one change: two voter changes need joint consensus.
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let mut changed = None;
    for _ in 0..200 {
        let r = c
            .node(leader)
            .handle
            .change_membership(vec![
                (trireme_raft::eraftpb::ConfChangeType::AddNode, 4),
                (trireme_raft::eraftpb::ConfChangeType::RemoveNode, victim),
            ])
            .await;
        match r {
            // The leader may not have heard the learner's last acknowledgement yet.
            Err(ProposeError::LearnerNotReady) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            r => {
                changed = Some(r.unwrap());
                break;
            }
        }
    }
    let cs = changed.expect("the learner gets in sync");
    assert!(
        !cs.voters_outgoing.is_empty(),
        "the change went through a joint configuration: {cs:?}"
    );
    let mut want: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|i| *i != victim).collect();
    want.sort_unstable();
    let left = wait_for(Duration::from_secs(10), || {
        let s = c.node(leader).handle.status();
        (s.voters == want && s.voters_outgoing.is_empty()).then_some(())
    })
    .await;
    assert!(
        left.is_some(),
        "the joint configuration is left: {:?}",
        c.node(leader).handle.status()
    );
    propose_retrying(
        &c.node(leader).handle,
        b"after-joint",
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_compacted_after_a_background_sync_and_its_failure_stops_the_node() {
    let net = MemoryNetwork::new();
    let start = |id, mode| {
        let dir = tempfile::tempdir().unwrap();
        let c = config(id, dir.path(), Bootstrap::Initial(vec![id]), 20);
        start_node_with_sm(&net, c, dir, RecordingSm::with_background_sync(mode))
    };
    let ok = start(1, BackgroundSyncMode::Succeed);
    for i in 0..60u64 {
        propose_retrying(
            &ok.handle,
            format!("w{i}").as_bytes(),
            Duration::from_secs(10),
        )
        .await;
    }
    let compacted = wait_for(Duration::from_secs(10), || {
        (ok.handle.status().first_index > 20).then_some(())
    })
    .await;
    assert!(compacted.is_some(), "{:?}", ok.handle.status());
    assert!(ok.sm.background_syncs() >= 1);
    assert!(ok.sm.payloads().len() == 60);

    let failing = start(2, BackgroundSyncMode::Fail);
    propose_retrying(&failing.handle, b"first", Duration::from_secs(10)).await;
    let first = failing.handle.status().first_index;
    for i in 0..30u64 {
        if failing
            .handle
            .propose(format!("w{i}").into_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let stopped = wait_for(Duration::from_secs(10), || {
        let s = failing.handle.status();
        (s.stopped
            && s.failed
                .as_deref()
                .is_some_and(|f| f.contains("injected sync failure")))
        .then_some(())
    })
    .await;
    assert!(stopped.is_some(), "{:?}", failing.handle.status());
    assert_eq!(
        failing.handle.status().first_index,
        first,
        "nothing was compacted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_learn_of_a_commit_without_a_later_write_or_heartbeat() {
    // Heartbeats 30 s apart: within the test, followers hear of a commit only from
    // the leader's commit notices (an idle leader sends no append otherwise).
    let c = Cluster::start_with(3, 10_000, |n| {
        n.heartbeat_ticks = 3_000;
        n.election_ticks = 6_000;
        n.request_timeout = Duration::from_secs(20);
    });
    c.node(1).handle.campaign();
    let leader = c.leader(&[1, 2, 3]).await;
    let followers: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let applied_everywhere = |payload: &'static [u8]| {
        let c = &c;
        async move {
            wait_for(Duration::from_secs(10), || {
                (1..=3)
                    .all(|id| c.node(id).sm.payloads().iter().any(|p| p == payload))
                    .then_some(())
            })
            .await
        }
    };

    c.node(leader)
        .handle
        .propose(b"one".to_vec())
        .await
        .unwrap();
    assert!(
        applied_everywhere(b"one").await.is_some(),
        "both followers apply a write made on the leader"
    );
    // A write forwarded by a follower: its answer waits for the follower's own apply.
    c.node(followers[0])
        .handle
        .propose(b"two".to_vec())
        .await
        .unwrap();
    assert!(
        applied_everywhere(b"two").await.is_some(),
        "every node applies a write forwarded by a follower"
    );
}
