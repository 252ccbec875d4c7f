//! etcd's v3 gRPC API served by the API router, called with tonic clients generated
//! from the same proto files (the real etcdctl is tested against replica processes in
//! `tests/etcdctl.rs`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Code;
use trireme_api::etcdpb::etcdserverpb as pb;
use trireme_api::etcdpb::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use trireme_api::etcdpb::mvccpb;

mod common;
use common::{fixture, Fixture};

/// Serves the gRPC routes on a loopback port; progress notifications every 200 ms.
async fn serve(f: &Fixture) -> (Channel, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = trireme_api::etcd_grpc_router(f.state.clone(), Duration::from_millis(200));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(trireme_api::serve(
        listener,
        None,
        router,
        trireme_api::ServeLimits::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    // Every call is bounded; streams are read through `within`.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    (channel, stop)
}

/// The next message of a response stream, within 10 s.
async fn within<T>(s: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a message within 10 s")
        .unwrap()
        .expect("the stream is open")
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn get(key: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

fn prefix(key: &str) -> pb::RangeRequest {
    let mut end = key.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    pb::RangeRequest {
        key: key.into(),
        range_end: end,
        ..Default::default()
    }
}

fn keys(r: &pb::RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_answers_like_etcd() {
    let f = fixture().await;
    let (ch, _stop) = serve(&f).await;
    let mut kv = KvClient::new(ch);

    let first = kv.put(put("/a/1", "x")).await.unwrap().into_inner();
    let h = first.header.unwrap();
    assert_eq!((h.cluster_id, h.member_id), (7, 1));
    kv.put(put("/a/2", "y")).await.unwrap();
    let mut again = put("/a/1", "z");
    again.prev_kv = true;
    let r = kv.put(again).await.unwrap().into_inner();
    assert_eq!(r.prev_kv.unwrap().value, b"x");

    let r = kv.range(get("/a/1")).await.unwrap().into_inner();
    let one = &r.kvs[0];
    assert_eq!((one.value.as_slice(), one.version), (&b"z"[..], 2));
    assert_eq!(one.create_revision, h.revision);
    let r = kv.range(prefix("/a/")).await.unwrap().into_inner();
    assert_eq!(
        (keys(&r), r.count, r.more),
        (vec!["/a/1".into(), "/a/2".into()], 2, false)
    );
    let mut req = prefix("/a/");
    req.limit = 1;
    req.sort_order = pb::range_request::SortOrder::Descend as i32;
    let r = kv.range(req).await.unwrap().into_inner();
    assert_eq!((keys(&r), r.more), (vec!["/a/2".to_string()], true));
    let mut req = prefix("/a/");
    req.count_only = true;
    let r = kv.range(req).await.unwrap().into_inner();
    assert_eq!((r.kvs.len(), r.count), (0, 2));
    // An old revision, then the same once compacted.
    let mut req = get("/a/1");
    req.revision = h.revision;
    let r = kv.range(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.kvs[0].value, b"x");

    // Txn: compare on the value, then the other branch.
    let cmp = |v: &str| pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Value as i32,
        key: "/a/1".into(),
        target_union: Some(pb::compare::TargetUnion::Value(v.into())),
        ..Default::default()
    };
    let op = |k: &str| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put(k, "t"))),
    };
    let txn = |v: &str| pb::TxnRequest {
        compare: vec![cmp(v)],
        success: vec![op("/t/yes")],
        failure: vec![
            op("/t/no"),
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(get("/a/1"))),
            },
        ],
    };
    let r = kv.txn(txn("z")).await.unwrap().into_inner();
    assert!(r.succeeded);
    assert_eq!(r.responses.len(), 1);
    let r = kv.txn(txn("nope")).await.unwrap().into_inner();
    assert!(!r.succeeded);
    match &r.responses[1].response {
        Some(pb::response_op::Response::ResponseRange(rr)) => assert_eq!(rr.kvs[0].value, b"z"),
        other => panic!("{other:?}"),
    }

    let mut del = prefix("/t/");
    del.limit = 0;
    let r = kv
        .delete_range(pb::DeleteRangeRequest {
            key: del.key,
            range_end: del.range_end,
            prev_kv: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.deleted, r.prev_kvs.len()), (2, 2));

    // Compaction, and etcd's errors with etcd's codes and messages.
    let now = r.header.unwrap().revision;
    kv.compact(pb::CompactionRequest {
        revision: now,
        physical: true,
    })
    .await
    .unwrap();
    let e = kv.range(req).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    assert_eq!(
        e.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let mut future = get("/a/1");
    future.revision = now + 100;
    let e = kv.range(future).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    assert!(e.message().contains("future revision"), "{}", e.message());
    let e = kv.put(put("", "v")).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "etcdserver: key is not provided")
    );
    let mut sorted = prefix("/a/");
    sorted.sort_target = 99;
    assert_eq!(
        kv.range(sorted).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let e = kv
        .compact(pb::CompactionRequest {
            revision: 0,
            physical: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

/// A client's half of one watch stream.
struct Stream {
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
}

impl Stream {
    async fn open(ch: Channel) -> Stream {
        let (requests, rx) = mpsc::channel(16);
        let out =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        let responses = WatchClient::new(ch).watch(out).await.unwrap().into_inner();
        Stream {
            requests,
            responses,
        }
    }

    async fn send(&self, r: pb::watch_request::RequestUnion) {
        self.requests
            .send(pb::WatchRequest {
                request_union: Some(r),
            })
            .await
            .unwrap();
    }

    async fn create(&self, c: pb::WatchCreateRequest) {
        self.send(pb::watch_request::RequestUnion::CreateRequest(c))
            .await;
    }

    async fn next(&mut self) -> pb::WatchResponse {
        within(&mut self.responses).await
    }

    async fn progress(&mut self) -> pb::WatchResponse {
        self.send(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        ))
        .await;
        self.next().await
    }
}

fn watch_prefix(key: &str) -> pb::WatchCreateRequest {
    let p = prefix(key);
    pb::WatchCreateRequest {
        key: p.key,
        range_end: p.range_end,
        ..Default::default()
    }
}

fn event_keys(r: &pb::WatchResponse) -> Vec<(i32, String)> {
    r.events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (e.r#type, String::from_utf8(kv.key.clone()).unwrap())
        })
        .collect()
}

const PUT: i32 = mvccpb::event::EventType::Put as i32;
const DELETE: i32 = mvccpb::event::EventType::Delete as i32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_watch_stream_carries_many_watches() {
    let f = fixture().await;
    let (ch, _stop) = serve(&f).await;
    let mut kv = KvClient::new(ch.clone());
    let before = kv
        .put(put("/w/old", "0"))
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;

    let mut s = Stream::open(ch.clone()).await;
    // Ids from 0 as etcd numbers them; the second replays history from `before`.
    s.create(watch_prefix("/w/")).await;
    let created = s.next().await;
    assert!(created.created && !created.canceled);
    assert_eq!(created.watch_id, 0);
    let mut from_before = watch_prefix("/w/");
    from_before.start_revision = before;
    from_before.prev_kv = true;
    s.create(from_before).await;
    let r = s.next().await;
    assert_eq!((r.watch_id, r.created), (1, true));
    let r = s.next().await;
    assert_eq!(r.watch_id, 1);
    assert_eq!(event_keys(&r), vec![(PUT, "/w/old".into())]);
    // A client-chosen id, with deletes filtered out; then the same id again.
    let mut no_delete = watch_prefix("/w/");
    no_delete.watch_id = 7;
    no_delete.filters = vec![pb::watch_create_request::FilterType::Nodelete as i32];
    s.create(no_delete.clone()).await;
    assert_eq!(s.next().await.watch_id, 7);
    s.create(no_delete).await;
    let dup = s.next().await;
    assert!(dup.created && dup.canceled && dup.watch_id == 7);
    assert!(
        dup.cancel_reason.contains("duplicate"),
        "{}",
        dup.cancel_reason
    );

    kv.put(put("/w/old", "1")).await.unwrap();
    kv.delete_range(pb::DeleteRangeRequest {
        key: "/w/old".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // Every watch gets the put, then the delete unless it filters deletes out.
    let mut seen: std::collections::BTreeMap<i64, Vec<(i32, String)>> = Default::default();
    while seen.values().map(Vec::len).sum::<usize>() < 5 {
        let r = s.next().await;
        seen.entry(r.watch_id).or_default().extend(event_keys(&r));
        if r.watch_id == 1 {
            let put_event = r.events.iter().find(|e| e.r#type == PUT);
            if let Some(e) = put_event {
                assert_eq!(e.prev_kv.as_ref().unwrap().value, b"0", "prev_kv asked");
            }
        }
    }
    let both = vec![(PUT, "/w/old".to_string()), (DELETE, "/w/old".to_string())];
    assert_eq!(seen[&0], both);
    assert_eq!(seen[&1], both);
    assert_eq!(seen[&7], vec![(PUT, "/w/old".to_string())]);

    // Cancel one; progress for the stream (id -1) covers what was delivered.
    s.send(pb::watch_request::RequestUnion::CancelRequest(
        pb::WatchCancelRequest { watch_id: 0 },
    ))
    .await;
    let r = s.next().await;
    assert!(r.canceled && r.watch_id == 0);
    let now = kv.put(put("/w/new", "2")).await.unwrap().into_inner();
    let now = now.header.unwrap().revision;
    let mut got = Vec::new();
    while got.len() < 2 {
        let r = s.next().await;
        assert_ne!(r.watch_id, 0, "a canceled watch sends nothing");
        got.push(r.watch_id);
    }
    got.sort_unstable();
    assert_eq!(got, vec![1, 7]);
    // A watch counts an event as delivered once its task asks for more, just after
    // queuing it: the answer reaches `now` within a bounded wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let p = s.progress().await;
        assert_eq!(p.watch_id, -1);
        assert!(p.events.is_empty());
        let revision = p.header.unwrap().revision;
        assert!(
            revision <= now,
            "progress {revision} past the store's {now}"
        );
        if revision == now {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "progress stuck at {revision}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_never_runs_ahead_of_the_events_sent() {
    let f = fixture().await;
    let (ch, _stop) = serve(&f).await;
    let mut kv = KvClient::new(ch.clone());
    let mut revs = Vec::new();
    for i in 0..200 {
        let r = kv.put(put(&format!("/p/{}", i % 7), "v")).await.unwrap();
        revs.push(r.into_inner().header.unwrap().revision);
    }
    let last = *revs.last().unwrap();

    // A watch replaying history from revision 1, asked for progress at once: every
    // event at or below a progress answer's revision has come before it.
    let mut s = Stream::open(ch.clone()).await;
    let mut from_start = watch_prefix("/p/");
    from_start.start_revision = 1;
    s.create(from_start).await;
    assert!(s.next().await.created);
    s.send(pb::watch_request::RequestUnion::ProgressRequest(
        pb::WatchProgressRequest {},
    ))
    .await;
    let mut seen = Vec::new();
    let mut progress_seen = None;
    while seen.len() < revs.len() || progress_seen.is_none() {
        let r = s.next().await;
        if r.watch_id == -1 {
            let at = r.header.unwrap().revision;
            assert!(
                revs.iter().filter(|v| **v <= at).all(|v| seen.contains(v)),
                "progress {at} before every event up to it"
            );
            progress_seen = Some(at);
        } else {
            seen.extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
        }
    }
    assert_eq!(seen, revs);

    // A watch of a range nobody writes follows the store's revision.
    let mut quiet = Stream::open(ch.clone()).await;
    quiet.create(watch_prefix("/nobody/")).await;
    assert!(quiet.next().await.created);
    let future = {
        let mut w = watch_prefix("/nobody/");
        w.start_revision = last + 1000;
        w
    };
    quiet.create(future.clone()).await;
    assert!(quiet.next().await.created);
    let at = quiet.progress().await.header.unwrap().revision;
    assert!(at <= last, "a start in the future claims {at} > {last}");
    // Alone on its stream, too (the minimum over watches hides nothing there).
    let mut alone = Stream::open(ch.clone()).await;
    alone.create(future).await;
    assert!(alone.next().await.created);
    for _ in 0..5 {
        let at = alone.progress().await.header.unwrap().revision;
        assert!(at <= last + 1, "a start in the future claims {at}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moved = kv.put(put("/p/x", "v")).await.unwrap().into_inner();
    let moved = moved.header.unwrap().revision;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let at = quiet.progress().await.header.unwrap().revision;
        assert!(at <= moved);
        if at == moved {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "progress stuck at {at}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_end_with_compaction_and_report_progress() {
    let f = fixture().await;
    let (ch, _stop) = serve(&f).await;
    let mut kv = KvClient::new(ch.clone());
    let first = kv.put(put("/c/a", "1")).await.unwrap().into_inner();
    let first = first.header.unwrap().revision;
    let last = kv.put(put("/c/a", "2")).await.unwrap().into_inner();
    let last = last.header.unwrap().revision;
    kv.compact(pb::CompactionRequest {
        revision: last,
        physical: false,
    })
    .await
    .unwrap();

    let mut s = Stream::open(ch).await;
    let mut old = watch_prefix("/c/");
    old.start_revision = first;
    s.create(old).await;
    assert!(s.next().await.created);
    let r = s.next().await;
    assert!(r.canceled, "{r:?}");
    assert_eq!(r.compact_revision, last);
    assert!(r.cancel_reason.contains("compacted"));

    // A watch with progress notifications hears from the server while idle.
    let mut quiet = watch_prefix("/quiet/");
    quiet.progress_notify = true;
    s.create(quiet).await;
    let created = s.next().await;
    assert!(created.created);
    let p = s.next().await;
    assert!(p.events.is_empty() && !p.canceled && !p.created);
    assert_eq!(p.watch_id, created.watch_id);
    assert_eq!(p.header.unwrap().revision, last);

    // Bad requests are refused on the stream, which stays open.
    let mut negative = watch_prefix("/c/");
    negative.start_revision = -1;
    s.create(negative).await;
    let r = s.next().await;
    assert!(r.created && r.canceled, "{r:?}");
    s.create(pb::WatchCreateRequest::default()).await;
    let r = s.next().await;
    assert_eq!(r.cancel_reason, "etcdserver: key is not provided");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_live_by_keep_alives_and_take_their_keys() {
    let f = fixture().await;
    let (ch, _stop) = serve(&f).await;
    let mut kv = KvClient::new(ch.clone());
    let mut leases = LeaseClient::new(ch);

    let g = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(g.id > 0 && g.ttl == 30);
    let mut with_lease = put("/l/k", "v");
    with_lease.lease = g.id;
    kv.put(with_lease).await.unwrap();
    let ttl = leases
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: g.id,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ttl.granted_ttl, ttl.keys), (30, vec![b"/l/k".to_vec()]));
    assert!(ttl.ttl > 0 && ttl.ttl <= 30);
    let list = leases
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list.leases.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![g.id]
    );

    // Keep-alives on one stream: the lease, then (once revoked) TTL 0 as etcd says.
    let (tx, rx) = mpsc::channel(4);
    let out =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut answers = leases.lease_keep_alive(out).await.unwrap().into_inner();
    tx.send(pb::LeaseKeepAliveRequest { id: g.id })
        .await
        .unwrap();
    let a = within(&mut answers).await;
    assert_eq!((a.id, a.ttl), (g.id, 30));
    leases
        .lease_revoke(pb::LeaseRevokeRequest { id: g.id })
        .await
        .unwrap();
    tx.send(pb::LeaseKeepAliveRequest { id: g.id })
        .await
        .unwrap();
    let a = within(&mut answers).await;
    assert_eq!((a.id, a.ttl), (g.id, 0));
    assert!(kv
        .range(get("/l/k"))
        .await
        .unwrap()
        .into_inner()
        .kvs
        .is_empty());
    let ttl = leases
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: g.id,
            keys: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ttl.ttl, -1);
    let e = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 0, id: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // etcd's maximum; a larger TTL once overflowed the lessor's deadline on every replica.
    let e = leases
        .lease_grant(pb::LeaseGrantRequest {
            ttl: i64::MAX,
            id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::OutOfRange, "etcdserver: too large lease TTL")
    );
    let longest = leases
        .lease_grant(pb::LeaseGrantRequest {
            ttl: trireme_mvcc::MAX_LEASE_TTL,
            id: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(longest.ttl, trireme_mvcc::MAX_LEASE_TTL);
    let mut dangling = put("/l/x", "v");
    dangling.lease = g.id;
    let e = kv.put(dangling).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_maintenance() {
    let f = fixture().await;
    let (ch, _stop) = serve(&f).await;
    let mut cluster = ClusterClient::new(ch.clone());
    let mut m = MaintenanceClient::new(ch);

    let list = cluster
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1]
    );
    let e = cluster
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec!["https://127.0.0.1:7009".into()],
            is_learner: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("name"), "{}", e.message());
    let e = cluster
        .member_remove(pb::MemberRemoveRequest { id: 99 })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "etcdserver: member not found")
    );

    let st = m.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.leader, st.is_learner), (1, false));
    assert!(st.raft_applied_index > 0 && st.db_size > 0);
    let h1 = m
        .hash_kv(pb::HashKvRequest { revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let h2 = m
        .hash_kv(pb::HashKvRequest { revision: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h1.hash, h2.hash);
    let alarms = m
        .alarm(pb::AlarmRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(alarms.alarms.is_empty());
    let e = m.defragment(pb::DefragmentRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().starts_with("trireme: "), "{}", e.message());
    // Leadership to itself is done at once; to a stranger refused (the transfer
    // between replicas is in tests/etcdctl.rs).
    m.move_leader(pb::MoveLeaderRequest { target_id: 1 })
        .await
        .unwrap();
    let e = m
        .move_leader(pb::MoveLeaderRequest { target_id: 99 })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: bad leader transferee"
        )
    );
}
