//! The command line against a real broker: topics, produce, consume, errors.

use crate::support::{BrokerClient, CONDITION_TIMEOUT, TestBroker};
use sluiceway_testing::{wait_for_blocking, wait_until_blocking};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn topic_create_list_describe_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let o = b.run(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=86400000",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = b.run(
        &[
            "topic",
            "create",
            "audit.log_v2",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let o = b.run(&["topic", "list"], b"");
    assert_eq!(stdout(&o), "audit.log_v2\norders\n");

    let o = b.run(&["topic", "describe", "orders"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("Partition:"))
        .collect();
    assert_eq!(
        lines,
        [
            "Partition: 0  Leader: 0  Replicas: 0  Isr: 0  LeaderEpoch: 0",
            "Partition: 1  Leader: 0  Replicas: 0  Isr: 0  LeaderEpoch: 0",
            "Partition: 2  Leader: 0  Replicas: 0  Isr: 0  LeaderEpoch: 0",
        ]
    );
    assert!(text.contains("retention.ms=86400000"), "{text}");

    // Errors: one line on stderr, `error: CODE: message`, non-zero exit.
    for (args, code) in [
        (
            &["topic", "create", "orders", "--partitions", "1"][..],
            "TOPIC_ALREADY_EXISTS",
        ),
        (
            &["topic", "create", "bad/name", "--partitions", "1"][..],
            "INVALID_TOPIC",
        ),
        (
            &["topic", "create", "x", "--partitions", "0"][..],
            "INVALID_PARTITIONS",
        ),
        (
            &[
                "topic",
                "create",
                "x",
                "--partitions",
                "1",
                "--replication-factor",
                "3",
            ][..],
            "INVALID_REPLICATION_FACTOR",
        ),
        (
            &[
                "topic",
                "create",
                "x",
                "--partitions",
                "1",
                "--config",
                "segment.bytes=12",
            ][..],
            "INVALID_CONFIG",
        ),
        (
            &[
                "topic",
                "create",
                "x",
                "--partitions",
                "1",
                "--config",
                "no.such=1",
            ][..],
            "INVALID_CONFIG",
        ),
        (
            &["topic", "describe", "nope"][..],
            "UNKNOWN_TOPIC_OR_PARTITION",
        ),
        (
            &["topic", "delete", "nope"][..],
            "UNKNOWN_TOPIC_OR_PARTITION",
        ),
    ] {
        let o = b.run(args, b"");
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = stderr(&o);
        assert!(
            err.starts_with(&format!("error: {code}: ")),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    let o = b.run(&["topic", "delete", "audit.log_v2"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&b.run(&["topic", "list"], b"")), "orders\n");
    assert!(!b.data_dir.join("audit.log_v2-0").exists());
}

#[test]
fn produce_then_consume_text_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    assert!(
        b.run(&["topic", "create", "t", "--partitions", "2"], b"")
            .status
            .success()
    );

    let o = b.run(&["produce", "t", "--partition", "1"], b"hello\nworld\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = b.run(
        &[
            "consume",
            "t",
            "--partition",
            "1",
            "--from-beginning",
            "--max-messages",
            "2",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello\nworld\n");

    // Keys: the same key always lands on the same partition.
    let o = b.run(
        &["produce", "t", "--key-separator", ":", "--acks", "1"],
        b"k:v1\nk:v2\nk:v3\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = b.run(
        &[
            "consume",
            "t",
            "--from-beginning",
            "--format",
            "json",
            "--timeout-ms",
            "500",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5, "{rows:?}");
    let keyed: Vec<&serde_json::Value> = rows.iter().filter(|r| r["key"] == "k").collect();
    assert_eq!(keyed.len(), 3);
    let p = keyed[0]["partition"].clone();
    assert!(keyed.iter().all(|r| r["partition"] == p));
    let values: Vec<&str> = keyed.iter().map(|r| r["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["v1", "v2", "v3"]);
    for r in &rows {
        for field in ["topic", "partition", "offset", "timestamp", "key", "value"] {
            assert!(r.get(field).is_some(), "{field} missing in {r}");
        }
    }
    // The first line's field order is the documented one.
    assert!(
        stdout(&o)
            .lines()
            .next()
            .unwrap()
            .starts_with("{\"topic\":\"t\",\"partition\":")
    );

    // --base64 and --offset.
    let o = b.run(
        &[
            "consume",
            "t",
            "--partition",
            "1",
            "--offset",
            "1",
            "--max-messages",
            "1",
            "--format",
            "json",
            "--base64",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let row: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(row["offset"], 1);
    assert_eq!(row["value"], "d29ybGQ="); // base64("world")

    // A line without the separator is refused.
    let o = b.run(&["produce", "t", "--key-separator", ":"], b"no-separator\n");
    assert!(!o.status.success());
    assert!(
        stderr(&o).starts_with("error: INVALID_ARGUMENT: "),
        "{}",
        stderr(&o)
    );

    // Unknown topic or partition.
    let o = b.run(&["produce", "nope"], b"x\n");
    assert!(
        stderr(&o).starts_with("error: UNKNOWN_TOPIC_OR_PARTITION: "),
        "{}",
        stderr(&o)
    );
    let o = b.run(
        &["consume", "t", "--partition", "9", "--timeout-ms", "100"],
        b"",
    );
    assert!(
        stderr(&o).starts_with("error: UNKNOWN_TOPIC_OR_PARTITION: "),
        "{}",
        stderr(&o)
    );
    // An offset above the log end.
    let o = b.run(
        &[
            "consume",
            "t",
            "--partition",
            "1",
            "--offset",
            "1000",
            "--timeout-ms",
            "100",
        ],
        b"",
    );
    assert!(
        stderr(&o).starts_with("error: OFFSET_OUT_OF_RANGE: "),
        "{}",
        stderr(&o)
    );
}

/// Waits until the wall clock (milliseconds) reads later than `t`, and returns its reading.
fn clock_after(t: i64) -> i64 {
    wait_for_blocking("the clock moves on", CONDITION_TIMEOUT, || {
        let now = crate::support::now_ms();
        (now > t).then_some(now)
    })
}

#[test]
fn consume_from_time_and_latest() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    assert!(
        b.run(&["topic", "create", "t", "--partitions", "1"], b"")
            .status
            .success()
    );
    assert!(b.run(&["produce", "t"], b"old\n").status.success());
    // `cut` lies strictly between the two messages' timestamps: wait for the clock to move on
    // past "old" (stamped before its produce returned), and past `cut` before "new".
    let cut = clock_after(crate::support::now_ms());
    clock_after(cut);
    assert!(b.run(&["produce", "t"], b"new\n").status.success());
    let o = b.run(
        &[
            "consume",
            "t",
            "--from-time",
            &cut.to_string(),
            "--timeout-ms",
            "300",
        ],
        b"",
    );
    assert_eq!(stdout(&o), "new\n", "{}", stderr(&o));
    // Default start is the end: nothing old is printed.
    let o = b.run(&["consume", "t", "--timeout-ms", "300"], b"");
    assert!(o.status.success());
    assert_eq!(stdout(&o), "");
}

#[test]
fn unreachable_broker_and_bad_config() {
    let o = std::process::Command::new(crate::support::bin())
        .args(["topic", "list", "--bootstrap", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).starts_with("error: BROKER_NOT_AVAILABLE: "),
        "{}",
        stderr(&o)
    );

    let tmp = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(crate::support::bin())
        .args(["broker", "--listen", "not-an-address", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).starts_with("error: INVALID_CONFIG: invalid config listen: "),
        "{}",
        stderr(&o)
    );

    // A second broker on a data directory in use is refused.
    let running = crate::support::TestBroker::start(tmp.path());
    let o = std::process::Command::new(crate::support::bin())
        .args(["broker", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&running.data_dir)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("in use by another broker"),
        "{}",
        stderr(&o)
    );
    drop(running);

    let cfg = tmp.path().join("broker.toml");
    std::fs::write(&cfg, "[topic_defaults]\n\"retention.ms\" = \"soon\"\n").unwrap();
    let o = std::process::Command::new(crate::support::bin())
        .args(["broker", "--config"])
        .arg(&cfg)
        .env("SLUICEWAY_DATA_DIR", tmp.path().join("d"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("retention.ms"), "{}", stderr(&o));

    // Settings given through the environment are range-checked like flags.
    let o = std::process::Command::new(crate::support::bin())
        .args(["broker", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("d"))
        .env("SLUICEWAY_GROUP_INITIAL_REBALANCE_DELAY_MS", "3600000")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).starts_with(
            "error: INVALID_CONFIG: invalid config group_initial_rebalance_delay_ms: 3600000 is outside 0..="
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn many_lines_through_the_command_line_keep_per_key_order() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    assert!(
        b.run(&["topic", "create", "lines", "--partitions", "4"], b"")
            .status
            .success()
    );
    let mut input = String::new();
    for i in 0..2000 {
        input.push_str(&format!("key{}|value-{i}\n", i % 10));
    }
    let o = b.run(
        &["produce", "lines", "--key-separator", "|"],
        input.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = b.run(
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--format",
            "json",
            "--max-messages",
            "2000",
            "--timeout-ms",
            "5000",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2000);
    // Per key: one partition, values in the order they were written.
    for k in 0..10 {
        let key = format!("key{k}");
        let mine: Vec<&serde_json::Value> =
            rows.iter().filter(|r| r["key"] == key.as_str()).collect();
        assert_eq!(mine.len(), 200);
        assert!(mine.iter().all(|r| r["partition"] == mine[0]["partition"]));
        let want: Vec<String> = (0..2000)
            .filter(|i| i % 10 == k)
            .map(|i| format!("value-{i}"))
            .collect();
        let got: Vec<&str> = mine.iter().map(|r| r["value"].as_str().unwrap()).collect();
        assert_eq!(got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_environment_and_flags_merge() {
    use sluiceway_proto::v1;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("broker.toml");
    // The file says broker 1 and a retention default; the environment overrides the id.
    std::fs::write(
        &cfg,
        "broker_id = 1\nlisten = \"127.0.0.1:1\"\n[topic_defaults]\n\"retention.ms\" = 3600000\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let b = TestBroker::start_full(
        tmp.path(),
        &["--config", &cfg],
        &[("SLUICEWAY_BROKER_ID", "5")],
    );
    let mut c = b.client().await;
    let brokers = c
        .registry
        .list_brokers(v1::ListBrokersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(brokers.brokers[0].broker_id, 5);
    // The --listen flag (127.0.0.1:0) won over the file's port 1.
    assert_ne!(brokers.brokers[0].address, "127.0.0.1:1");
    crate::support::create_topic(&mut c, "cfg", 1, &[]).await;
    let d = c
        .admin
        .describe_topic(v1::DescribeTopicRequest { name: "cfg".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.effective_configs["retention.ms"], "3600000");
    assert!(d.configs.is_empty());
}

/// A `sluiceway` process whose standard output lines are collected by a thread.
struct Running {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn spawn(b: &TestBroker, args: &[&str]) -> Running {
        use std::io::BufRead;
        let mut child = b
            .cli()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                match l {
                    Ok(l) => sink.lock().unwrap().push(l),
                    Err(_) => return,
                }
            }
        });
        Running {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for the process to exit by itself (bounded: killed after two minutes).
    fn wait(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        // On a timeout the panic drops `self`, whose `Drop` kills the process.
        let status = wait_for_blocking(
            "a consume process stops by itself",
            std::time::Duration::from_secs(120),
            || self.child.try_wait().unwrap(),
        );
        self.reader.take().unwrap().join().unwrap();
        let mut err = String::new();
        use std::io::Read;
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        (status, self.lines(), err)
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produces `values` to one partition through the command line.
fn produce_to(b: &TestBroker, topic: &str, partition: u32, values: &[String]) {
    let mut input = values.join("\n");
    input.push('\n');
    let o = b.run(
        &["produce", topic, "--partition", &partition.to_string()],
        input.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Produces `per_partition` values `{prefix}p{P}-{I}` to each of `partitions` partitions
/// through the command line; returns them all.
fn produce_to_each(
    b: &TestBroker,
    topic: &str,
    partitions: u32,
    per_partition: usize,
    prefix: &str,
) -> std::collections::BTreeSet<String> {
    let mut all = std::collections::BTreeSet::new();
    for p in 0..partitions {
        let vals: Vec<String> = (0..per_partition)
            .map(|i| format!("{prefix}p{p}-{i}"))
            .collect();
        produce_to(b, topic, p, &vals);
        all.extend(vals);
    }
    all
}

/// Waits for two `consume --group` processes to stop by themselves: both exit 0, each printed
/// a share, and together they printed every message of `all` exactly once.
fn assert_split_exactly_once(a: Running, c: Running, all: &std::collections::BTreeSet<String>) {
    let (sa, la, ea) = a.wait();
    let (sc, lc, ec) = c.wait();
    assert!(sa.success(), "{ea}");
    assert!(sc.success(), "{ec}");
    assert!(
        !la.is_empty() && !lc.is_empty(),
        "each member printed a share: {} and {} lines",
        la.len(),
        lc.len()
    );
    let together: Vec<String> = la.into_iter().chain(lc).collect();
    let printed = together.len();
    let set: std::collections::BTreeSet<String> = together.into_iter().collect();
    assert_eq!(printed, set.len(), "no message printed twice");
    assert_eq!(&set, all, "every message printed");
}

/// Polls `group describe G` until the group is Stable with `members` members (bounded).
fn wait_for_stable_group(b: &TestBroker, group: &str, members: usize) {
    let want = format!("Members: {members}");
    wait_until_blocking(
        &format!("group {group} is Stable with {members} members"),
        std::time::Duration::from_secs(60),
        || {
            let text = stdout(&b.run(&["group", "describe", group], b""));
            text.contains("State: Stable") && text.contains(&want)
        },
    );
}

/// Two runs of the same `--offset-store` command with `--max-messages`: the second starts
/// exactly after the last record the first printed (no gap, no repeat), also when a poll
/// returned more records than were printed, and on several partitions.
#[test]
fn consume_with_an_offset_store_continues_where_the_last_run_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let store = tmp.path().join("offsets");
    let store = store.to_str().unwrap();
    assert!(
        b.run(&["topic", "create", "one", "--partitions", "1"], b"")
            .status
            .success()
    );
    let values: Vec<String> = (0..600).map(|i| format!("m{i}")).collect();
    produce_to(&b, "one", 0, &values);
    let args = [
        "consume",
        "one",
        "--offset-store",
        store,
        "--from-beginning",
        "--max-messages",
        "300",
        "--timeout-ms",
        "10000",
    ];
    let o = b.run(&args, b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let first: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(first, values[..300]);
    let o = b.run(&args, b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let second: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(second, values[300..], "the 301st message comes first");
    // Everything was read: a third run prints nothing.
    let o = b.run(
        &[
            "consume",
            "one",
            "--offset-store",
            store,
            "--timeout-ms",
            "300",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");

    // Three partitions, three runs of 250 with a store of their own: every message once.
    assert!(
        b.run(&["topic", "create", "three", "--partitions", "3"], b"")
            .status
            .success()
    );
    let mut all = std::collections::BTreeSet::new();
    for p in 0..3u32 {
        let vals: Vec<String> = (0..200).map(|i| format!("p{p}-{i}")).collect();
        all.extend(vals.iter().cloned());
        produce_to(&b, "three", p, &vals);
    }
    let store3 = tmp.path().join("offsets3");
    let store3 = store3.to_str().unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let o = b.run(
            &[
                "consume",
                "three",
                "--offset-store",
                store3,
                "--from-beginning",
                "--max-messages",
                "250",
                "--timeout-ms",
                "3000",
            ],
            b"",
        );
        assert!(o.status.success(), "{}", stderr(&o));
        seen.extend(stdout(&o).lines().map(str::to_owned));
    }
    assert_eq!(seen.len(), 600, "no repeat");
    let seen_set: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen_set, all, "no gap");
    // Per partition, in order.
    for p in 0..3 {
        let prefix = format!("p{p}-");
        let mine: Vec<&String> = seen.iter().filter(|v| v.starts_with(&prefix)).collect();
        let want: Vec<String> = (0..200).map(|i| format!("p{p}-{i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }
}

/// Two `consume --group g` processes started together split a 4-partition topic (each
/// message printed by exactly one of them); `--group h` afterwards reads everything again.
#[test]
fn two_group_consumers_split_the_partitions_and_another_group_reads_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    assert!(
        b.run(&["topic", "create", "work", "--partitions", "4"], b"")
            .status
            .success()
    );
    let member = [
        "consume",
        "work",
        "--group",
        "g",
        "--from-beginning",
        "--timeout-ms",
        "8000",
        "--consumer-property",
        "session.timeout.ms=6000",
        "--consumer-property",
        "heartbeat.interval.ms=100",
    ];
    let a = Running::spawn(&b, &member);
    let c = Running::spawn(&b, &member);
    wait_for_stable_group(&b, "g", 2);
    let all = produce_to_each(&b, "work", 4, 100, "");
    assert_split_exactly_once(a, c, &all);

    // Another group sees every message again.
    let o = b.run(
        &[
            "consume",
            "work",
            "--group",
            "h",
            "--from-beginning",
            "--max-messages",
            "400",
            "--timeout-ms",
            "10000",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(got.len(), 400);
    let set: std::collections::BTreeSet<String> = got.into_iter().collect();
    assert_eq!(set, all);
}

/// One of two `consume --group` processes is killed with SIGKILL: after the session timeout
/// the survivor owns every partition and prints every message produced after the kill.
#[test]
fn a_killed_group_consumer_s_partitions_move_to_the_survivor() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    assert!(
        b.run(&["topic", "create", "work", "--partitions", "4"], b"")
            .status
            .success()
    );
    let member = [
        "consume",
        "work",
        "--group",
        "g",
        "--from-beginning",
        "--timeout-ms",
        "15000",
        "--consumer-property",
        "session.timeout.ms=3000",
        "--consumer-property",
        "heartbeat.interval.ms=100",
    ];
    let mut victim = Running::spawn(&b, &member);
    let survivor = Running::spawn(&b, &member);
    wait_for_stable_group(&b, "g", 2);
    let before = produce_to_each(&b, "work", 4, 50, "before-");
    // Both have printed their share before one dies.
    wait_until_blocking(
        "both members printed what was produced before the kill",
        std::time::Duration::from_secs(60),
        || victim.lines().len() + survivor.lines().len() >= before.len(),
    );
    let victim_lines = victim.lines();
    assert!(!victim_lines.is_empty(), "the victim owned partitions");
    victim.kill9();

    let after = produce_to_each(&b, "work", 4, 50, "after-");
    let (status, lines, err) = survivor.wait();
    assert!(status.success(), "{err}");
    let printed: std::collections::BTreeSet<String> = lines.iter().cloned().collect();
    assert!(
        after.is_subset(&printed),
        "missing after the kill: {:?}",
        after.difference(&printed).collect::<Vec<_>>()
    );
    // Nothing produced before the kill was lost either (at least once across both).
    let mut union: std::collections::BTreeSet<String> = victim_lines.into_iter().collect();
    union.extend(printed);
    assert!(before.is_subset(&union));
}

/// `--bootstrap` with a dead first address: produce and consume fail over to the live one.
#[test]
fn produce_and_consume_with_a_dead_first_bootstrap_address() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    assert!(
        b.run(&["topic", "create", "t", "--partitions", "2"], b"")
            .status
            .success()
    );
    let bootstrap = format!("127.0.0.1:1,{}", b.addr);
    let o = b.run(
        &["produce", "t", "--bootstrap", &bootstrap, "--acks", "all"],
        b"a\nb\nc\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = b.run(
        &[
            "consume",
            "t",
            "--bootstrap",
            &bootstrap,
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-ms",
            "5000",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut got: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, ["a", "b", "c"]);
}

/// `--compression`, `--linger-ms` and `--producer-property` reach the producer; a bad
/// property is refused with the key named; `--group` with `--offset` is refused.
#[test]
fn producer_and_consumer_properties_pass_through() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    assert!(
        b.run(&["topic", "create", "z", "--partitions", "1"], b"")
            .status
            .success()
    );
    let input: String = (0..100).map(|i| format!("v{i}\n")).collect();
    let o = b.run(
        &[
            "produce",
            "z",
            "--compression",
            "zstd",
            "--linger-ms",
            "20",
            "--producer-property",
            "batch.size=4096",
        ],
        input.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = b.run(
        &[
            "consume",
            "z",
            "--from-beginning",
            "--max-messages",
            "100",
            "--consumer-property",
            "max.poll.records=7",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), input);

    let o = b.run(
        &["produce", "z", "--producer-property", "no.such=1"],
        b"x\n",
    );
    assert!(
        stderr(&o).starts_with("error: INVALID_CONFIG: ") && stderr(&o).contains("no.such"),
        "{}",
        stderr(&o)
    );
    let o = b.run(
        &["consume", "z", "--consumer-property", "fetch.max.wait.ms=x"],
        b"",
    );
    assert!(
        stderr(&o).starts_with("error: INVALID_CONFIG: "),
        "{}",
        stderr(&o)
    );
    let o = b.run(&["consume", "z", "--group", "g", "--offset", "0"], b"");
    assert!(
        stderr(&o).starts_with("error: INVALID_ARGUMENT: "),
        "{}",
        stderr(&o)
    );
}

/// README's quick-start block, run line by line with `sh` against a test broker: every
/// command exits 0 and the offset-store pair continues without gap or repeat.
#[test]
fn readme_quick_start_runs() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("## Quick start")
        .nth(1)
        .expect("a Quick start section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    let tmp = tempfile::tempdir().unwrap();
    // The broker a reader of the README runs: with the 3 s initial rebalance delay, which the
    // group example's short --timeout-ms must not count (regression: it used to, and the
    // example printed nothing).
    let b = TestBroker::start_with_broker_defaults(tmp.path());
    let work = tmp.path().join("cwd");
    std::fs::create_dir(&work).unwrap();
    let bin_dir = std::path::Path::new(crate::support::bin())
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    for line in block.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let o = std::process::Command::new("sh")
            .args(["-c", line])
            .current_dir(&work)
            .env("PATH", &path)
            .env("SLUICEWAY_BOOTSTRAP", &b.addr)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{line}: {}", stderr(&o));
        outputs.push((line, stdout(&o)));
    }
    let out = |needle: &str| {
        outputs
            .iter()
            .filter(|(l, _)| l.contains(needle))
            .map(|(_, o)| o.clone())
            .collect::<Vec<_>>()
    };
    let json = out("--format json");
    assert_eq!(json[0].lines().count(), 3, "{}", json[0]);
    let stored = out("--offset-store");
    let mut values: Vec<&str> = stored.iter().flat_map(|o| o.lines()).collect();
    assert_eq!(values.len(), 3, "{stored:?}");
    values.sort();
    assert_eq!(values, ["again", "hello", "world"]);
    assert_eq!(out("--group readers")[0].lines().count(), 3);
    assert!(out("group describe")[0].contains("Group: readers"));
    assert!(
        out("bench produce")[0].contains("20000 msgs"),
        "{:?}",
        out("bench produce")
    );
}

/// SIGTERM stops a `consume --offset-store` that has no stop condition; what it printed is
/// committed, so the next run prints only what came after.
#[test]
fn sigterm_commits_what_consume_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let store = tmp.path().join("offsets");
    let store = store.to_str().unwrap();
    assert!(
        b.run(&["topic", "create", "t", "--partitions", "2"], b"")
            .status
            .success()
    );
    let first: Vec<String> = (0..100).map(|i| format!("a{i}")).collect();
    produce_to(&b, "t", 0, &first[..50]);
    produce_to(&b, "t", 1, &first[50..]);
    let run = Running::spawn(
        &b,
        &["consume", "t", "--offset-store", store, "--from-beginning"],
    );
    wait_until_blocking(
        "consume printed the first records",
        std::time::Duration::from_secs(60),
        || run.lines().len() >= first.len(),
    );
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let (status, lines, err) = run.wait();
    assert!(status.success(), "{err}");
    assert_eq!(lines.len(), 100);

    let second: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
    produce_to(&b, "t", 1, &second);
    let o = b.run(
        &[
            "consume",
            "t",
            "--offset-store",
            store,
            "--from-beginning",
            "--timeout-ms",
            "1000",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), second);
}

/// Regression: `consume --timeout-ms` counted time spent blocked writing to a slow reader as
/// time without messages, so a reader that stalled for longer than the timeout got a clean
/// exit after a fraction of what was waiting, as if the topic were drained. The reader here
/// reads a few lines, stalls 3 s (the pipe fills and the command blocks writing), then reads
/// the rest: every message arrives and the exit is 0. `max.poll.records=50` keeps each poll's
/// output (~2 KiB) below the command's output buffer, so the command blocks in the flush that
/// follows the poll, where the timer used to restart too early.
#[test]
fn consume_timeout_does_not_count_time_blocked_on_a_slow_reader() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    assert!(
        b.run(&["topic", "create", "slow", "--partitions", "1"], b"")
            .status
            .success()
    );
    // ~200 KiB in all: several times a pipe's buffer.
    let values: Vec<String> = (0..5000)
        .map(|i| format!("message-{i:05}-{}", "x".repeat(24)))
        .collect();
    produce_to(&b, "slow", 0, &values);
    let mut child = b
        .cli()
        .args([
            "consume",
            "slow",
            "--from-beginning",
            "--timeout-ms",
            "1000",
            "--consumer-property",
            "max.poll.records=50",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(out).lines();
        let mut got: Vec<String> = lines.by_ref().take(10).map(Result::unwrap).collect();
        // The scenario, not a synchronisation: a reader that stalls for longer than the
        // command's 1 s `--timeout-ms`, so that the pipe fills and the command blocks writing.
        std::thread::sleep(std::time::Duration::from_secs(3));
        got.extend(lines.map_while(Result::ok));
        let _ = tx.send(got);
    });
    // Bounded: the command must stop by itself within a minute.
    let got = match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(got) => got,
        Err(_) => {
            let _ = child.kill();
            panic!("consume did not stop");
        }
    };
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(
        got.len(),
        values.len(),
        "every waiting message arrives; {err}"
    );
    assert_eq!(got, values);
}

/// The scenario of issue 9: two `consume --group g1` processes with the default session and
/// heartbeat settings, started together on a 6-partition topic holding 6,000 messages, both
/// exit 0 after `--timeout-ms`, print every message exactly once between them, and each prints
/// a share. The broker runs with its defaults too: its initial rebalance delay (3 s) is what
/// lets the second process join the first generation; without it the first one took all six
/// partitions and drained them before the second joined.
#[test]
fn two_group_consumers_with_default_settings_split_six_partitions() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with_broker_defaults(tmp.path());
    assert!(
        b.run(&["topic", "create", "six", "--partitions", "6"], b"")
            .status
            .success()
    );
    let all = produce_to_each(&b, "six", 6, 1000, "");
    let member = [
        "consume",
        "six",
        "--group",
        "g1",
        "--from-beginning",
        "--timeout-ms",
        "10000",
    ];
    let a = Running::spawn(&b, &member);
    let c = Running::spawn(&b, &member);
    assert_split_exactly_once(a, c, &all);
}

/// `consume --format json` prints each record's headers (magic 2 records), in order, with
/// values as text or base64 like the value; records without headers have an empty list.
#[test]
fn consume_json_shows_headers() {
    use sluiceway_core::TimestampMs;
    use sluiceway_core::format::{Compression, Header, RecordBatchBuilder};
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = b.client().await;
        crate::support::create_topic(&mut c, "h", 1, &[]).await;
        let mut batch = RecordBatchBuilder::new(Compression::Gzip);
        batch.push(
            TimestampMs(1_700_000_000_000),
            Some(b"k"),
            Some(b"v"),
            [
                Header {
                    key: "trace",
                    value: Some(b"t1"),
                },
                Header {
                    key: "gone",
                    value: None,
                },
            ],
        );
        let r = crate::support::produce(&mut c, "h", 0, batch.finish().unwrap()).await;
        assert_eq!(r.error_code, 0, "{}", r.error_message);
        let r = crate::support::produce(&mut c, "h", 0, crate::support::set_of(&["plain"])).await;
        assert_eq!(r.error_code, 0, "{}", r.error_message);
    });
    for (base64, trace) in [(false, "t1"), (true, "dDE=")] {
        let mut args = vec!["consume", "h", "--from-beginning", "--format", "json"];
        args.extend(["--max-messages", "2"]);
        if base64 {
            args.push("--base64");
        }
        let o = b.run(&args, b"");
        assert!(o.status.success(), "{}", stderr(&o));
        let rows: Vec<serde_json::Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            rows[0]["headers"],
            serde_json::json!([{"key": "trace", "value": trace}, {"key": "gone", "value": null}]),
            "{rows:?}"
        );
        assert_eq!(rows[1]["headers"], serde_json::json!([]), "{rows:?}");
    }
}

/// `produce --header KEY=VALUE` (repeatable) adds the headers to every message, in order;
/// `consume --format json` shows them. A header without `=` is refused before anything is sent.
#[test]
fn produce_header_flags_reach_the_consumer() {
    let tmp = tempfile::tempdir().unwrap();
    let b = TestBroker::start(tmp.path());
    let o = b.run(&["topic", "create", "ph", "--partitions", "1"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = b.run(
        &[
            "produce", "ph", "--header", "trace=t1", "--header", "empty=", "--header", "trace=t2",
        ],
        b"a\nb\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = b.run(
        &[
            "consume",
            "ph",
            "--from-beginning",
            "--format",
            "json",
            "--max-messages",
            "2",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(
            row["headers"],
            serde_json::json!([
                {"key": "trace", "value": "t1"},
                {"key": "empty", "value": ""},
                {"key": "trace", "value": "t2"}
            ]),
            "{rows:?}"
        );
    }
    let o = b.run(&["produce", "ph", "--header", "novalue"], b"c\n");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("KEY=VALUE"), "{}", stderr(&o));
}
