//! Replication's sans-IO pieces, driven exactly: the leader's ISR and high-watermark state
//! through scripted event sequences with explicit times, the leader-epoch cache against real
//! files, and follower truncation through the classic KIP-101 / KIP-279 scenarios plus a
//! property test that simulates elections and replication and checks every truncation against
//! the true point where two logs diverge.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use proptest::prelude::*;
use sluiceway_core::registry::BrokerId;
use sluiceway_core::replication::{
    EPOCH_CHECKPOINT_FILE, EpochEntry, LeaderEpochCache, LeaderState, ReplicationConfig,
    TruncationStep, truncation_step,
};
use sluiceway_core::{Error, Offset};

const LAG_MS: u64 = 100;

fn ids(list: &[u32]) -> Vec<BrokerId> {
    list.iter().copied().map(BrokerId).collect()
}

/// Leader 1 of replicas 1, 2, 3 at epoch 5, all in the ISR, log end = HW = epoch start = 10,
/// created at t=0 with a lag time of 100 ms.
fn leader_of_three() -> LeaderState {
    leader_with_isr(&[1, 2, 3])
}

fn leader_with_isr(isr: &[u32]) -> LeaderState {
    LeaderState::new(
        BrokerId(1),
        5,
        &ids(&[1, 2, 3]),
        &ids(isr),
        Offset(10),
        Offset(10),
        Offset(10),
        ReplicationConfig {
            replica_lag_time_max_ms: LAG_MS,
        },
        0,
    )
}

fn render_ids(list: &[BrokerId]) -> String {
    let parts: Vec<String> = list.iter().map(|b| b.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// Runs a script against `state` and renders one line per event: what it returned, then the
/// state (`hw`, committed `isr`, `pending` proposal). The leader's log end is tracked by the
/// script (`append`), and every `fetch` reports it as the leader's log end. Events:
///
/// - `append <log end>` — `on_append`
/// - `fetch <replica> <fetch offset> t=<ms> [fenced]` — `on_follower_fetch` (`fenced`: the
///   replica is not registered, so not eligible for the ISR)
/// - `shrink t=<ms>` — `maybe_shrink_isr`
/// - `commit <id,id,…>` — `isr_committed`
/// - `fail` — `isr_proposal_failed`
fn run(state: &mut LeaderState, script: &str) -> String {
    let mut out = String::new();
    let mut log_end = state.log_end();
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let time = |w: &str| -> u64 { w.strip_prefix("t=").unwrap().parse().unwrap() };
        let result = match words.as_slice() {
            ["append", end] => {
                log_end = Offset(end.parse().unwrap());
                match state.on_append(log_end) {
                    Some(hw) => format!("hw->{hw}"),
                    None => "-".to_owned(),
                }
            }
            ["fetch", replica, offset, t, flags @ ..] => {
                let r = BrokerId(replica.parse().unwrap());
                let o = Offset(offset.parse().unwrap());
                let eligible = match flags {
                    [] => true,
                    ["fenced"] => false,
                    _ => panic!("unknown fetch flags {flags:?}"),
                };
                match state.on_follower_fetch(r, o, log_end, time(t), eligible) {
                    Ok(outcome) => {
                        let mut parts = Vec::new();
                        if let Some(hw) = outcome.high_watermark {
                            parts.push(format!("hw->{hw}"));
                        }
                        if let Some(isr) = outcome.propose_isr {
                            parts.push(format!("propose {}", render_ids(&isr)));
                        }
                        if parts.is_empty() {
                            "-".to_owned()
                        } else {
                            parts.join(" ")
                        }
                    }
                    Err(e) => format!("error {}", e.code()),
                }
            }
            ["shrink", t] => match state.maybe_shrink_isr(time(t)) {
                Some(isr) => format!("propose {}", render_ids(&isr)),
                None => "-".to_owned(),
            },
            ["commit", list] => {
                let isr: Vec<BrokerId> = list
                    .split(',')
                    .map(|s| BrokerId(s.parse().unwrap()))
                    .collect();
                match state.isr_committed(&isr) {
                    Some(hw) => format!("hw->{hw}"),
                    None => "-".to_owned(),
                }
            }
            ["fail"] => {
                state.isr_proposal_failed();
                "-".to_owned()
            }
            _ => panic!("unknown script line {line:?}"),
        };
        let pending = state.pending_isr().map_or("-".to_owned(), render_ids);
        out.push_str(&format!(
            "{line} => {result} | hw={} isr={} pending={pending}\n",
            state.high_watermark(),
            render_ids(state.isr())
        ));
    }
    out
}

/// Compares rendered output with an expectation written indented in a raw string.
#[track_caller]
fn check(actual: &str, expected: &str) {
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let actual: Vec<&str> = actual.lines().collect();
    assert_eq!(actual, expected, "\nactual:\n{}\n", actual.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// LeaderState
// ---------------------------------------------------------------------------------------------

#[test]
fn high_watermark_advances_only_when_every_isr_follower_has_fetched() {
    let mut s = leader_of_three();
    check(
        &run(
            &mut s,
            "append 15
             fetch 2 15 t=1
             fetch 2 15 t=2
             fetch 3 12 t=3
             fetch 3 15 t=4
             append 20
             fetch 2 20 t=5
             fetch 3 18 t=6",
        ),
        "append 15 => - | hw=10 isr=[1,2,3] pending=-
         fetch 2 15 t=1 => - | hw=10 isr=[1,2,3] pending=-
         fetch 2 15 t=2 => - | hw=10 isr=[1,2,3] pending=-
         fetch 3 12 t=3 => hw->12 | hw=12 isr=[1,2,3] pending=-
         fetch 3 15 t=4 => hw->15 | hw=15 isr=[1,2,3] pending=-
         append 20 => - | hw=15 isr=[1,2,3] pending=-
         fetch 2 20 t=5 => - | hw=15 isr=[1,2,3] pending=-
         fetch 3 18 t=6 => hw->18 | hw=18 isr=[1,2,3] pending=-",
    );
    assert_eq!(s.follower_end_offset(BrokerId(2)), Some(Offset(20)));
    assert_eq!(s.follower_end_offset(BrokerId(1)), None);
}

#[test]
fn follower_behind_for_longer_than_lag_time_is_proposed_out() {
    let mut s = leader_of_three();
    // Follower 3 keeps fetching but never reaches the log end; follower 2 keeps up.
    check(
        &run(
            &mut s,
            "append 20
             fetch 2 20 t=10
             fetch 3 12 t=10
             shrink t=100
             fetch 2 20 t=101
             fetch 3 14 t=101
             shrink t=101
             commit 1,2",
        ),
        "append 20 => - | hw=10 isr=[1,2,3] pending=-
         fetch 2 20 t=10 => - | hw=10 isr=[1,2,3] pending=-
         fetch 3 12 t=10 => hw->12 | hw=12 isr=[1,2,3] pending=-
         shrink t=100 => - | hw=12 isr=[1,2,3] pending=-
         fetch 2 20 t=101 => - | hw=12 isr=[1,2,3] pending=-
         fetch 3 14 t=101 => hw->14 | hw=14 isr=[1,2,3] pending=-
         shrink t=101 => propose [1,2] | hw=14 isr=[1,2,3] pending=[1,2]
         commit 1,2 => hw->20 | hw=20 isr=[1,2] pending=-",
    );
}

#[test]
fn follower_at_the_log_end_is_never_out_of_sync() {
    let mut s = leader_of_three();
    // Nothing appended: both followers sit at the log end however long they stay silent.
    check(
        &run(
            &mut s,
            "fetch 2 10 t=1
             fetch 3 10 t=1
             shrink t=100000",
        ),
        "fetch 2 10 t=1 => - | hw=10 isr=[1,2,3] pending=-
         fetch 3 10 t=1 => - | hw=10 isr=[1,2,3] pending=-
         shrink t=100000 => - | hw=10 isr=[1,2,3] pending=-",
    );
}

#[test]
fn isr_follower_that_never_fetches_is_proposed_out_after_the_lag_time() {
    let mut s = leader_of_three();
    check(
        &run(
            &mut s,
            "append 11
             fetch 2 11 t=50
             shrink t=100
             shrink t=101",
        ),
        "append 11 => - | hw=10 isr=[1,2,3] pending=-
         fetch 2 11 t=50 => - | hw=10 isr=[1,2,3] pending=-
         shrink t=100 => - | hw=10 isr=[1,2,3] pending=-
         shrink t=101 => propose [1,2] | hw=10 isr=[1,2,3] pending=[1,2]",
    );
}

#[test]
fn caught_up_as_of_previous_fetch_when_it_reached_the_leader_end_seen_then() {
    // Kafka's rule: follower 2 fetches 15 at t=90 while the leader is at 20 (not caught up now);
    // but at its previous fetch (t=50) the leader was at 15, so it was caught up as of t=50.
    let mut s = leader_of_three();
    check(
        &run(
            &mut s,
            "fetch 3 10 t=0
             append 15
             fetch 2 10 t=50
             append 20
             fetch 2 15 t=90
             fetch 3 20 t=90
             shrink t=150
             shrink t=151",
        ),
        "fetch 3 10 t=0 => - | hw=10 isr=[1,2,3] pending=-
         append 15 => - | hw=10 isr=[1,2,3] pending=-
         fetch 2 10 t=50 => - | hw=10 isr=[1,2,3] pending=-
         append 20 => - | hw=10 isr=[1,2,3] pending=-
         fetch 2 15 t=90 => - | hw=10 isr=[1,2,3] pending=-
         fetch 3 20 t=90 => hw->15 | hw=15 isr=[1,2,3] pending=-
         shrink t=150 => - | hw=15 isr=[1,2,3] pending=-
         shrink t=151 => propose [1,3] | hw=15 isr=[1,2,3] pending=[1,3]",
    );
}

#[test]
fn shrink_takes_effect_only_after_isr_committed() {
    let mut s = leader_of_three();
    // Follower 3 is slow and proposed out; until the registry confirms, it still holds the HW
    // (KIP-497: the maximal ISR), and no second proposal is made.
    check(
        &run(
            &mut s,
            "append 20
             fetch 2 20 t=1
             fetch 3 11 t=1
             shrink t=200
             fetch 2 20 t=201
             shrink t=300
             fetch 3 12 t=301
             commit 1,2
             fetch 3 13 t=302",
        ),
        "append 20 => - | hw=10 isr=[1,2,3] pending=-
         fetch 2 20 t=1 => - | hw=10 isr=[1,2,3] pending=-
         fetch 3 11 t=1 => hw->11 | hw=11 isr=[1,2,3] pending=-
         shrink t=200 => propose [1,2] | hw=11 isr=[1,2,3] pending=[1,2]
         fetch 2 20 t=201 => - | hw=11 isr=[1,2,3] pending=[1,2]
         shrink t=300 => - | hw=11 isr=[1,2,3] pending=[1,2]
         fetch 3 12 t=301 => hw->12 | hw=12 isr=[1,2,3] pending=[1,2]
         commit 1,2 => hw->20 | hw=20 isr=[1,2] pending=-
         fetch 3 13 t=302 => - | hw=20 isr=[1,2] pending=-",
    );
}

#[test]
fn pending_expansion_counts_in_the_high_watermark() {
    // ISR {1,2}; follower 3 catches up to the HW and is proposed in. While the expansion is
    // pending the HW is the minimum over {1,2} ∪ {1,2,3}, so it waits for 3.
    let mut s = leader_with_isr(&[1, 2]);
    check(
        &run(
            &mut s,
            "fetch 3 10 t=1
             append 20
             fetch 2 20 t=2
             fetch 3 15 t=3
             commit 1,2,3
             fetch 3 20 t=4",
        ),
        "fetch 3 10 t=1 => propose [1,2,3] | hw=10 isr=[1,2] pending=[1,2,3]
         append 20 => - | hw=10 isr=[1,2] pending=[1,2,3]
         fetch 2 20 t=2 => - | hw=10 isr=[1,2] pending=[1,2,3]
         fetch 3 15 t=3 => hw->15 | hw=15 isr=[1,2] pending=[1,2,3]
         commit 1,2,3 => - | hw=15 isr=[1,2,3] pending=-
         fetch 3 20 t=4 => hw->20 | hw=20 isr=[1,2,3] pending=-",
    );
}

#[test]
fn follower_is_proposed_in_only_at_or_past_the_high_watermark_and_the_epoch_start() {
    // The leader became leader at epoch start 10 with HW 4 (its followers had not confirmed
    // more); follower 3 at 6 is past the HW but below the epoch start, so it may still hold a
    // divergent tail from an older epoch: not proposed until it reaches 10.
    let mut s = LeaderState::new(
        BrokerId(1),
        5,
        &ids(&[1, 2, 3]),
        &ids(&[1, 2]),
        Offset(10),
        Offset(4),
        Offset(10),
        ReplicationConfig {
            replica_lag_time_max_ms: LAG_MS,
        },
        0,
    );
    check(
        &run(
            &mut s,
            "fetch 3 3 t=1
             fetch 3 6 t=2
             fetch 2 10 t=3
             fetch 3 9 t=4
             fetch 3 10 t=5",
        ),
        "fetch 3 3 t=1 => - | hw=4 isr=[1,2] pending=-
         fetch 3 6 t=2 => - | hw=4 isr=[1,2] pending=-
         fetch 2 10 t=3 => hw->10 | hw=10 isr=[1,2] pending=-
         fetch 3 9 t=4 => - | hw=10 isr=[1,2] pending=-
         fetch 3 10 t=5 => propose [1,2,3] | hw=10 isr=[1,2] pending=[1,2,3]",
    );
}

#[test]
fn caught_up_follower_that_is_not_registered_is_not_proposed_until_it_registers() {
    // KIP-841: follower 3 caught up while fenced (its registration lost and not yet renewed).
    // Proposing it would make the controller remove it again at once; it is proposed on its
    // first fetch after it registers, and a fenced fetch still counts for lastCaughtUpTime.
    let mut s = leader_with_isr(&[1, 2]);
    check(
        &run(
            &mut s,
            "fetch 2 10 t=1
             fetch 3 10 t=2 fenced
             fetch 3 10 t=3 fenced
             fetch 3 10 t=4",
        ),
        "fetch 2 10 t=1 => - | hw=10 isr=[1,2] pending=-
         fetch 3 10 t=2 fenced => - | hw=10 isr=[1,2] pending=-
         fetch 3 10 t=3 fenced => - | hw=10 isr=[1,2] pending=-
         fetch 3 10 t=4 => propose [1,2,3] | hw=10 isr=[1,2] pending=[1,2,3]",
    );
}

#[test]
fn failed_proposal_allows_a_new_one() {
    let mut s = leader_with_isr(&[1, 2]);
    check(
        &run(
            &mut s,
            "fetch 3 10 t=1
             fetch 3 10 t=2
             fail
             fetch 3 10 t=3",
        ),
        "fetch 3 10 t=1 => propose [1,2,3] | hw=10 isr=[1,2] pending=[1,2,3]
         fetch 3 10 t=2 => - | hw=10 isr=[1,2] pending=[1,2,3]
         fail => - | hw=10 isr=[1,2] pending=-
         fetch 3 10 t=3 => propose [1,2,3] | hw=10 isr=[1,2] pending=[1,2,3]",
    );
}

#[test]
fn high_watermark_never_goes_backwards() {
    let mut s = leader_of_three();
    // Follower 3 restarts having lost unflushed data (fetches from 12 after 18), and a re-read
    // ISR adds a member with a smaller end: the HW stays.
    check(
        &run(
            &mut s,
            "append 20
             fetch 2 20 t=1
             fetch 3 18 t=1
             fetch 3 12 t=2
             commit 1,2,3
             fetch 2 5 t=3",
        ),
        "append 20 => - | hw=10 isr=[1,2,3] pending=-
         fetch 2 20 t=1 => - | hw=10 isr=[1,2,3] pending=-
         fetch 3 18 t=1 => hw->18 | hw=18 isr=[1,2,3] pending=-
         fetch 3 12 t=2 => - | hw=18 isr=[1,2,3] pending=-
         commit 1,2,3 => - | hw=18 isr=[1,2,3] pending=-
         fetch 2 5 t=3 => - | hw=18 isr=[1,2,3] pending=-",
    );
}

#[test]
fn fetch_from_unknown_replica_or_the_leader_is_rejected() {
    let mut s = leader_of_three();
    check(
        &run(
            &mut s,
            "fetch 9 10 t=1
             fetch 1 10 t=1
             fetch 2 11 t=1
             fetch 2 10 t=1",
        ),
        "fetch 9 10 t=1 => error INVALID_REQUEST | hw=10 isr=[1,2,3] pending=-
         fetch 1 10 t=1 => error INVALID_REQUEST | hw=10 isr=[1,2,3] pending=-
         fetch 2 11 t=1 => error INVALID_REQUEST | hw=10 isr=[1,2,3] pending=-
         fetch 2 10 t=1 => - | hw=10 isr=[1,2,3] pending=-",
    );
    let err = s
        .on_follower_fetch(BrokerId(9), Offset(10), Offset(10), 1, true)
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidRequest(ref m) if m.contains("not a replica")),
        "{err}"
    );
    // The rejected fetches changed nothing.
    assert_eq!(s.follower_end_offset(BrokerId(9)), None);
    assert_eq!(s.follower_end_offset(BrokerId(2)), Some(Offset(10)));
}

#[test]
fn isr_of_the_leader_alone_high_watermark_follows_appends() {
    let mut s = leader_with_isr(&[1]);
    check(
        &run(
            &mut s,
            "append 11
             append 15
             fetch 2 3 t=1
             shrink t=1000
             append 16",
        ),
        "append 11 => hw->11 | hw=11 isr=[1] pending=-
         append 15 => hw->15 | hw=15 isr=[1] pending=-
         fetch 2 3 t=1 => - | hw=15 isr=[1] pending=-
         shrink t=1000 => - | hw=15 isr=[1] pending=-
         append 16 => hw->16 | hw=16 isr=[1] pending=-",
    );
    assert_eq!(s.leader_epoch(), 5);
}

#[test]
fn shrink_never_proposes_an_isr_without_the_leader() {
    let mut s = leader_of_three();
    check(
        &run(
            &mut s,
            "append 11
             shrink t=101",
        ),
        "append 11 => - | hw=10 isr=[1,2,3] pending=-
         shrink t=101 => propose [1] | hw=10 isr=[1,2,3] pending=[1]",
    );
}

// ---------------------------------------------------------------------------------------------
// LeaderEpochCache
// ---------------------------------------------------------------------------------------------

fn entry(epoch: u32, start: u64) -> EpochEntry {
    EpochEntry {
        epoch,
        start_offset: Offset(start),
    }
}

fn file_text(dir: &Path) -> String {
    fs::read_to_string(dir.join(EPOCH_CHECKPOINT_FILE)).unwrap()
}

/// A cache in a fresh directory holding `entries`.
fn cache_with(entries: &[(u32, u64)]) -> (tempfile::TempDir, LeaderEpochCache) {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = LeaderEpochCache::open(tmp.path()).unwrap();
    for (epoch, start) in entries {
        assert!(c.assign(*epoch, Offset(*start)).unwrap());
    }
    (tmp, c)
}

#[test]
fn epoch_cache_missing_file_is_empty_and_assign_persists() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = LeaderEpochCache::open(tmp.path()).unwrap();
    assert_eq!(c.entries(), &[]);
    assert_eq!(c.latest(), None);
    assert!(!tmp.path().join(EPOCH_CHECKPOINT_FILE).exists());

    assert!(c.assign(0, Offset(0)).unwrap());
    assert!(c.assign(3, Offset(1500)).unwrap());
    assert_eq!(c.entries(), &[entry(0, 0), entry(3, 1500)]);
    assert_eq!(c.latest(), Some(entry(3, 1500)));
    // The golden example of docs/FORMAT.md, "Leader epoch checkpoint".
    assert_eq!(file_text(tmp.path()), "0\n2\n0 0\n3 1500\n");
    assert!(!tmp.path().join("leader-epoch-checkpoint.tmp").exists());
}

#[test]
fn epoch_cache_assign_of_an_old_or_equal_epoch_is_a_no_op() {
    let (tmp, mut c) = cache_with(&[(2, 10), (4, 20)]);
    let before = file_text(tmp.path());
    assert!(!c.assign(4, Offset(25)).unwrap());
    assert!(!c.assign(4, Offset(5)).unwrap());
    assert!(!c.assign(3, Offset(30)).unwrap());
    assert_eq!(c.entries(), &[entry(2, 10), entry(4, 20)]);
    assert_eq!(file_text(tmp.path()), before);
}

#[test]
fn epoch_cache_assign_with_an_earlier_start_drops_the_overwritten_entries() {
    let (tmp, mut c) = cache_with(&[(1, 0), (2, 10), (4, 20)]);
    assert!(c.assign(5, Offset(10)).unwrap());
    assert_eq!(c.entries(), &[entry(1, 0), entry(5, 10)]);
    // An epoch that wrote nothing keeps its entry: the next epoch starts at the same offset.
    assert!(c.assign(6, Offset(10)).unwrap());
    assert_eq!(c.entries(), &[entry(1, 0), entry(5, 10), entry(6, 10)]);
    assert_eq!(file_text(tmp.path()), "0\n3\n1 0\n5 10\n6 10\n");
}

#[test]
fn epoch_cache_truncate_from_end() {
    let (tmp, mut c) = cache_with(&[(1, 0), (2, 10), (4, 20)]);
    c.truncate_from_end(Offset(25)).unwrap();
    assert_eq!(c.entries(), &[entry(1, 0), entry(2, 10), entry(4, 20)]);
    c.truncate_from_end(Offset(20)).unwrap();
    assert_eq!(c.entries(), &[entry(1, 0), entry(2, 10)]);
    c.truncate_from_end(Offset(11)).unwrap();
    assert_eq!(c.entries(), &[entry(1, 0), entry(2, 10)]);
    c.truncate_from_end(Offset(0)).unwrap();
    assert_eq!(c.entries(), &[]);
    assert_eq!(file_text(tmp.path()), "0\n0\n");
}

#[test]
fn epoch_cache_truncate_from_start_moves_the_covering_entry() {
    let (tmp, mut c) = cache_with(&[(1, 0), (2, 10), (4, 20)]);
    c.truncate_from_start(Offset(0)).unwrap();
    assert_eq!(c.entries(), &[entry(1, 0), entry(2, 10), entry(4, 20)]);
    c.truncate_from_start(Offset(15)).unwrap();
    assert_eq!(c.entries(), &[entry(2, 15), entry(4, 20)]);
    c.truncate_from_start(Offset(20)).unwrap();
    assert_eq!(c.entries(), &[entry(4, 20)]);
    c.truncate_from_start(Offset(35)).unwrap();
    assert_eq!(c.entries(), &[entry(4, 35)]);
    assert_eq!(file_text(tmp.path()), "0\n1\n4 35\n");

    // A start below every entry changes nothing.
    let (_tmp, mut c) = cache_with(&[(3, 50)]);
    c.truncate_from_start(Offset(10)).unwrap();
    assert_eq!(c.entries(), &[entry(3, 50)]);
}

#[test]
fn epoch_cache_clear() {
    let (tmp, mut c) = cache_with(&[(1, 0), (2, 10)]);
    c.clear().unwrap();
    assert_eq!(c.entries(), &[]);
    assert_eq!(file_text(tmp.path()), "0\n0\n");
    assert!(c.assign(3, Offset(0)).unwrap());
    assert_eq!(c.entries(), &[entry(3, 0)]);
}

#[test]
fn epoch_cache_persists_and_reopens() {
    let (tmp, mut c) = cache_with(&[(0, 0), (2, 100), (7, 250)]);
    c.truncate_from_start(Offset(40)).unwrap();
    let reopened = LeaderEpochCache::open(tmp.path()).unwrap();
    assert_eq!(reopened.entries(), c.entries());
    assert_eq!(
        reopened.entries(),
        &[entry(0, 40), entry(2, 100), entry(7, 250)]
    );

    // A file written by Kafka (same format) reads the same.
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(EPOCH_CHECKPOINT_FILE),
        "0\n2\n0 0\n3 1500\n",
    )
    .unwrap();
    let c = LeaderEpochCache::open(dir.path()).unwrap();
    assert_eq!(c.entries(), &[entry(0, 0), entry(3, 1500)]);
}

#[test]
fn epoch_cache_malformed_file_is_an_error_naming_the_file_and_line() {
    let cases: &[(&str, &str)] = &[
        ("", "line 1: missing version"),
        ("1\n0\n", "line 1: version"),
        ("0\n", "line 2: missing entry count"),
        ("0\nx\n", "line 2: entry count"),
        ("0\n2\n0 0\n", "line 4: missing entry"),
        ("0\n1\n0\n", "line 3: expected"),
        ("0\n1\n-1 0\n", "line 3: expected"),
        ("0\n1\n0 9223372036854775808\n", "line 3: expected"),
        ("0\n2\n3 10\n2 20\n", "line 4: entry"),
        ("0\n2\n2 20\n3 10\n", "line 4: entry"),
        ("0\n1\n0 0\n1 5\n", "line 4:"),
    ];
    for (text, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EPOCH_CHECKPOINT_FILE);
        fs::write(&path, text).unwrap();
        let err = LeaderEpochCache::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(want),
            "{text:?}: {msg:?} should name the file and say {want:?}"
        );
        match &err {
            Error::Io { source, .. } => assert_eq!(source.kind(), ErrorKind::InvalidData),
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn epoch_cache_end_offset_for() {
    let (_tmp, c) = cache_with(&[(1, 0), (3, 10), (4, 20), (6, 20)]);
    let log_end = Offset(30);
    // Exact epochs: the next entry's start, or the log end for the latest.
    assert_eq!(c.end_offset_for(1, log_end), Some(entry(1, 10)));
    assert_eq!(c.end_offset_for(3, log_end), Some(entry(3, 20)));
    assert_eq!(c.end_offset_for(4, log_end), Some(entry(4, 20)));
    assert_eq!(c.end_offset_for(6, log_end), Some(entry(6, 30)));
    // An epoch we do not have: the largest smaller one.
    assert_eq!(c.end_offset_for(2, log_end), Some(entry(1, 10)));
    assert_eq!(c.end_offset_for(5, log_end), Some(entry(4, 20)));
    assert_eq!(c.end_offset_for(9, log_end), Some(entry(6, 30)));
    // Nothing at or below: UNDEFINED.
    assert_eq!(c.end_offset_for(0, log_end), None);
    let (_tmp, empty) = cache_with(&[]);
    assert_eq!(empty.end_offset_for(3, log_end), None);
}

// ---------------------------------------------------------------------------------------------
// Follower truncation (KIP-101 / KIP-279)
// ---------------------------------------------------------------------------------------------

#[test]
fn kip101_follower_with_a_longer_old_epoch_truncates_to_the_new_leaders_end_of_it() {
    // A led epoch 1 and wrote 0..100; B had replicated up to 80 when A failed. B leads epoch 2
    // from 80 and writes to 120. A returns as a follower: its 80..100 were never on B and must
    // go, even though A's HW may be past 80 (the HW fallback would keep them).
    let (_a_dir, a) = cache_with(&[(0, 0), (1, 50)]);
    let (_b_dir, b) = cache_with(&[(0, 0), (1, 50), (2, 80)]);
    let answer = b.end_offset_for(1, Offset(120));
    assert_eq!(answer, Some(entry(1, 80)));
    assert_eq!(
        truncation_step(&a, Offset(100), Offset(90), 1, answer),
        TruncationStep::Done {
            truncate_to: Offset(80)
        }
    );
}

#[test]
fn kip101_equal_epochs_truncate_to_the_smaller_end() {
    // The follower has less of the epoch than the leader: nothing to cut.
    let (_dir, f) = cache_with(&[(0, 0), (1, 50)]);
    let step = truncation_step(&f, Offset(70), Offset(60), 1, Some(entry(1, 80)));
    assert_eq!(
        step,
        TruncationStep::Done {
            truncate_to: Offset(70)
        }
    );
    // The follower has more: cut to the leader's end.
    let step = truncation_step(&f, Offset(95), Offset(60), 1, Some(entry(1, 80)));
    assert_eq!(
        step,
        TruncationStep::Done {
            truncate_to: Offset(80)
        }
    );
}

#[test]
fn kip101_both_replicas_restart_and_the_new_leader_overwrote_an_offset() {
    // KIP-101 scenario 2: A (epoch 0) holds m0 m1, B holds m0. Both crash; B comes back first,
    // leads epoch 1 and writes m2 at offset 1. A must drop its m1 at offset 1, which its HW
    // (2, say) would have kept, leaving two different messages at offset 1.
    let (_a_dir, a) = cache_with(&[(0, 0)]);
    let (_b_dir, b) = cache_with(&[(0, 0), (1, 1)]);
    let answer = b.end_offset_for(0, Offset(2));
    assert_eq!(answer, Some(entry(0, 1)));
    assert_eq!(
        truncation_step(&a, Offset(2), Offset(2), 0, answer),
        TruncationStep::Done {
            truncate_to: Offset(1)
        }
    );
}

#[test]
fn kip279_asks_again_when_the_leader_lacks_our_latest_epoch() {
    // Follower: epochs 0@0, 1@10, 3@20, log end 30 (it led epoch 3 briefly, unreplicated).
    // Leader: 0@0, 1@10, 2@15, log end 40 (it led epoch 2 from 15).
    let (_fdir, mut f) = cache_with(&[(0, 0), (1, 10), (3, 20)]);
    let (_ldir, l) = cache_with(&[(0, 0), (1, 10), (2, 15)]);
    let leader_end = Offset(40);

    // Ask about 3: the leader's largest epoch <= 3 is 2 (ends at its log end). We have no
    // epoch 2: cut back to the end of our epoch 1 (20) and ask again.
    let answer = l.end_offset_for(3, leader_end);
    assert_eq!(answer, Some(entry(2, 40)));
    let step = truncation_step(&f, Offset(30), Offset(12), 3, answer);
    assert_eq!(
        step,
        TruncationStep::AskAgain {
            truncate_to: Offset(20)
        }
    );
    f.truncate_from_end(step.truncate_to()).unwrap();
    assert_eq!(f.latest(), Some(entry(1, 10)));

    // Ask about 1: it ends at 15 on the leader, where epoch 2 began.
    let answer = l.end_offset_for(1, leader_end);
    assert_eq!(answer, Some(entry(1, 15)));
    let step = truncation_step(&f, Offset(20), Offset(12), 1, answer);
    assert_eq!(
        step,
        TruncationStep::Done {
            truncate_to: Offset(15)
        }
    );
}

#[test]
fn kip279_answer_for_an_epoch_we_have_truncates_to_the_smaller_end() {
    // We asked about 4; the leader lacks 4 but has 2, which we also have: the common end of
    // epoch 2 is min(leader's, ours).
    let (_dir, f) = cache_with(&[(1, 0), (2, 10), (4, 30)]);
    let step = truncation_step(&f, Offset(50), Offset(0), 4, Some(entry(2, 40)));
    assert_eq!(
        step,
        TruncationStep::Done {
            truncate_to: Offset(30)
        }
    );
    let step = truncation_step(&f, Offset(50), Offset(0), 4, Some(entry(2, 25)));
    assert_eq!(
        step,
        TruncationStep::Done {
            truncate_to: Offset(25)
        }
    );
}

#[test]
fn undefined_answer_falls_back_to_the_high_watermark() {
    let (_dir, f) = cache_with(&[(2, 0), (3, 40)]);
    let step = truncation_step(&f, Offset(60), Offset(45), 3, None);
    assert_eq!(
        step,
        TruncationStep::Done {
            truncate_to: Offset(45)
        }
    );
    // Never above the log end.
    let step = truncation_step(&f, Offset(30), Offset(45), 3, None);
    assert_eq!(
        step,
        TruncationStep::Done {
            truncate_to: Offset(30)
        }
    );
    // A reply naming an epoch newer than asked is treated the same way.
    let step = truncation_step(&f, Offset(60), Offset(45), 3, Some(entry(5, 100)));
    assert_eq!(
        step,
        TruncationStep::Done {
            truncate_to: Offset(45)
        }
    );
}

#[test]
fn no_local_epoch_at_or_below_the_answer_truncates_to_our_first_entry() {
    // Our history starts at epoch 4 (offset 20); the leader answers epoch 2 ending at 50. Our
    // data from 20 on was written in epochs the leader never had.
    let (_dir, f) = cache_with(&[(4, 20)]);
    let step = truncation_step(&f, Offset(60), Offset(0), 4, Some(entry(2, 50)));
    assert_eq!(
        step,
        TruncationStep::Done {
            truncate_to: Offset(20)
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Simulation: elections and replication, every truncation checked against the divergence point
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Elect(usize),
    Append(usize),
    Replicate(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3).prop_map(Op::Elect),
        (1usize..4).prop_map(Op::Append),
        ((0usize..3), (0usize..6)).prop_map(|(f, k)| Op::Replicate(f, k)),
    ]
}

/// One replica of the simulation: its log as the epoch each offset was written in (data of one
/// epoch at one offset is the same on every replica: one leader per epoch), and its cache.
struct Replica {
    _dir: tempfile::TempDir,
    log: Vec<u32>,
    cache: LeaderEpochCache,
}

/// The follower's truncation against `leader`, by repeated `truncation_step` as the broker does.
fn reconcile(follower: &mut Replica, leader: &Replica) -> Offset {
    let leader_end = Offset(leader.log.len() as u64);
    for _ in 0..64 {
        let local_end = Offset(follower.log.len() as u64);
        let Some(latest) = follower.cache.latest() else {
            return local_end;
        };
        let answer = leader.cache.end_offset_for(latest.epoch, leader_end);
        // The simulation keeps no high watermark; 0 is the safe fallback.
        let step = truncation_step(&follower.cache, local_end, Offset(0), latest.epoch, answer);
        let to = step.truncate_to();
        assert!(to <= local_end);
        follower.log.truncate(to.0 as usize);
        follower.cache.truncate_from_end(to).unwrap();
        if let TruncationStep::Done { .. } = step {
            return to;
        }
    }
    panic!("truncation did not converge");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random elections (clean or not), appends and partial replication among three replicas:
    /// every follower truncation stops exactly where its log stops agreeing with the leader's.
    #[test]
    fn truncation_stops_exactly_at_the_divergence_point(ops in proptest::collection::vec(op(), 1..40)) {
        let mut replicas: Vec<Replica> = (0..3)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                let cache = LeaderEpochCache::open(dir.path()).unwrap();
                Replica { _dir: dir, log: Vec::new(), cache }
            })
            .collect();
        let mut leader: Option<usize> = None;
        let mut epoch = 0u32;
        for op in ops {
            match op {
                Op::Elect(r) => {
                    epoch += 1;
                    leader = Some(r);
                    let end = Offset(replicas[r].log.len() as u64);
                    prop_assert!(replicas[r].cache.assign(epoch, end).unwrap());
                }
                Op::Append(n) => {
                    let Some(l) = leader else { continue };
                    replicas[l].log.extend(std::iter::repeat_n(epoch, n));
                }
                Op::Replicate(f, k) => {
                    let Some(l) = leader else { continue };
                    if f == l {
                        continue;
                    }
                    let (follower, leader_replica) = if f < l {
                        let (a, b) = replicas.split_at_mut(l);
                        (&mut a[f], &b[0])
                    } else {
                        let (a, b) = replicas.split_at_mut(f);
                        (&mut b[0], &a[l])
                    };
                    let common = follower
                        .log
                        .iter()
                        .zip(&leader_replica.log)
                        .take_while(|(x, y)| x == y)
                        .count();
                    let to = reconcile(follower, leader_replica);
                    prop_assert_eq!(to, Offset(common as u64), "follower {:?} leader {:?}", follower.log, leader_replica.log);
                    // Fetch up to k entries, recording each epoch as the leader reports it.
                    let from = follower.log.len();
                    let until = (from + k).min(leader_replica.log.len());
                    for o in from..until {
                        let e = leader_replica.log[o];
                        follower.log.push(e);
                        follower.cache.assign(e, Offset(o as u64)).unwrap();
                    }
                }
            }
        }
    }
}
