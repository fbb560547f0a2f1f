//! Consumer groups over raw gRPC against a real broker: membership and rebalances, session
//! expiry, generation fencing, committed offsets across restarts, bad input, and the
//! `sluiceway group list|describe` command line.
//!
//! Session timeouts are 1 s so expiry is quick; every wait is for an event (a heartbeat answer,
//! a join answer, a described state), bounded by a generous deadline, never a fixed sleep.

use std::collections::BTreeSet;
use std::time::Duration;

use sluiceway_core::ErrorCode;
use sluiceway_proto::v1;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::support::*;

type GroupClient = v1::group_client::GroupClient<Channel>;

const SESSION_MS: u32 = 1_000;
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);
/// Upper bound for any awaited event; never expected to be reached.
const PATIENCE: Duration = Duration::from_secs(30);

fn join_request(group: &str, member_id: &str, topics: &[&str]) -> v1::JoinGroupRequest {
    v1::JoinGroupRequest {
        group_id: group.into(),
        member_id: member_id.into(),
        client_id: "test".into(),
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: 0,
        assignor: "range".into(),
    }
}

async fn join(g: &mut GroupClient, req: v1::JoinGroupRequest) -> v1::JoinGroupResponse {
    g.join_group(req).await.expect("join").into_inner()
}

async fn heartbeat(g: &mut GroupClient, group: &str, member: &str, generation: i32) -> ErrorCode {
    match g
        .heartbeat(v1::HeartbeatRequest {
            group_id: group.into(),
            member_id: member.into(),
            generation,
        })
        .await
    {
        Ok(_) => ErrorCode::None,
        Err(s) => status_code(&s),
    }
}

fn partitions(assignment: &[v1::TopicPartitions]) -> Vec<(String, u32)> {
    assignment
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
        .collect()
}

/// What a background member last got from a join: (member id, generation, partitions).
type Joined = Option<(String, i32, Vec<(String, u32)>)>;

/// A member that joins, heartbeats every 100 ms and rejoins whenever told to, publishing each
/// join's answer. Aborting its task makes it stop heartbeating without leaving (a crash).
fn spawn_member(
    addr: String,
    group: &'static str,
    topics: &'static [&'static str],
) -> (tokio::task::JoinHandle<()>, watch::Receiver<Joined>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut g = crate::support::Client::connect(&addr).await.unwrap().group;
        let mut id = String::new();
        loop {
            let r = join(&mut g, join_request(group, &id, topics)).await;
            id = r.member_id.clone();
            let generation = r.generation;
            tx.send_replace(Some((id.clone(), generation, partitions(&r.assignment))));
            loop {
                // The member's heartbeat cadence (the scenario), not a synchronisation.
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                match heartbeat(&mut g, group, &id, generation).await {
                    ErrorCode::None => {}
                    ErrorCode::RebalanceInProgress => break,
                    ErrorCode::UnknownMemberId => {
                        id.clear();
                        break;
                    }
                    other => panic!("heartbeat: {other}"),
                }
            }
        }
    });
    (task, rx)
}

async fn describe(c: &mut crate::support::Client, group: &str) -> v1::DescribeGroupResponse {
    c.group
        .describe_group(v1::DescribeGroupRequest {
            group_id: group.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the group is stable with `n` members that all hold the current generation's
/// answer, and returns their partitions.
async fn wait_stable(
    c: &mut crate::support::Client,
    group: &str,
    members: &[&watch::Receiver<Joined>],
) -> (i32, Vec<Vec<(String, u32)>>) {
    wait_reporting("the group settles", PATIENCE, async || {
        let d = describe(c, group).await;
        let answers: Vec<Joined> = members.iter().map(|m| m.borrow().clone()).collect();
        let ids: BTreeSet<String> = d.members.iter().map(|m| m.member_id.clone()).collect();
        let settled = d.state == "Stable"
            && d.members.len() == members.len()
            && answers.iter().all(|a| {
                a.as_ref()
                    .is_some_and(|(id, g, _)| *g == d.generation && ids.contains(id))
            });
        if settled {
            Ok((
                d.generation,
                answers.into_iter().map(|a| a.unwrap().2).collect(),
            ))
        } else {
            Err((d, answers))
        }
    })
    .await
}

fn assert_covers(assignments: &[Vec<(String, u32)>], topic: &str, n: u32) {
    let mut all: Vec<(String, u32)> = assignments.iter().flatten().cloned().collect();
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        count,
        "a partition is assigned twice: {assignments:?}"
    );
    let want: Vec<(String, u32)> = (0..n).map(|p| (topic.to_owned(), p)).collect();
    assert_eq!(all, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_split_six_partitions() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "six", 6, &[]).await;
    let members: Vec<_> = (0..3)
        .map(|_| spawn_member(b.addr.clone(), "split", &["six"]))
        .collect();
    let rxs: Vec<&watch::Receiver<Joined>> = members.iter().map(|(_, rx)| rx).collect();
    let (generation, assignments) = wait_stable(&mut c, "split", &rxs).await;
    assert!(generation >= 1);
    assert_covers(&assignments, "six", 6);
    for a in &assignments {
        assert_eq!(
            a.len(),
            2,
            "range over 3 members gives 2 each: {assignments:?}"
        );
    }
    let d = describe(&mut c, "split").await;
    assert_eq!(d.assignor, "range");
    for (_, _, owned) in members.iter().map(|(_, rx)| rx.borrow().clone().unwrap()) {
        let m = d
            .members
            .iter()
            .find(|m| partitions(&m.assignment) == owned)
            .expect("describe shows each member's assignment");
        assert_eq!(m.client_id, "test");
        assert_eq!(m.topics, vec!["six".to_owned()]);
    }
    // The group is listed.
    let list = c
        .group
        .list_groups(v1::ListGroupsRequest {})
        .await
        .unwrap()
        .into_inner();
    let g = list.groups.iter().find(|g| g.group_id == "split").unwrap();
    assert_eq!(
        (g.state.as_str(), g.members, g.generation),
        ("Stable", 3, generation)
    );
    for (t, _) in members {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_member_expires_and_its_partitions_move() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "six", 6, &[]).await;
    let mut a = b.client().await.group;
    // A alone: generation 1, every partition.
    let ra = join(&mut a, join_request("g", "", &["six"])).await;
    assert_eq!(partitions(&ra.assignment).len(), 6);
    // B joins: its answer waits until A has rejoined.
    let addr = b.addr.clone();
    let pending_b = tokio::spawn(async move {
        let mut g = crate::support::Client::connect(&addr).await.unwrap().group;
        join(&mut g, join_request("g", "", &["six"])).await
    });
    wait_until("A hears of the rebalance", PATIENCE, async || {
        heartbeat(&mut a, "g", &ra.member_id, ra.generation).await == ErrorCode::RebalanceInProgress
    })
    .await;
    let ra2 = join(&mut a, join_request("g", &ra.member_id, &["six"])).await;
    assert_eq!(ra2.member_id, ra.member_id);
    let rb = pending_b.await.unwrap();
    assert_eq!(ra2.generation, rb.generation);
    assert!(ra2.generation > ra.generation);
    assert_covers(
        &[partitions(&ra2.assignment), partitions(&rb.assignment)],
        "six",
        6,
    );
    // B goes silent (no heartbeat, no leave). A keeps heartbeating and is told to rejoin once
    // B's session has expired.
    wait_until("B's session expires", PATIENCE, async || {
        match heartbeat(&mut a, "g", &ra2.member_id, ra2.generation).await {
            ErrorCode::None => false,
            ErrorCode::RebalanceInProgress => true,
            other => panic!("heartbeat: {other}"),
        }
    })
    .await;
    let ra3 = join(&mut a, join_request("g", &ra2.member_id, &["six"])).await;
    assert!(ra3.generation > ra2.generation);
    assert_covers(&[partitions(&ra3.assignment)], "six", 6);
    let d = describe(&mut c, "g").await;
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.state, "Stable");
    // B, back from the dead, is unknown and must join as a new member.
    let mut bg = b.client().await.group;
    assert_eq!(
        heartbeat(&mut bg, "g", &rb.member_id, rb.generation).await,
        ErrorCode::UnknownMemberId
    );
    // A leaves cleanly: the group is empty.
    a.leave_group(v1::LeaveGroupRequest {
        group_id: "g".into(),
        member_id: ra3.member_id.clone(),
    })
    .await
    .unwrap();
    let err = a
        .leave_group(v1::LeaveGroupRequest {
            group_id: "g".into(),
            member_id: ra3.member_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status_code(&err), ErrorCode::UnknownMemberId);
}

fn commit_partition(
    topic: &str,
    partition: u32,
    offset: i64,
    metadata: &str,
) -> v1::CommitOffsetPartition {
    v1::CommitOffsetPartition {
        topic: topic.into(),
        partition,
        offset,
        metadata: metadata.into(),
    }
}

async fn commit(
    g: &mut GroupClient,
    group: &str,
    member: &str,
    generation: Option<i32>,
    parts: Vec<v1::CommitOffsetPartition>,
) -> Result<Vec<(ErrorCode, String)>, ErrorCode> {
    match g
        .commit_offsets(v1::CommitOffsetsRequest {
            group_id: group.into(),
            member_id: member.into(),
            generation,
            partitions: parts,
        })
        .await
    {
        Ok(r) => Ok(r
            .into_inner()
            .results
            .into_iter()
            .map(|r| (code(r.error_code), r.error_message))
            .collect()),
        Err(s) => Err(status_code(&s)),
    }
}

async fn fetch_offsets(g: &mut GroupClient, group: &str) -> Vec<(String, u32, i64, String)> {
    g.fetch_offsets(v1::FetchOffsetsRequest {
        group_id: group.into(),
        partitions: vec![],
    })
    .await
    .unwrap()
    .into_inner()
    .offsets
    .into_iter()
    .map(|o| (o.topic, o.partition, o.offset, o.metadata))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_survive_sigterm_and_kill9() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "t", 3, &[]).await;
    let ok = vec![(ErrorCode::None, String::new()); 3];
    let parts = |base: i64| {
        (0..3)
            .map(|p| commit_partition("t", p, base + i64::from(p), "m"))
            .collect()
    };
    assert_eq!(
        commit(&mut c.group, "keep", "", None, parts(10)).await,
        Ok(ok.clone())
    );
    assert_eq!(
        commit(&mut c.group, "other", "", Some(-1), parts(100)).await,
        Ok(ok.clone())
    );
    let want = |base: i64| -> Vec<(String, u32, i64, String)> {
        (0..3)
            .map(|p| ("t".to_owned(), p, base + i64::from(p), "m".to_owned()))
            .collect()
    };
    assert_eq!(fetch_offsets(&mut c.group, "keep").await, want(10));

    assert!(b.stop().success());
    let mut b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    assert_eq!(fetch_offsets(&mut c.group, "keep").await, want(10));
    assert_eq!(fetch_offsets(&mut c.group, "other").await, want(100));
    assert_eq!(
        commit(&mut c.group, "keep", "", None, parts(20)).await,
        Ok(ok.clone())
    );

    b.kill9();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    assert_eq!(fetch_offsets(&mut c.group, "keep").await, want(20));
    // Named partitions: a missing commit is -1, an unknown partition says so.
    let r = c
        .group
        .fetch_offsets(v1::FetchOffsetsRequest {
            group_id: "keep".into(),
            partitions: vec![
                v1::TopicPartitions {
                    topic: "t".into(),
                    partitions: vec![2],
                },
                v1::TopicPartitions {
                    topic: "nope".into(),
                    partitions: vec![0],
                },
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .offsets;
    assert_eq!(r[0].offset, 22);
    assert_eq!(
        (r[1].offset, code(r[1].error_code)),
        (-1, ErrorCode::UnknownTopicOrPartition)
    );
    let none = fetch_offsets(&mut c.group, "never").await;
    assert!(none.is_empty());
    // Deleting the topic forgets its commits.
    c.admin
        .delete_topic(v1::DeleteTopicRequest { name: "t".into() })
        .await
        .unwrap();
    assert!(fetch_offsets(&mut c.group, "keep").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_generations_and_unknown_members_are_fenced() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "t", 2, &[]).await;
    let mut a = b.client().await.group;
    let r1 = join(&mut a, join_request("fence", "", &["t"])).await;
    let one = || vec![commit_partition("t", 0, 5, "")];
    assert_eq!(
        commit(&mut a, "fence", &r1.member_id, Some(r1.generation), one()).await,
        Ok(vec![(ErrorCode::None, String::new())])
    );
    // A standalone commit while the group has members is refused.
    assert_eq!(
        commit(&mut a, "fence", "", None, one()).await,
        Err(ErrorCode::UnknownMemberId)
    );
    // A member id without a generation (or the reverse) is malformed.
    assert_eq!(
        commit(&mut a, "fence", &r1.member_id, None, one()).await,
        Err(ErrorCode::InvalidRequest)
    );
    assert_eq!(
        commit(&mut a, "fence", "", Some(r1.generation), one()).await,
        Err(ErrorCode::InvalidRequest)
    );
    assert_eq!(
        commit(&mut a, "fence", "ghost", Some(r1.generation), one()).await,
        Err(ErrorCode::UnknownMemberId)
    );
    assert_eq!(
        heartbeat(&mut a, "fence", "ghost", r1.generation).await,
        ErrorCode::UnknownMemberId
    );
    assert_eq!(
        heartbeat(&mut a, "fence", &r1.member_id, r1.generation + 7).await,
        ErrorCode::IllegalGeneration
    );
    // A rejoin with an unknown member id is refused.
    let err = a
        .join_group(join_request("fence", "ghost", &["t"]))
        .await
        .unwrap_err();
    assert_eq!(status_code(&err), ErrorCode::UnknownMemberId);
    // Another assignor than the group's is refused.
    let mut rr = join_request("fence", "", &["t"]);
    rr.assignor = "roundrobin".into();
    let err = a.join_group(rr).await.unwrap_err();
    assert_eq!(status_code(&err), ErrorCode::InconsistentGroupProtocol);
    // A second member makes a new generation; the first generation's commits are fenced.
    let addr = b.addr.clone();
    let pending = tokio::spawn(async move {
        let mut g = crate::support::Client::connect(&addr).await.unwrap().group;
        join(&mut g, join_request("fence", "", &["t"])).await
    });
    wait_until(
        "the first member hears of the rebalance",
        PATIENCE,
        async || {
            heartbeat(&mut a, "fence", &r1.member_id, r1.generation).await
                == ErrorCode::RebalanceInProgress
        },
    )
    .await;
    // During the rebalance the old generation may still commit (that is when members commit).
    assert_eq!(
        commit(&mut a, "fence", &r1.member_id, Some(r1.generation), one()).await,
        Ok(vec![(ErrorCode::None, String::new())])
    );
    let r2 = join(&mut a, join_request("fence", &r1.member_id, &["t"])).await;
    let other = pending.await.unwrap();
    assert_eq!(r2.generation, other.generation);
    assert_eq!(
        commit(&mut a, "fence", &r1.member_id, Some(r1.generation), one()).await,
        Err(ErrorCode::IllegalGeneration)
    );
    assert_eq!(
        commit(&mut a, "fence", &r2.member_id, Some(r2.generation), one()).await,
        Ok(vec![(ErrorCode::None, String::new())])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_input_gets_the_right_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "t", 2, &[]).await;
    let g = &mut c.group;
    let join_code = |r: Result<tonic::Response<v1::JoinGroupResponse>, tonic::Status>| {
        status_code(&r.expect_err("refused"))
    };
    // Empty and overlong group ids.
    assert_eq!(
        join_code(g.join_group(join_request("", "", &["t"])).await),
        ErrorCode::InvalidRequest
    );
    let long = "g".repeat(256);
    assert_eq!(
        join_code(g.join_group(join_request(&long, "", &["t"])).await),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        commit(g, "", "", None, vec![commit_partition("t", 0, 1, "")]).await,
        Err(ErrorCode::InvalidRequest)
    );
    assert_eq!(heartbeat(g, "", "m", 1).await, ErrorCode::InvalidRequest);
    let err = g
        .describe_group(v1::DescribeGroupRequest {
            group_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status_code(&err), ErrorCode::InvalidRequest);
    // Session timeouts outside the broker's bounds.
    for ms in [0, 100, u32::MAX] {
        let mut r = join_request("g", "", &["t"]);
        r.session_timeout_ms = ms;
        assert_eq!(
            join_code(g.join_group(r).await),
            ErrorCode::InvalidSessionTimeout,
            "{ms}"
        );
    }
    // No topics, a bad topic name, an unknown assignor, a huge rebalance timeout.
    assert_eq!(
        join_code(g.join_group(join_request("g", "", &[])).await),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        join_code(g.join_group(join_request("g", "", &["a b"])).await),
        ErrorCode::InvalidTopic
    );
    let mut r = join_request("g", "", &["t"]);
    r.assignor = "sticky".into();
    assert_eq!(join_code(g.join_group(r).await), ErrorCode::InvalidRequest);
    let mut r = join_request("g", "", &["t"]);
    r.rebalance_timeout_ms = u32::MAX;
    assert_eq!(join_code(g.join_group(r).await), ErrorCode::InvalidRequest);
    // Per partition: negative offset, unknown topic, unknown partition, huge metadata; the valid
    // partition in the same request is committed.
    let results = commit(
        g,
        "g",
        "",
        None,
        vec![
            commit_partition("t", 0, -5, ""),
            commit_partition("nope", 0, 1, ""),
            commit_partition("t", 9, 1, ""),
            commit_partition("t", 1, 1, &"x".repeat(4097)),
            commit_partition("t", 1, 3, ""),
        ],
    )
    .await;
    // The last one duplicates (t, 1): the whole request is refused.
    assert_eq!(results, Err(ErrorCode::InvalidRequest));
    let results = commit(
        g,
        "g",
        "",
        None,
        vec![
            commit_partition("t", 0, -5, ""),
            commit_partition("nope", 0, 1, ""),
            commit_partition("t", 9, 1, ""),
            commit_partition("t", 1, 1, &"x".repeat(4097)),
        ],
    )
    .await
    .unwrap();
    let codes: Vec<ErrorCode> = results.iter().map(|r| r.0).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::InvalidRequest,
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::InvalidRequest,
        ]
    );
    assert!(results.iter().all(|r| !r.1.is_empty()));
    let results = commit(
        g,
        "g",
        "",
        None,
        vec![
            commit_partition("nope", 0, 1, ""),
            commit_partition("t", 1, 3, "ok"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(results[1], (ErrorCode::None, String::new()));
    assert_eq!(
        fetch_offsets(g, "g").await,
        vec![("t".to_owned(), 1, 3, "ok".to_owned())]
    );
    // Too many offsets in one commit.
    let many = (0..10_001)
        .map(|i| commit_partition(&format!("t{i}"), 0, 1, ""))
        .collect();
    assert_eq!(
        commit(g, "g", "", None, many).await,
        Err(ErrorCode::InvalidRequest)
    );
    // `__consumer_offsets` is internal: not creatable (nor is any `__` name), not listed.
    for name in ["__consumer_offsets", "__mine"] {
        let err = c
            .admin
            .create_topic(v1::CreateTopicRequest {
                name: name.into(),
                partitions: 1,
                replication_factor: 1,
                configs: Default::default(),
            })
            .await
            .unwrap_err();
        assert_eq!(status_code(&err), ErrorCode::InvalidTopic, "{name}");
    }
    let topics = c
        .admin
        .list_topics(v1::ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner()
        .topics;
    assert_eq!(
        topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["t"]
    );
    let meta = c
        .registry
        .get_metadata(v1::GetMetadataRequest { topics: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert!(meta.topics.iter().all(|t| t.name != "__consumer_offsets"));
    let r = fetch_once(&mut c, "__consumer_offsets", 0, 0).await;
    assert_eq!(code(r.error_code), ErrorCode::UnknownTopicOrPartition);
    // Describing a group nobody knows.
    let d = describe(&mut c, "nobody").await;
    assert_eq!(d.state, "Dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_group_list_and_describe_with_lag() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let mut c = b.client().await;
    create_topic(&mut c, "orders", 2, &[]).await;
    let ten: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    produce(&mut c, "orders", 0, set_of(&ten)).await;
    produce(&mut c, "orders", 1, set_of(&ten[..4])).await;
    assert!(
        commit(
            &mut c.group,
            "billing",
            "",
            None,
            vec![commit_partition("orders", 0, 7, "")]
        )
        .await
        .is_ok()
    );
    assert!(
        commit(
            &mut c.group,
            "audit",
            "",
            None,
            vec![commit_partition("orders", 1, 4, "")]
        )
        .await
        .is_ok()
    );
    // A live member of "billing" with a long session, so it is still there when described.
    let mut req = join_request("billing", "", &["orders"]);
    req.session_timeout_ms = 60_000;
    req.client_id = "cli-test".into();
    let member = join(&mut c.group, req).await;

    let out = b.run(&["group", "list"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["GROUP", "STATE", "MEMBERS", "GENERATION"],
            vec!["audit", "Empty", "0", "0"],
            vec!["billing", "Stable", "1", "1"],
        ],
        "{text}"
    );

    // --bootstrap works like the other commands.
    let out = b.run(
        &["group", "describe", "billing", "--bootstrap", &b.addr],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    println!("{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "Group:",
            "billing",
            "State:",
            "Stable",
            "Generation:",
            "1",
            "Assignor:",
            "range",
            "Members:",
            "1"
        ]
    );
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let id = member.member_id.as_str();
    assert_eq!(
        rows,
        vec![
            vec![
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "MEMBER-ID",
                "CLIENT-ID"
            ],
            vec!["orders", "0", "7", "10", "3", id, "cli-test"],
            vec!["orders", "1", "-", "4", "-", id, "cli-test"],
        ],
        "{text}"
    );
    let out = b.run(&["group", "describe", "audit"], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![vec!["orders", "1", "4", "4", "0", "-", "-"]],
        "{text}"
    );

    // Errors: one line on stderr, non-zero exit.
    let out = b.run(&["group", "describe", "nobody"], b"");
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("nobody"),
        "{err}"
    );
    let out = b.run(&["group", "describe", ""], b"");
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("INVALID_REQUEST"), "{err}");
}

/// A JoinGroup whose caller goes away (cancelled) takes its member out of the group, so the
/// rebalance does not wait for a member that can never hear its answer; a pending join is
/// answered SHUTTING_DOWN by a graceful shutdown, which it does not hold up. Metrics count
/// groups, members and rebalances.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abandoned_joins_leave_and_shutdown_answers_pending_joins() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start_with(tmp.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let mut c = b.client().await;
    create_topic(&mut c, "six", 6, &[]).await;
    let mut a = b.client().await.group;
    let ra = join(&mut a, join_request("g", "", &["six"])).await;
    // B's join waits for A to rejoin; B's caller gives up before that.
    let addr = b.addr.clone();
    let abandoned = tokio::spawn(async move {
        let mut g = crate::support::Client::connect(&addr).await.unwrap().group;
        join(&mut g, join_request("g", "", &["six"])).await
    });
    wait_until("B joins", PATIENCE, async || {
        describe(&mut c, "g").await.members.len() >= 2
    })
    .await;
    abandoned.abort();
    wait_until("the abandoned member is gone", PATIENCE, async || {
        describe(&mut c, "g").await.members.len() <= 1
    })
    .await;
    // A's rejoin completes the rebalance alone, with everything.
    assert_eq!(
        heartbeat(&mut a, "g", &ra.member_id, ra.generation).await,
        ErrorCode::RebalanceInProgress
    );
    let ra2 = join(&mut a, join_request("g", &ra.member_id, &["six"])).await;
    assert_covers(&[partitions(&ra2.assignment)], "six", 6);

    let body = b.metrics().await;
    for want in [
        "sluiceway_groups 1\n",
        "sluiceway_group_members 1\n",
        "sluiceway_group_rebalances_total 2\n",
        "sluiceway_requests_total{request=\"join_group\"} 2\n",
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }

    // A new member's join is pending (A must rejoin) when the broker is asked to stop.
    let addr = b.addr.clone();
    let pending = tokio::spawn(async move {
        let mut g = crate::support::Client::connect(&addr).await.unwrap().group;
        g.join_group(join_request("g", "", &["six"])).await
    });
    wait_until("the new member joins", PATIENCE, async || {
        describe(&mut c, "g").await.members.len() >= 2
    })
    .await;
    assert!(b.stop().success());
    let err = pending.await.unwrap().unwrap_err();
    assert_eq!(status_code(&err), ErrorCode::ShuttingDown);
    assert!(
        !b.log_text()
            .contains("did not finish within the grace period"),
        "the pending join held up the shutdown"
    );
}
