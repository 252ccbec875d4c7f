//! Membership changes as an operator makes them: refusals with a reason (one change
//! at a time, no promotion of a lagging learner) on the leader and through a
//! follower, and a removed node learning that it was removed, even when it missed
//! the change.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{promote_when_ready, start_node, Cluster};
use trireme_raft::eraftpb::ConfChangeType;
use trireme_raft::memory::MemoryNetwork;
use trireme_raft::testing::{propose_retrying, wait_for};
use trireme_raft::{Bootstrap, NodeHandle, ProposeError, ReadError, Role, UncertainReason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoting_a_learner_that_is_not_in_sync_is_refused_on_the_leader_and_through_a_follower() {
    let mut c = Cluster::start(3, 10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    propose_retrying(&c.node(leader).handle, b"x", Duration::from_secs(10)).await;
    // Node 4 is added but not started: it never catches up.
    c.node(leader).handle.add_learner(4).await.unwrap();
    assert_eq!(
        c.node(leader).handle.promote(4).await,
        Err(ProposeError::LearnerNotReady)
    );
    assert_eq!(
        c.node(follower).handle.promote(4).await,
        Err(ProposeError::LearnerNotReady),
        "the follower gets the leader's reason, not a timeout"
    );
    c.nodes
        .push(Some(start_node(&c.net, 4, Bootstrap::Join, 10_000)));
    let expected = c.node(leader).sm.payloads();
    let caught_up = wait_for(Duration::from_secs(10), || {
        (c.node(4).sm.payloads() == expected).then_some(())
    })
    .await;
    assert!(caught_up.is_some(), "the learner catches up");
    let cs = promote_when_ready(&c.node(follower).handle, 4).await;
    assert!(cs.voters.contains(&4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_change_while_one_is_pending_is_refused_as_pending() {
    // Slow links (and an election timeout long enough to ride them out) keep the
    // first change uncommitted for a while.
    let c = Cluster::start_with(3, 10_000, |n| {
        n.election_ticks = 300;
        n.request_timeout = Duration::from_secs(20);
    });
    let leader = c.leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    c.net.set_delay(Some(Duration::from_millis(400)));
    let before = c.node(leader).handle.status().last_index;
    let first = tokio::spawn({
        let h = std::sync::Arc::clone(&c.node(leader).handle);
        async move { h.add_learner(7).await }
    });
    let appended = wait_for(Duration::from_secs(10), || {
        (c.node(leader).handle.status().last_index > before).then_some(())
    })
    .await;
    assert!(appended.is_some(), "the first change is appended");
    assert_eq!(
        c.node(leader).handle.add_learner(8).await,
        Err(ProposeError::ConfChangePending)
    );
    assert_eq!(
        c.node(follower).handle.add_learner(9).await,
        Err(ProposeError::ConfChangePending),
        "a change forwarded by a follower is refused with the reason too"
    );
    assert!(ProposeError::ConfChangePending.is_retryable());
    let cs = first.await.unwrap().unwrap();
    assert!(cs.learners.contains(&7));
    assert!(!cs.learners.contains(&8) && !cs.learners.contains(&9));
    c.net.set_delay(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_that_applies_its_removal_knows_it_was_removed() {
    let c = Cluster::start(3, 10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let other = (1..=3).find(|i| *i != leader && *i != victim).unwrap();
    propose_retrying(&c.node(leader).handle, b"x", Duration::from_secs(10)).await;
    assert!(!c.node(victim).handle.status().removed);
    c.node(leader).handle.remove(victim).await.unwrap();
    let removed = wait_for(Duration::from_secs(10), || {
        c.node(victim).handle.status().removed.then_some(())
    })
    .await;
    assert!(removed.is_some(), "{:?}", c.node(victim).handle.status());
    refuses_as_removed(&c.node(victim).handle, leader).await;
    assert!(!c.node(leader).handle.status().removed);
    assert!(!c.node(other).handle.status().removed);
    propose_retrying(&c.node(leader).handle, b"after", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_that_missed_its_removal_is_told_by_a_member() {
    let c = Cluster::start(3, 10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    propose_retrying(&c.node(leader).handle, b"x", Duration::from_secs(10)).await;
    // The victim is cut off while it is removed: it never sees the change.
    c.net.isolate(victim);
    c.node(leader).handle.remove(victim).await.unwrap();
    propose_retrying(&c.node(leader).handle, b"after", Duration::from_secs(10)).await;
    assert!(!c.node(victim).handle.status().removed);
    assert!(c.node(victim).handle.status().voters.contains(&victim));
    c.net.heal();
    let told = wait_for(Duration::from_secs(10), || {
        c.node(victim).handle.status().removed.then_some(())
    })
    .await;
    assert!(told.is_some(), "{:?}", c.node(victim).handle.status());
    // Its old configuration still lists it: it learned from the others.
    assert!(c.node(victim).handle.status().voters.contains(&victim));
    refuses_as_removed(&c.node(victim).handle, leader).await;
}

/// A node that knows it was removed answers at once, with that reason, instead of
/// letting requests wait for a leader that ignores it.
async fn refuses_as_removed(h: &NodeHandle<u64>, member: u64) {
    assert_eq!(
        h.propose(b"late".to_vec()).await,
        Err(ProposeError::Removed)
    );
    assert_eq!(h.read_index().await, Err(ReadError::Removed));
    assert_eq!(h.remove(member).await, Err(ProposeError::Removed));
    assert!(!ProposeError::Removed.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_asked_to_remove_itself_hands_leadership_over_first() {
    let c = Cluster::start(3, 10_000);
    let leader = c.leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    propose_retrying(&c.node(leader).handle, b"x", Duration::from_secs(10)).await;
    // raft-rs cannot run a leader that applied its own removal (it panics on its
    // missing progress): the leader refuses, and moves leadership.
    assert_eq!(
        c.node(leader).handle.remove(leader).await,
        Err(ProposeError::Dropped)
    );
    let rest: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let new_leader = c.leader(&rest).await;
    assert_ne!(new_leader, leader);
    // The change, retried (here through a follower), goes to the new leader.
    let mut removed = None;
    for _ in 0..100 {
        match c.node(follower).handle.remove(leader).await {
            Ok(cs) => {
                removed = Some(cs);
                break;
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("remove the old leader: {e}"),
        }
    }
    assert!(!removed.expect("removed").voters.contains(&leader));
    let told = wait_for(Duration::from_secs(10), || {
        c.node(leader).handle.status().removed.then_some(())
    })
    .await;
    assert!(told.is_some(), "{:?}", c.node(leader).handle.status());
    assert!(!c.node(leader).handle.status().stopped, "no panic, no stop");
    propose_retrying(&c.node(rest[0]).handle, b"after", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_would_leave_fewer_voters_up_than_a_quorum_is_refused() {
    // Three voters, one of which (3) never runs: the leader has never heard from it.
    let net = MemoryNetwork::new();
    let nodes = [1, 2].map(|id| start_node(&net, id, Bootstrap::Initial(vec![1, 2, 3]), 10_000));
    let leader = wait_for(Duration::from_secs(10), || {
        nodes
            .iter()
            .find(|n| n.handle.status().role == Role::Leader)
            .map(|n| n.handle.id())
    })
    .await
    .expect("a leader is elected");
    let (l, f) = if leader == 1 {
        (&nodes[0], &nodes[1])
    } else {
        (&nodes[1], &nodes[0])
    };
    propose_retrying(&l.handle, b"x", Duration::from_secs(10)).await;
    // Removing the other running voter leaves {leader, 3}: one of two up.
    assert_eq!(
        l.handle.remove(f.handle.id()).await,
        Err(ProposeError::NotEnoughActive)
    );
    assert_eq!(
        f.handle.remove(f.handle.id()).await,
        Err(ProposeError::NotEnoughActive),
        "a change forwarded by a follower gets the leader's reason"
    );
    // Adding a voter that is not running makes {1, 2, 3, 4} with two up.
    assert_eq!(
        l.handle
            .change_membership(vec![(ConfChangeType::AddNode, 4)])
            .await,
        Err(ProposeError::NotEnoughActive)
    );
    assert!(ProposeError::NotEnoughActive.is_retryable());
    // Removing the voter that is down keeps both running ones: accepted.
    let cs = l.handle.remove(3).await.unwrap();
    assert_eq!(cs.voters.len(), 2);
    propose_retrying(&l.handle, b"after", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_voter_may_add_a_second_voter_before_it_runs() {
    let net = MemoryNetwork::new();
    let first = start_node(&net, 1, Bootstrap::Initial(vec![1]), 10_000);
    propose_retrying(&first.handle, b"x", Duration::from_secs(10)).await;
    // The new voter cannot be up before it is added; there was no other voter to lose.
    let cs = first
        .handle
        .change_membership(vec![(ConfChangeType::AddNode, 2)])
        .await
        .unwrap();
    assert_eq!(cs.voters.len(), 2);
    let second = start_node(&net, 2, Bootstrap::Join, 10_000);
    propose_retrying(&first.handle, b"with two", Duration::from_secs(10)).await;
    let caught_up = wait_for(Duration::from_secs(10), || {
        (second.sm.payloads() == first.sm.payloads()).then_some(())
    })
    .await;
    assert!(caught_up.is_some(), "the second voter catches up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_pending_on_a_node_when_it_learns_of_its_removal_fail_as_uncertain() {
    // A long election timeout: the cut-off node keeps believing in its leader.
    let c = Cluster::start_with(3, 10_000, |n| {
        n.election_ticks = 300;
        n.request_timeout = Duration::from_secs(20);
    });
    let leader = c.leader(&[1, 2, 3]).await;
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    propose_retrying(&c.node(leader).handle, b"x", Duration::from_secs(10)).await;
    c.net.isolate(victim);
    c.node(leader).handle.remove(victim).await.unwrap();
    // Forwarded into the cut (lost), or refused by the leader if the cut heals first:
    // either way it is pending when the victim learns that it was removed.
    let victim_handle = &c.node(victim).handle;
    let mut pending = Box::pin(victim_handle.propose(b"lost".to_vec()));
    // One poll hands the proposal to the node (a zero timeout polls it once).
    assert!(tokio::time::timeout(Duration::ZERO, &mut pending)
        .await
        .is_err());
    c.net.heal();
    // The next one reaches the leader, which answers that the victim is no member (or
    // the victim knows already and refuses it).
    let late = victim_handle.propose(b"late".to_vec()).await;
    assert!(
        matches!(
            late,
            Err(ProposeError::Removed | ProposeError::Uncertain(UncertainReason::Removed))
        ),
        "{late:?}"
    );
    assert_eq!(
        pending.await,
        Err(ProposeError::Uncertain(UncertainReason::Removed)),
        "the pending one fails as soon as the victim knows, not at its deadline"
    );
    let published = wait_for(Duration::from_secs(10), || {
        c.node(victim).handle.status().removed.then_some(())
    })
    .await;
    assert!(published.is_some());
}
