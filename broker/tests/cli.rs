//! The command line against a real broker: topics, produce, consume, errors.

use crate::support::TestBroker;

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
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cut = crate::support::now_ms();
    std::thread::sleep(std::time::Duration::from_millis(20));
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
