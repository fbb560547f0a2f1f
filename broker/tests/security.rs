//! Security (issue #16) against real brokers: TLS listeners (certificates made per test with
//! rcgen), mutual TLS principals, SASL credentials checked against SCRAM-SHA-256 records in the
//! registry, ACLs, and a 3-broker cluster on etcd with TLS and authentication between brokers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sluiceway_core::acl::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};
use sluiceway_core::client::{
    Admin, AdminConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, OffsetSpec, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use sluiceway_core::{Error, ErrorCode};

use crate::client::{tps, value};
use crate::support::{BrokerClient, TEST_TIMEOUT, TestBroker, bounded};

/// A CA, its broker certificate (localhost, 127.0.0.1), and client certificates, as PEM files.
pub struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    pub ca_pem: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Pki {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, cert.pem()).unwrap();
        Pki {
            dir,
            ca: Issuer::new(params, key),
            ca_pem,
        }
    }

    /// A certificate with subject CN `cn` (valid for localhost and 127.0.0.1): (cert, key).
    pub fn issue(&self, cn: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (
            self.dir.join(format!("{cn}.pem")),
            self.dir.join(format!("{cn}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// Broker flags for a TLS listener with this CA (client certificates required).
    pub fn broker_flags(&self, protocol: &str) -> Vec<String> {
        let (c, k) = self.issue("broker");
        vec![
            "--security-protocol".into(),
            protocol.into(),
            "--ssl-certificate-location".into(),
            c.display().to_string(),
            "--ssl-key-location".into(),
            k.display().to_string(),
            "--ssl-ca-location".into(),
            self.ca_pem.display().to_string(),
        ]
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Client settings for SSL with this CA and (optionally) a client certificate.
fn ssl_settings(ca: &Path, cert: Option<&(PathBuf, PathBuf)>) -> Vec<(String, String)> {
    let mut v = vec![
        ("security.protocol".to_owned(), "SSL".to_owned()),
        ("ssl.ca.location".to_owned(), ca.display().to_string()),
    ];
    if let Some((c, k)) = cert {
        v.push((
            "ssl.certificate.location".to_owned(),
            c.display().to_string(),
        ));
        v.push(("ssl.key.location".to_owned(), k.display().to_string()));
    }
    v
}

fn with_bootstrap(addr: &str, settings: &[(String, String)]) -> Vec<(String, String)> {
    let mut v = vec![("bootstrap.servers".to_owned(), addr.to_owned())];
    v.extend_from_slice(settings);
    v
}

async fn admin_with(addr: &str, settings: &[(String, String)]) -> sluiceway_core::Result<Admin> {
    let mut c = AdminConfig::from_map(with_bootstrap(addr, settings))?;
    // Refusals are not retried; keep failing cases short anyway.
    c.common.request_timeout = Duration::from_secs(10);
    Admin::new(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_refuses_plaintext_and_unknown_ca_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "good");
    let rogue = Pki::new(dir.path(), "rogue");
    let b = TestBroker::start_with(dir.path(), &strs(&pki.broker_flags("SSL")));
    bounded(TEST_TIMEOUT, async {
        // A plaintext client cannot talk to a TLS listener.
        let e = admin_with(&b.addr, &[])
            .await
            .expect_err("plaintext refused");
        let m = sluiceway_core::error::error_chain(&e);
        assert!(
            m.contains("security.protocol") && m.contains("TLS"),
            "a plaintext client is told why: {m}"
        );

        // A certificate from an unknown CA is refused, and so is no certificate at all (the
        // broker requires one: it has --ssl-ca-location).
        let stranger = rogue.issue("mallory");
        let e = admin_with(&b.addr, &ssl_settings(&pki.ca_pem, Some(&stranger)))
            .await
            .expect_err("unknown CA refused");
        assert!(e.is_retriable() || e.code() != ErrorCode::None, "{e}");
        let e = admin_with(&b.addr, &ssl_settings(&pki.ca_pem, None))
            .await
            .expect_err("no client certificate refused");
        assert_ne!(e.code(), ErrorCode::None);
        // A client that does not trust the broker's CA refuses the broker.
        let alice = pki.issue("alice");
        let e = admin_with(&b.addr, &ssl_settings(&rogue.ca_pem, Some(&alice)))
            .await
            .expect_err("broker not trusted");
        assert!(
            sluiceway_core::error::error_chain(&e).contains("UnknownIssuer"),
            "{}",
            sluiceway_core::error::error_chain(&e)
        );

        // With the right CA and a certificate: topics, produce, consume.
        let settings = ssl_settings(&pki.ca_pem, Some(&alice));
        let admin = admin_with(&b.addr, &settings).await.expect("TLS admin");
        admin
            .create_topic(NewTopic::new("tls", 1))
            .await
            .expect("create over TLS");
        let producer = Producer::new(
            ProducerConfig::from_map(with_bootstrap(&b.addr, &settings)).expect("config"),
        )
        .await
        .expect("TLS producer");
        producer
            .send(ProducerRecord::new("tls", "over TLS"))
            .await
            .unwrap()
            .await
            .expect("delivered");
        let mut cc = ConsumerConfig::from_map(with_bootstrap(&b.addr, &settings)).unwrap();
        cc.auto_offset_reset = OffsetReset::Earliest;
        let consumer = Consumer::new(cc).await.expect("TLS consumer");
        consumer.assign(tps("tls", 1)).unwrap();
        let records = crate::client::poll_n(&consumer, 1).await;
        assert_eq!(value(&records[0]), "over TLS");
    })
    .await;
}

#[test]
fn client_security_settings_are_validated() {
    let e = AdminConfig::from_map([
        ("bootstrap.servers", "127.0.0.1:1"),
        ("security.protocol", "SSL"),
    ])
    .expect_err("SSL without a CA");
    assert_eq!(e.code(), ErrorCode::InvalidConfig);
    assert!(e.to_string().contains("ssl.ca.location"), "{e}");
    let e = AdminConfig::from_map([
        ("bootstrap.servers", "127.0.0.1:1"),
        ("security.protocol", "SASL_SSLX"),
    ])
    .expect_err("unknown protocol");
    assert!(e.to_string().contains("SASL_SSL"), "{e}");
}

fn sasl(user: &str, password: &str) -> Vec<(String, String)> {
    vec![
        ("security.protocol".into(), "SASL_PLAINTEXT".into()),
        ("sasl.mechanism".into(), "SCRAM-SHA-256".into()),
        ("sasl.username".into(), user.into()),
        ("sasl.password".into(), password.into()),
    ]
}

fn acl(
    principal: &str,
    op: AclOperation,
    rtype: ResourceType,
    name: &str,
    pattern: PatternType,
) -> AclBinding {
    AclBinding::new(rtype, name, pattern, principal, op, AclPermission::Allow)
}

async fn end_offset(admin: &Admin, topic: &str) -> u64 {
    admin
        .list_offsets(&[(TopicPartition::new(topic, 0), OffsetSpec::Latest)])
        .await
        .remove(0)
        .expect("list offsets")
        .high_watermark
        .0
}

async fn produce_one(addr: &str, settings: &[(String, String)], topic: &str) -> Result<(), Error> {
    let mut c = ProducerConfig::from_map(with_bootstrap(addr, settings)).expect("config");
    c.delivery_timeout = Duration::from_secs(10);
    let p = Producer::new(c).await?;
    let r = match p.send(ProducerRecord::new(topic, "v")).await {
        Ok(f) => f.await.map(|_| ()),
        Err(e) => Err(e),
    };
    let _ = p.close(Some(Duration::from_secs(5))).await;
    r
}

async fn consume_one(
    addr: &str,
    settings: &[(String, String)],
    topic: &str,
) -> Result<String, Error> {
    let mut cc = ConsumerConfig::from_map(with_bootstrap(addr, settings)).unwrap();
    cc.auto_offset_reset = OffsetReset::Earliest;
    let consumer = Consumer::new(cc).await?;
    consumer.assign(tps(topic, 1))?;
    loop {
        let records = consumer.poll(Duration::from_secs(5)).await?;
        if let Some(r) = records.first() {
            return Ok(value(r));
        }
    }
}

/// Authentication (SCRAM-SHA-256 credentials in the registry, the inter-broker user as super
/// user) and ACL enforcement on every request path of one broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_acls_guard_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(
        dir.path(),
        &[
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--inter-broker-username",
            "admin",
            "--inter-broker-password",
            "admin-secret",
            "--authorizer",
        ],
    );
    bounded(TEST_TIMEOUT, async {
        // No credentials, then a wrong password: SASL_AUTHENTICATION_FAILED, clearly.
        let e = admin_with(&b.addr, &[])
            .await
            .expect_err("anonymous refused");
        assert_eq!(e.code(), ErrorCode::SaslAuthenticationFailed, "{e}");
        assert!(e.to_string().contains("sasl.username"), "{e}");
        let root = admin_with(&b.addr, &sasl("admin", "admin-secret"))
            .await
            .expect("the inter-broker user");
        root.upsert_user("alice", "alice-pw", 0).await.unwrap();
        let e = admin_with(&b.addr, &sasl("alice", "wrong"))
            .await
            .expect_err("wrong password refused");
        assert_eq!(e.code(), ErrorCode::SaslAuthenticationFailed, "{e}");
        let users = root.list_users().await.unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].name, "alice");
        assert_eq!(users[0].mechanism, "SCRAM-SHA-256");

        root.create_topic(NewTopic::new("orders-eu", 1))
            .await
            .unwrap();
        root.create_topic(NewTopic::new("payments", 1))
            .await
            .unwrap();
        let alice = sasl("alice", "alice-pw");
        let alice_admin = admin_with(&b.addr, &alice)
            .await
            .expect("alice authenticates");

        // Without Write: nothing appended, and the error names principal, operation, topic.
        let e = produce_one(&b.addr, &alice, "orders-eu")
            .await
            .expect_err("no Write");
        assert_eq!(e.code(), ErrorCode::TopicAuthorizationFailed, "{e}");
        assert!(e.to_string().contains("User:alice"), "{e}");
        assert_eq!(end_offset(&root, "orders-eu").await, 0, "nothing appended");
        // Without Create on the cluster or topic, and without Alter for ACLs.
        let e = alice_admin
            .create_topic(NewTopic::new("mine", 1))
            .await
            .expect_err("no Create");
        assert_eq!(e.code(), ErrorCode::TopicAuthorizationFailed, "{e}");
        let e = alice_admin
            .create_acls(&[acl(
                "User:alice",
                AclOperation::All,
                ResourceType::Topic,
                "*",
                PatternType::Literal,
            )])
            .await
            .expect_err("no Alter on the cluster");
        assert_eq!(e.code(), ErrorCode::ClusterAuthorizationFailed, "{e}");

        // Write on a prefix: produce to orders-eu works, to payments does not.
        root.create_acls(&[acl(
            "User:alice",
            AclOperation::Write,
            ResourceType::Topic,
            "orders-",
            PatternType::Prefixed,
        )])
        .await
        .unwrap();
        produce_one(&b.addr, &alice, "orders-eu")
            .await
            .expect("Write through the prefixed ACL");
        assert_eq!(end_offset(&root, "orders-eu").await, 1);
        let e = produce_one(&b.addr, &alice, "payments")
            .await
            .expect_err("the prefix does not cover payments");
        assert_eq!(e.code(), ErrorCode::TopicAuthorizationFailed, "{e}");
        assert_eq!(end_offset(&root, "payments").await, 0);

        // Without Read: no fetch, no group.
        let e = consume_one(&b.addr, &alice, "orders-eu")
            .await
            .expect_err("no Read");
        assert_eq!(e.code(), ErrorCode::TopicAuthorizationFailed, "{e}");
        root.create_acls(&[acl(
            "User:alice",
            AclOperation::Read,
            ResourceType::Topic,
            "orders-eu",
            PatternType::Literal,
        )])
        .await
        .unwrap();
        assert_eq!(
            consume_one(&b.addr, &alice, "orders-eu").await.unwrap(),
            "v"
        );
        // Read on the topic is not enough to pose as a follower: a replica fetch (which moves
        // the high watermark and the ISR) and OffsetForLeaderEpoch need ClusterAction.
        let mut raw = b.client().await;
        let with_alice = |msg| {
            let mut r = tonic::Request::new(msg);
            let m = r.metadata_mut();
            m.insert_bin(
                sluiceway_core::client::security::USERNAME_METADATA_KEY,
                tonic::metadata::BinaryMetadataValue::from_bytes(b"alice"),
            );
            m.insert_bin(
                sluiceway_core::client::security::PASSWORD_METADATA_KEY,
                tonic::metadata::BinaryMetadataValue::from_bytes(b"alice-pw"),
            );
            r
        };
        let replica_fetch = sluiceway_proto::v1::FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            replica_id: Some(2),
            partitions: vec![sluiceway_proto::v1::FetchPartition {
                topic: "orders-eu".into(),
                partition: 0,
                fetch_offset: 0,
                max_bytes: 1 << 20,
                leader_epoch: Some(0),
            }],
        };
        let e = raw.log.fetch(with_alice(replica_fetch)).await.unwrap_err();
        let e = sluiceway_broker::errors::error_from_status(&e);
        assert_eq!(e.code(), ErrorCode::ClusterAuthorizationFailed, "{e}");
        assert!(e.to_string().contains("ClusterAction"), "{e}");
        let mut cc = ConsumerConfig::from_map(with_bootstrap(&b.addr, &alice)).unwrap();
        cc.auto_offset_reset = OffsetReset::Earliest;
        cc.group_id = Some("billing".into());
        let member = Consumer::new(cc).await.unwrap();
        member.subscribe(["orders-eu"]).await.unwrap();
        let e = member
            .poll(Duration::from_secs(10))
            .await
            .expect_err("no Read on the group");
        assert_eq!(e.code(), ErrorCode::GroupAuthorizationFailed, "{e}");

        // Without Delete: the topic stays.
        let e = alice_admin
            .delete_topic("orders-eu")
            .await
            .expect_err("no Delete");
        assert_eq!(e.code(), ErrorCode::TopicAuthorizationFailed, "{e}");
        assert!(root.describe_topic("orders-eu").await.is_ok());

        // A deleted user is refused at once (the verification cache does not outlive it).
        assert!(root.delete_user("alice").await.unwrap());
        let e = alice_admin.list_topics().await.expect_err("deleted user");
        assert_eq!(e.code(), ErrorCode::SaslAuthenticationFailed, "{e}");
        assert_eq!(root.list_acls().await.unwrap().len(), 2);
    })
    .await;
}

/// Three brokers on etcd with SASL_SSL and mutual TLS between them: replication and group
/// coordination run over TLS with the inter-broker credentials, and a leader killed with
/// kill -9 loses nothing acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secure_cluster_survives_a_leader_kill9_with_nothing_acknowledged_lost() {
    const TOPIC: &str = "secure";
    const MESSAGES: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cluster");
    let mut flags = pki.broker_flags("SASL_SSL");
    flags.extend(
        [
            "--inter-broker-username",
            "broker",
            "--inter-broker-password",
            "broker-secret",
            "--authorizer",
        ]
        .map(String::from),
    );
    let client_cert = pki.issue("app-host");
    let mut admin_settings = ssl_settings(&pki.ca_pem, Some(&client_cert));
    admin_settings[0].1 = "SASL_SSL".into();
    let with_user = |user: &str, password: &str| {
        let mut v = admin_settings.clone();
        v.push(("sasl.username".into(), user.into()));
        v.push(("sasl.password".into(), password.into()));
        v
    };
    let root_settings = with_user("broker", "broker-secret");
    let mut cluster =
        crate::cluster_support::TestCluster::start_secure(3, &strs(&flags), root_settings.clone())
            .await;
    bounded(Duration::from_secs(300), async {
        let bootstrap = cluster.bootstrap();
        let root = admin_with(&bootstrap, &root_settings).await.expect("admin");
        root.create_topic(
            NewTopic::new(TOPIC, 1)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await
        .expect("create");
        root.upsert_user("app", "app-secret", 0).await.unwrap();
        root.create_acls(&[
            acl(
                "User:app",
                AclOperation::Write,
                ResourceType::Topic,
                TOPIC,
                PatternType::Literal,
            ),
            acl(
                "User:app",
                AclOperation::Read,
                ResourceType::Topic,
                TOPIC,
                PatternType::Literal,
            ),
        ])
        .await
        .unwrap();
        // Every replica in sync (followers fetch over TLS with the inter-broker user).
        let leader = crate::cluster_support::wait_for(
            "three in-sync replicas",
            Duration::from_secs(60),
            async || {
                let d = root.describe_topic(TOPIC).await.ok()?;
                let p = &d.topic.partitions[0];
                (p.isr.len() == 3).then_some(p.leader_id).flatten()
            },
        )
        .await;

        let app = with_user("app", "app-secret");
        // A consumer group over TLS: FindCoordinator creates __consumer_offsets (replicated by
        // the brokers' TLS fetchers), and a commit is acknowledged once its ISR has it.
        root.create_acls(&[acl(
            "User:app",
            AclOperation::Read,
            ResourceType::Group,
            "secure-",
            PatternType::Prefixed,
        )])
        .await
        .unwrap();
        produce_one(&bootstrap, &app, TOPIC)
            .await
            .expect("first record");
        let mut gc = ConsumerConfig::from_map(with_bootstrap(&bootstrap, &app)).unwrap();
        gc.auto_offset_reset = OffsetReset::Earliest;
        gc.group_id = Some("secure-group".into());
        let member = Consumer::new(gc).await.expect("group member");
        member.subscribe([TOPIC]).await.expect("subscribe");
        let first = loop {
            if let Some(r) = member
                .poll(Duration::from_secs(5))
                .await
                .expect("poll")
                .first()
            {
                break value(r);
            }
        };
        assert_eq!(first, "v");
        member
            .commit()
            .await
            .expect("commit through the coordinator");
        member.close(None).await.expect("close");

        let mut pc = ProducerConfig::from_map(with_bootstrap(&bootstrap, &app)).unwrap();
        pc.acks = sluiceway_core::client::Acks::All;
        pc.delivery_timeout = Duration::from_secs(120);
        let producer = Producer::new(pc).await.expect("producer");
        let mut acked = Vec::new();
        for chunk in 0..(MESSAGES / 100) {
            if chunk == MESSAGES / 200 {
                cluster.kill9(leader);
                eprintln!(
                    "kill -9 broker {leader}, the leader, after {} acknowledged",
                    acked.len()
                );
            }
            let batch = producer
                .send_batch(
                    (chunk * 100..(chunk + 1) * 100)
                        .map(|i| ProducerRecord::new(TOPIC, format!("m-{i}")))
                        .collect(),
                )
                .await
                .expect("send");
            for (i, r) in batch.wait().await.into_iter().enumerate() {
                if let Ok(m) = r {
                    acked.push((
                        m.offset.expect("acks=all has an offset").0,
                        format!("m-{}", chunk * 100 + i),
                    ));
                }
            }
        }
        producer.close(None).await.expect("close");
        assert!(acked.len() > MESSAGES / 2, "{} acknowledged", acked.len());
        let after = root
            .describe_topic(TOPIC)
            .await
            .expect("describe")
            .topic
            .partitions[0]
            .clone();
        eprintln!(
            "{} of {MESSAGES} acknowledged; leader now {:?} at epoch {}",
            acked.len(),
            after.leader_id,
            after.leader_epoch
        );
        assert_ne!(after.leader_id, Some(leader), "leadership moved");

        // Read everything back as the app user from the surviving brokers.
        let survivors = cluster.bootstrap_without(leader);
        let mut cc = ConsumerConfig::from_map(with_bootstrap(&survivors, &app)).unwrap();
        cc.auto_offset_reset = OffsetReset::Earliest;
        let consumer = Consumer::new(cc).await.expect("consumer");
        consumer.assign(tps(TOPIC, 1)).unwrap();
        let mut read = std::collections::BTreeMap::new();
        let last = acked.iter().map(|a| a.0).max().unwrap();
        while !read.contains_key(&last) {
            for r in consumer.poll(Duration::from_secs(5)).await.expect("poll") {
                read.insert(r.offset.0, value(&r));
            }
        }
        for (offset, v) in &acked {
            assert_eq!(
                read.get(offset),
                Some(v),
                "acknowledged {v} at {offset} is lost"
            );
        }
    })
    .await;
}

/// Mutual TLS alone: the principal is `User:<subject CN>` of the client certificate, checked
/// against ACLs and `--super-users`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_common_name_is_the_principal() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "mtls");
    let mut flags = pki.broker_flags("SSL");
    flags.extend(["--authorizer", "--super-users", "User:ops"].map(String::from));
    let b = TestBroker::start_with(dir.path(), &strs(&flags));
    bounded(TEST_TIMEOUT, async {
        let ops = ssl_settings(&pki.ca_pem, Some(&pki.issue("ops")));
        let root = admin_with(&b.addr, &ops).await.expect("super user");
        root.create_topic(NewTopic::new("certs", 1)).await.unwrap();
        root.create_acls(&[acl(
            "User:alice",
            AclOperation::Write,
            ResourceType::Topic,
            "certs",
            PatternType::Literal,
        )])
        .await
        .unwrap();
        let alice = ssl_settings(&pki.ca_pem, Some(&pki.issue("alice")));
        produce_one(&b.addr, &alice, "certs")
            .await
            .expect("alice's certificate may write");
        let bob = ssl_settings(&pki.ca_pem, Some(&pki.issue("bob")));
        let e = produce_one(&b.addr, &bob, "certs")
            .await
            .expect_err("bob's may not");
        assert_eq!(e.code(), ErrorCode::TopicAuthorizationFailed, "{e}");
        assert!(e.to_string().contains("User:bob"), "{e}");
        assert_eq!(end_offset(&root, "certs").await, 1);
    })
    .await;
}

/// The command line: `user add` reads the password from stdin, `acl add|list|remove`, and
/// `--command-config` carries the client's security settings.
#[test]
fn cli_manages_users_and_acls() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(
        dir.path(),
        &[
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--inter-broker-username",
            "admin",
            "--inter-broker-password",
            "admin-secret",
            "--authorizer",
        ],
    );
    let props = dir.path().join("admin.properties");
    std::fs::write(
        &props,
        "# admin\nsecurity.protocol=SASL_PLAINTEXT\nsasl.username=admin\nsasl.password=admin-secret\n",
    )
    .unwrap();
    let cc = props.to_str().unwrap();
    let ok = |args: &[&str], stdin: &[u8]| {
        let out = b.run(args, stdin);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(
        &["user", "add", "carol", "--command-config", cc],
        b"carol-pw\n",
    );
    assert!(ok(&["user", "list", "--command-config", cc], b"").contains("carol"));
    ok(
        &[
            "acl",
            "add",
            "--allow-principal",
            "User:carol",
            "--operation",
            "Read",
            "--operation",
            "Describe",
            "--group",
            "team-",
            "--resource-pattern-type",
            "prefixed",
            "--command-config",
            cc,
        ],
        b"",
    );
    let listed = ok(&["acl", "list", "--command-config", cc], b"");
    assert!(
        listed.contains("User:carol") && listed.contains("Prefixed") && listed.contains("team-"),
        "{listed}"
    );
    let removed = ok(
        &[
            "acl",
            "remove",
            "--allow-principal",
            "User:carol",
            "--operation",
            "Read",
            "--group",
            "team-",
            "--resource-pattern-type",
            "prefixed",
            "--command-config",
            cc,
        ],
        b"",
    );
    assert!(removed.contains("removed 1"), "{removed}");
    // Without the settings the command is refused, and says why.
    let out = b.run(&["topic", "list"], b"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SASL_AUTHENTICATION_FAILED"), "{err}");
}

/// A plaintext broker on a non-loopback address, with no authentication, says so at start.
#[test]
fn plaintext_listener_on_every_address_warns() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_on(dir.path(), "0.0.0.0:0", &[], &[]);
    let log = b.log_text();
    assert!(
        log.contains("non-loopback address in PLAINTEXT without authentication"),
        "{log}"
    );
    let quiet = tempfile::tempdir().unwrap();
    let b = TestBroker::start(quiet.path());
    assert!(!b.log_text().contains("non-loopback"));
}
