//! The broker's configuration: command-line flags, `SLUICEWAY_*` environment variables and an
//! optional TOML file, merged (flag > environment > file > default) and validated into one
//! [`BrokerConfig`]. Every rejection names the setting.
//!
//! | flag | environment | TOML key | default |
//! |---|---|---|---|
//! | `--data-dir DIR` | `SLUICEWAY_DATA_DIR` | `data_dir` | `./sluiceway-data` |
//! | `--listen HOST:PORT` | `SLUICEWAY_LISTEN` | `listen` | `127.0.0.1:9292` |
//! | `--broker-id N` | `SLUICEWAY_BROKER_ID` | `broker_id` | `0` |
//! | `--advertised-address HOST:PORT` | `SLUICEWAY_ADVERTISED_ADDRESS` | `advertised_address` | the bound address |
//! | `--metrics-listen HOST:PORT` | `SLUICEWAY_METRICS_LISTEN` | `metrics_listen` | off |
//! | `--log FILTER` | `SLUICEWAY_LOG` | `log` | `info` |
//! | `--retention-check-interval-ms N` | `SLUICEWAY_RETENTION_CHECK_INTERVAL_MS` | `retention_check_interval_ms` | 60000 |
//! | `--topic-default KEY=VALUE`… | `SLUICEWAY_TOPIC_DEFAULTS` (comma-separated) | `[topic_defaults]` table | none |
//! | `--registry embedded\|etcd://HOST:PORT[,…][/ROOT]` | `SLUICEWAY_REGISTRY` | `registry` | `embedded` |
//! | `--registry-session-timeout-ms N` | `SLUICEWAY_REGISTRY_SESSION_TIMEOUT_MS` | `registry_session_timeout_ms` | 6000 |
//! | `--replica-lag-time-max-ms N` | `SLUICEWAY_REPLICA_LAG_TIME_MAX_MS` | `replica_lag_time_max_ms` | 30000 |
//! | `--replica-fetch-wait-max-ms N` | `SLUICEWAY_REPLICA_FETCH_WAIT_MAX_MS` | `replica_fetch_wait_max_ms` | 500 |
//! | `--default-replication-factor N` | `SLUICEWAY_DEFAULT_REPLICATION_FACTOR` | `default_replication_factor` | 1 |
//! | `--leader-rebalance-interval-ms N` | `SLUICEWAY_LEADER_REBALANCE_INTERVAL_MS` | `leader_rebalance_interval_ms` | 300000 (0: off) |
//! | `--offsets-topic-replication-factor N` | `SLUICEWAY_OFFSETS_TOPIC_REPLICATION_FACTOR` | `offsets_topic_replication_factor` | 3 |
//! | `--group-initial-rebalance-delay-ms N` | `SLUICEWAY_GROUP_INITIAL_REBALANCE_DELAY_MS` | `group_initial_rebalance_delay_ms` | 3000 (0: off) |
//! | `--security-protocol P` | `SLUICEWAY_SECURITY_PROTOCOL` | `security_protocol` | `PLAINTEXT` (`SSL`, `SASL_PLAINTEXT`, `SASL_SSL`) |
//! | `--ssl-certificate-location FILE` | `SLUICEWAY_SSL_CERTIFICATE_LOCATION` | `ssl_certificate_location` | none (required with `SSL`/`SASL_SSL`) |
//! | `--ssl-key-location FILE` | `SLUICEWAY_SSL_KEY_LOCATION` | `ssl_key_location` | none (required with `SSL`/`SASL_SSL`) |
//! | `--ssl-ca-location FILE` | `SLUICEWAY_SSL_CA_LOCATION` | `ssl_ca_location` | none (verify client certificates; trust other brokers) |
//! | `--ssl-client-auth none\|requested\|required` | `SLUICEWAY_SSL_CLIENT_AUTH` | `ssl_client_auth` | `required` with a CA, else `none` |
//! | `--inter-broker-username U` | `SLUICEWAY_INTER_BROKER_USERNAME` | `inter_broker_username` | none (required with `SASL_*`) |
//! | `--inter-broker-password P` | `SLUICEWAY_INTER_BROKER_PASSWORD` | `inter_broker_password` | none |
//! | `--authorizer` | `SLUICEWAY_AUTHORIZER` | `authorizer` | off |
//! | `--allow-everyone-if-no-acl-found` | `SLUICEWAY_ALLOW_EVERYONE_IF_NO_ACL_FOUND` | `allow_everyone_if_no_acl_found` | false |
//! | `--super-users User:a;User:b` | `SLUICEWAY_SUPER_USERS` | `super_users` | none |
//! | `--config FILE` | `SLUICEWAY_CONFIG` | — | none |
//!
//! `topic_defaults` are topic configuration keys (Kafka names, see `sluiceway_core::topic`) that
//! apply to every topic that does not override them, e.g. `flush.policy = "interval"`.
//!
//! Clusters: `registry = "etcd://…"` keeps the metadata in etcd (brokers register under a lease
//! of `registry_session_timeout_ms`; a broker whose lease expires is dead and loses its
//! leaderships). `replica_lag_time_max_ms` is Kafka's `replica.lag.time.max.ms` (a follower not
//! caught up for that long leaves the in-sync set), `replica_fetch_wait_max_ms` the long-poll
//! wait of a follower's fetch (Kafka's `replica.fetch.wait.max.ms`), and
//! `default_replication_factor` (Kafka's `default.replication.factor`) applies to a CreateTopic
//! that asks for replication factor 0. `leader_rebalance_interval_ms` is how often the
//! controller hands leadership back to in-sync preferred replicas (Kafka's
//! `auto.leader.rebalance.enable` / `leader.imbalance.check.interval.seconds`).
//! `offsets_topic_replication_factor` (Kafka's
//! `offsets.topic.replication.factor`) is the replication factor of `__consumer_offsets`, which a
//! cluster creates on the first group request once that many brokers are alive. With the embedded registry the replication settings have
//! no effect beyond the replication factor check (one broker: only 1 is possible).
//!
//! Security (Kafka's names, see README "Securing a broker"): `security_protocol` is the
//! listener's, Kafka's `listeners=SASL_SSL://…`; brokers call each other with the same protocol,
//! presenting their own certificate (mutual TLS) and the inter-broker credentials, which every
//! broker accepts as a super user without a stored credential (Kafka's PLAIN `user_NAME` JAAS
//! entries), so the first `sluiceway user add` can be made with them. With `authorizer` on,
//! every request is checked against the ACLs in the registry; `super_users` and the
//! inter-broker user pass every check.
//!
//! Groups: `group_initial_rebalance_delay_ms` is Kafka's `group.initial.rebalance.delay.ms`:
//! how long a group that was empty waits for more members before its first generation, again
//! after each such wait in which a new member joined, in all at most the members' rebalance
//! timeout (`max.poll.interval.ms`), so consumers started together split the partitions instead
//! of the first one taking them all (see `sluiceway_core::group`). At most
//! `GROUP_INITIAL_REBALANCE_DELAY_MS_MAX` (30 min); 0 answers a lone member's first join at once,
//! as the broker tests do.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;
use sluiceway_core::limits::{
    FETCH_WAIT_MS_MAX, GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT,
    GROUP_INITIAL_REBALANCE_DELAY_MS_MAX, LEADER_REBALANCE_INTERVAL_MS_DEFAULT,
    LEADER_REBALANCE_INTERVAL_MS_MAX, LEADER_REBALANCE_INTERVAL_MS_MIN,
    OFFSETS_TOPIC_REPLICATION_FACTOR_DEFAULT, REGISTRY_SESSION_TIMEOUT_MS_DEFAULT,
    REGISTRY_SESSION_TIMEOUT_MS_MAX, REGISTRY_SESSION_TIMEOUT_MS_MIN,
    REPLICA_FETCH_WAIT_MAX_MS_DEFAULT, REPLICA_LAG_TIME_MAX_MS_DEFAULT,
    REPLICA_LAG_TIME_MAX_MS_MAX, REPLICA_LAG_TIME_MAX_MS_MIN, REPLICATION_FACTOR_MAX,
};
use sluiceway_core::registry::BrokerId;
use sluiceway_core::topic::{TopicConfig, parse_key_value};
use sluiceway_core::{Error, Result};

pub const LISTEN_DEFAULT: &str = "127.0.0.1:9292";
pub const DATA_DIR_DEFAULT: &str = "./sluiceway-data";
pub const REGISTRY_DEFAULT: &str = "embedded";
/// `sluiceway broker` flags. Every value is optional here so that the merge can tell "given" from
/// "defaulted".
#[derive(Args, Debug, Clone, Default)]
pub struct BrokerArgs {
    /// Directory holding the partition logs and the embedded registry's state.
    #[arg(long, env = "SLUICEWAY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the gRPC server binds, HOST:PORT (port 0 picks a free port; the chosen address is
    /// printed as `listening on HOST:PORT`).
    #[arg(long, env = "SLUICEWAY_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// This broker's id, unique in the cluster.
    #[arg(long, env = "SLUICEWAY_BROKER_ID", value_name = "N")]
    pub broker_id: Option<u32>,
    /// Address registered for clients, when it differs from the bound one (e.g. 0.0.0.0).
    #[arg(long, env = "SLUICEWAY_ADVERTISED_ADDRESS", value_name = "HOST:PORT")]
    pub advertised_address: Option<String>,
    /// Serve Prometheus metrics over HTTP on HOST:PORT (off by default).
    #[arg(long, env = "SLUICEWAY_METRICS_LISTEN", value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `sluiceway_broker=debug`.
    #[arg(long, env = "SLUICEWAY_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Milliseconds between retention passes.
    #[arg(long, env = "SLUICEWAY_RETENTION_CHECK_INTERVAL_MS", value_name = "MS")]
    pub retention_check_interval_ms: Option<u64>,
    /// A default topic configuration, KEY=VALUE (repeatable), e.g. `flush.policy=interval`.
    #[arg(
        long = "topic-default",
        env = "SLUICEWAY_TOPIC_DEFAULTS",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub topic_defaults: Vec<String>,
    /// Where the cluster metadata lives: `embedded` (one machine, the default) or
    /// `etcd://HOST:PORT[,HOST:PORT…][/ROOT]` (a cluster; ROOT defaults to `/sluiceway`).
    #[arg(long, env = "SLUICEWAY_REGISTRY", value_name = "embedded|etcd://…")]
    pub registry: Option<String>,
    /// etcd: the broker's lease time; a broker that stops renewing it is declared dead this long
    /// after its last renewal and its leaderships move.
    #[arg(long, env = "SLUICEWAY_REGISTRY_SESSION_TIMEOUT_MS", value_name = "MS")]
    pub registry_session_timeout_ms: Option<u64>,
    /// A follower not caught up with the leader for this long leaves the in-sync replica set
    /// (Kafka's replica.lag.time.max.ms).
    #[arg(long, env = "SLUICEWAY_REPLICA_LAG_TIME_MAX_MS", value_name = "MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Longest wait of a follower's fetch when the leader has no new data (Kafka's
    /// replica.fetch.wait.max.ms).
    #[arg(long, env = "SLUICEWAY_REPLICA_FETCH_WAIT_MAX_MS", value_name = "MS")]
    pub replica_fetch_wait_max_ms: Option<u32>,
    /// Replication factor of topics created with replication factor 0 (Kafka's
    /// default.replication.factor).
    #[arg(long, env = "SLUICEWAY_DEFAULT_REPLICATION_FACTOR", value_name = "N")]
    pub default_replication_factor: Option<u32>,
    /// How often the controller moves leadership back to preferred replicas that are in sync
    /// again (Kafka's leader.imbalance.check.interval.seconds); 0 turns it off.
    #[arg(
        long,
        env = "SLUICEWAY_LEADER_REBALANCE_INTERVAL_MS",
        value_name = "MS"
    )]
    pub leader_rebalance_interval_ms: Option<u64>,
    /// Replication factor of the internal __consumer_offsets topic in a cluster (Kafka's
    /// offsets.topic.replication.factor); it is created once this many brokers are alive.
    #[arg(
        long,
        env = "SLUICEWAY_OFFSETS_TOPIC_REPLICATION_FACTOR",
        value_name = "N"
    )]
    pub offsets_topic_replication_factor: Option<u32>,
    /// How long a consumer group that was empty waits for more members before its first
    /// generation, again after each wait in which one joined, bounded by the members' rebalance
    /// timeout (Kafka's group.initial.rebalance.delay.ms); 0 turns it off.
    #[arg(
        long,
        env = "SLUICEWAY_GROUP_INITIAL_REBALANCE_DELAY_MS",
        value_name = "MS"
    )]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// The listener's protocol (Kafka's security.protocol): PLAINTEXT, SSL (TLS), SASL_PLAINTEXT
    /// (username + password on every request) or SASL_SSL (both). Brokers call each other with it.
    #[arg(long, env = "SLUICEWAY_SECURITY_PROTOCOL", value_name = "PROTOCOL")]
    pub security_protocol: Option<String>,
    /// PEM certificate (chain) of this broker's TLS listener.
    #[arg(long, env = "SLUICEWAY_SSL_CERTIFICATE_LOCATION", value_name = "FILE")]
    pub ssl_certificate_location: Option<PathBuf>,
    /// PEM private key of that certificate.
    #[arg(long, env = "SLUICEWAY_SSL_KEY_LOCATION", value_name = "FILE")]
    pub ssl_key_location: Option<PathBuf>,
    /// PEM CA certificate(s): client certificates are verified against it (mutual TLS, the
    /// principal is User:<subject CN>), and other brokers' certificates too.
    #[arg(long, env = "SLUICEWAY_SSL_CA_LOCATION", value_name = "FILE")]
    pub ssl_ca_location: Option<PathBuf>,
    /// Whether clients must present a certificate (Kafka's ssl.client.auth): none, requested,
    /// required [default: required with --ssl-ca-location, else none].
    #[arg(long, env = "SLUICEWAY_SSL_CLIENT_AUTH", value_parser = ["none", "requested", "required"])]
    pub ssl_client_auth: Option<String>,
    /// The username this broker presents to other brokers (SASL_*); every broker accepts it as a
    /// super user.
    #[arg(long, env = "SLUICEWAY_INTER_BROKER_USERNAME", value_name = "NAME")]
    pub inter_broker_username: Option<String>,
    /// The inter-broker user's password (prefer the environment variable over the flag).
    #[arg(long, env = "SLUICEWAY_INTER_BROKER_PASSWORD", value_name = "PASSWORD")]
    pub inter_broker_password: Option<String>,
    /// Check every request against the ACLs in the registry (Kafka's authorizer.class.name).
    #[arg(long, env = "SLUICEWAY_AUTHORIZER")]
    pub authorizer: bool,
    /// With the authorizer on: allow a request on a resource no ACL names (Kafka's
    /// allow.everyone.if.no.acl.found; default false).
    #[arg(long, env = "SLUICEWAY_ALLOW_EVERYONE_IF_NO_ACL_FOUND")]
    pub allow_everyone_if_no_acl_found: bool,
    /// Principals that pass every ACL check, `User:a;User:b` (Kafka's super.users).
    #[arg(long, env = "SLUICEWAY_SUPER_USERS", value_name = "User:NAME;…")]
    pub super_users: Option<String>,
    /// A TOML file with any of the settings above (flags and environment win over it).
    #[arg(long, env = "SLUICEWAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The TOML file's shape; unknown keys are errors.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    broker_id: Option<u32>,
    advertised_address: Option<String>,
    metrics_listen: Option<String>,
    log: Option<String>,
    retention_check_interval_ms: Option<u64>,
    registry: Option<String>,
    registry_session_timeout_ms: Option<u64>,
    replica_lag_time_max_ms: Option<u64>,
    replica_fetch_wait_max_ms: Option<u32>,
    default_replication_factor: Option<u32>,
    offsets_topic_replication_factor: Option<u32>,
    leader_rebalance_interval_ms: Option<u64>,
    group_initial_rebalance_delay_ms: Option<u64>,
    security_protocol: Option<String>,
    ssl_certificate_location: Option<PathBuf>,
    ssl_key_location: Option<PathBuf>,
    ssl_ca_location: Option<PathBuf>,
    ssl_client_auth: Option<String>,
    inter_broker_username: Option<String>,
    inter_broker_password: Option<String>,
    authorizer: Option<bool>,
    allow_everyone_if_no_acl_found: Option<bool>,
    super_users: Option<String>,
    #[serde(default)]
    topic_defaults: BTreeMap<String, toml::Value>,
}

/// The validated broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub broker_id: BrokerId,
    pub advertised_address: Option<String>,
    pub metrics_listen: Option<SocketAddr>,
    pub log: String,
    pub retention_check_interval_ms: u64,
    /// Validated: parses as a topic configuration.
    pub topic_defaults: BTreeMap<String, String>,
    pub registry: RegistryKind,
    pub registry_session_timeout_ms: u64,
    pub replica_lag_time_max_ms: u64,
    pub replica_fetch_wait_max_ms: u32,
    pub default_replication_factor: u32,
    pub offsets_topic_replication_factor: u32,
    /// 0: off. Range-checked by the etcd registry (`EtcdOptions`).
    pub leader_rebalance_interval_ms: u64,
    /// 0: off.
    pub group_initial_rebalance_delay_ms: u64,
    /// TLS, authentication and authorization.
    pub security: crate::security::SecurityOptions,
}

/// Which registry backend holds the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryKind {
    /// One machine: the broker is its own registry (a JSON file in the data directory).
    Embedded,
    /// A cluster: the spec as given (`etcd://…`), parsed by the etcd backend at start.
    Etcd(String),
}

impl RegistryKind {
    fn parse(v: &str) -> Result<RegistryKind> {
        if v == "embedded" {
            return Ok(RegistryKind::Embedded);
        }
        if v.starts_with("etcd://") {
            // The backend parses the spec itself; this catches typos before anything starts.
            sluiceway_core::registry::EtcdSpec::parse(v)?;
            return Ok(RegistryKind::Etcd(v.to_owned()));
        }
        Err(invalid(
            "registry",
            format!("{v:?} is neither `embedded` nor `etcd://HOST:PORT[,HOST:PORT…][/ROOT]`"),
        ))
    }
}

fn in_range(key: &str, v: u64, min: u64, max: u64) -> Result<u64> {
    if v < min || v > max {
        return Err(invalid(key, format!("{v} is outside {min}..={max}")));
    }
    Ok(v)
}

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn socket_addr(key: &str, v: &str) -> Result<SocketAddr> {
    v.parse::<SocketAddr>().map_err(|_| {
        invalid(
            key,
            format!("{v:?} is not HOST:PORT with a numeric IP address (e.g. 127.0.0.1:9292)"),
        )
    })
}

impl BrokerConfig {
    /// Merges flags/environment (`args`) over the TOML file named by `args.config`, then defaults.
    pub fn load(args: &BrokerArgs) -> Result<BrokerConfig> {
        let file = match &args.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::io("read config file", path, e))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| invalid("--config", format!("{}: {e}", path.display())))?
            }
        };
        let listen = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| LISTEN_DEFAULT.to_owned());
        let metrics_listen = args.metrics_listen.clone().or(file.metrics_listen);
        let broker_id = args.broker_id.or(file.broker_id).unwrap_or(0);
        if broker_id > BrokerId::MAX.0 {
            return Err(invalid(
                "broker_id",
                format!("{broker_id} is larger than {}", BrokerId::MAX),
            ));
        }
        let retention_check_interval_ms = args
            .retention_check_interval_ms
            .or(file.retention_check_interval_ms)
            .unwrap_or(sluiceway_core::limits::RETENTION_CHECK_INTERVAL_MS_DEFAULT);
        if retention_check_interval_ms == 0 {
            return Err(invalid("retention_check_interval_ms", "must be at least 1"));
        }
        let mut topic_defaults = BTreeMap::new();
        for (k, v) in file.topic_defaults {
            let v = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                other => {
                    return Err(invalid(
                        &format!("topic_defaults.{k}"),
                        format!("{other} is neither a string nor an integer"),
                    ));
                }
            };
            topic_defaults.insert(k, v);
        }
        for kv in &args.topic_defaults {
            let (k, v) =
                parse_key_value(kv).map_err(|e| invalid("--topic-default", e.to_string()))?;
            topic_defaults.insert(k, v);
        }
        TopicConfig::parse(&topic_defaults, &BTreeMap::new())?;
        if let Some(a) = args
            .advertised_address
            .as_deref()
            .or(file.advertised_address.as_deref())
            && !a.contains(':')
        {
            return Err(invalid(
                "advertised_address",
                format!("{a:?} is not HOST:PORT"),
            ));
        }
        let registry = RegistryKind::parse(
            args.registry
                .as_deref()
                .or(file.registry.as_deref())
                .unwrap_or(REGISTRY_DEFAULT),
        )?;
        let registry_session_timeout_ms = in_range(
            "registry_session_timeout_ms",
            args.registry_session_timeout_ms
                .or(file.registry_session_timeout_ms)
                .unwrap_or(REGISTRY_SESSION_TIMEOUT_MS_DEFAULT),
            REGISTRY_SESSION_TIMEOUT_MS_MIN,
            REGISTRY_SESSION_TIMEOUT_MS_MAX,
        )?;
        let replica_lag_time_max_ms = in_range(
            "replica_lag_time_max_ms",
            args.replica_lag_time_max_ms
                .or(file.replica_lag_time_max_ms)
                .unwrap_or(REPLICA_LAG_TIME_MAX_MS_DEFAULT),
            REPLICA_LAG_TIME_MAX_MS_MIN,
            REPLICA_LAG_TIME_MAX_MS_MAX,
        )?;
        let replica_fetch_wait_max_ms = in_range(
            "replica_fetch_wait_max_ms",
            u64::from(
                args.replica_fetch_wait_max_ms
                    .or(file.replica_fetch_wait_max_ms)
                    .unwrap_or(REPLICA_FETCH_WAIT_MAX_MS_DEFAULT),
            ),
            1,
            u64::from(FETCH_WAIT_MS_MAX),
        )? as u32;
        if u64::from(replica_fetch_wait_max_ms) >= replica_lag_time_max_ms {
            return Err(invalid(
                "replica_fetch_wait_max_ms",
                format!(
                    "{replica_fetch_wait_max_ms} must be below replica_lag_time_max_ms \
                     ({replica_lag_time_max_ms}), or an idle follower would drop out of the in-sync set"
                ),
            ));
        }
        let default_replication_factor = in_range(
            "default_replication_factor",
            u64::from(
                args.default_replication_factor
                    .or(file.default_replication_factor)
                    .unwrap_or(1),
            ),
            1,
            u64::from(REPLICATION_FACTOR_MAX),
        )? as u32;
        let offsets_topic_replication_factor = in_range(
            "offsets_topic_replication_factor",
            u64::from(
                args.offsets_topic_replication_factor
                    .or(file.offsets_topic_replication_factor)
                    .unwrap_or(OFFSETS_TOPIC_REPLICATION_FACTOR_DEFAULT),
            ),
            1,
            u64::from(REPLICATION_FACTOR_MAX),
        )? as u32;
        let leader_rebalance_interval_ms = args
            .leader_rebalance_interval_ms
            .or(file.leader_rebalance_interval_ms)
            .unwrap_or(LEADER_REBALANCE_INTERVAL_MS_DEFAULT);
        if leader_rebalance_interval_ms != 0 {
            in_range(
                "leader_rebalance_interval_ms",
                leader_rebalance_interval_ms,
                LEADER_REBALANCE_INTERVAL_MS_MIN,
                LEADER_REBALANCE_INTERVAL_MS_MAX,
            )?;
        }
        let group_initial_rebalance_delay_ms = in_range(
            "group_initial_rebalance_delay_ms",
            args.group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms)
                .unwrap_or(GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT),
            0,
            GROUP_INITIAL_REBALANCE_DELAY_MS_MAX,
        )?;
        let security = crate::security::SecurityOptions::load(crate::security::SecuritySettings {
            protocol: args.security_protocol.clone().or(file.security_protocol),
            ssl_certificate_location: args
                .ssl_certificate_location
                .clone()
                .or(file.ssl_certificate_location),
            ssl_key_location: args.ssl_key_location.clone().or(file.ssl_key_location),
            ssl_ca_location: args.ssl_ca_location.clone().or(file.ssl_ca_location),
            ssl_client_auth: args.ssl_client_auth.clone().or(file.ssl_client_auth),
            inter_broker_username: args
                .inter_broker_username
                .clone()
                .or(file.inter_broker_username),
            inter_broker_password: args
                .inter_broker_password
                .clone()
                .or(file.inter_broker_password),
            authorizer: args.authorizer || file.authorizer.unwrap_or(false),
            allow_everyone_if_no_acl_found: args.allow_everyone_if_no_acl_found
                || file.allow_everyone_if_no_acl_found.unwrap_or(false),
            super_users: args.super_users.clone().or(file.super_users),
        })?;
        if matches!(registry, RegistryKind::Etcd(_))
            && security.protocol.uses_tls()
            && security.ssl_ca_location.is_none()
        {
            return Err(invalid(
                "ssl_ca_location",
                "a cluster with TLS needs it: brokers verify each other's certificates against it",
            ));
        }
        Ok(BrokerConfig {
            security,
            leader_rebalance_interval_ms,
            group_initial_rebalance_delay_ms,
            offsets_topic_replication_factor,
            registry,
            registry_session_timeout_ms,
            replica_lag_time_max_ms,
            replica_fetch_wait_max_ms,
            default_replication_factor,
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT)),
            listen: socket_addr("listen", &listen)?,
            broker_id: BrokerId(broker_id),
            advertised_address: args.advertised_address.clone().or(file.advertised_address),
            metrics_listen: metrics_listen
                .as_deref()
                .map(|m| socket_addr("metrics_listen", m))
                .transpose()?,
            log: args
                .log
                .clone()
                .or(file.log)
                .unwrap_or_else(|| "info".to_owned()),
            retention_check_interval_ms,
            topic_defaults,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_settings_are_checked_together() {
        let key_of = |args: BrokerArgs| match BrokerConfig::load(&args) {
            Err(Error::InvalidConfig { key, .. }) => key,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        let sasl = BrokerArgs {
            security_protocol: Some("SASL_PLAINTEXT".into()),
            ..BrokerArgs::default()
        };
        assert_eq!(key_of(sasl.clone()), "inter_broker_username");
        let ok = BrokerConfig::load(&BrokerArgs {
            inter_broker_username: Some("admin".into()),
            inter_broker_password: Some("secret".into()),
            super_users: Some("User:ops".into()),
            ..sasl
        })
        .unwrap();
        assert!(ok.security.is_protected());
        assert!(
            !format!("{ok:?}").contains("secret"),
            "no password in Debug"
        );
        assert_eq!(
            key_of(BrokerArgs {
                security_protocol: Some("SSL".into()),
                ..BrokerArgs::default()
            }),
            "ssl_certificate_location"
        );
        assert_eq!(
            key_of(BrokerArgs {
                ssl_ca_location: Some("ca.pem".into()),
                ..BrokerArgs::default()
            }),
            "ssl_ca_location"
        );
        assert_eq!(
            key_of(BrokerArgs {
                super_users: Some("alice".into()),
                ..BrokerArgs::default()
            }),
            "super_users"
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\nbroker_id = 7\n[topic_defaults]\n\"retention.ms\" = 1000\n\"flush.policy\" = \"os\"\n",
        )
        .unwrap();
        let args = BrokerArgs {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:2".into()),
            ..BrokerArgs::default()
        };
        let c = BrokerConfig::load(&args).unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.broker_id, BrokerId(7));
        assert_eq!(c.topic_defaults["retention.ms"], "1000");

        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        let err = BrokerConfig::load(&BrokerArgs {
            config: Some(file),
            ..BrokerArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");

        let err = BrokerConfig::load(&BrokerArgs {
            listen: Some("nowhere".into()),
            ..BrokerArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let args = BrokerArgs {
            topic_defaults: vec!["segment.bytes=1".into()],
            ..BrokerArgs::default()
        };
        assert!(
            BrokerConfig::load(&args)
                .unwrap_err()
                .to_string()
                .contains("segment.bytes")
        );
    }

    #[test]
    fn replication_settings_default_merge_and_are_checked() {
        let c = BrokerConfig::load(&BrokerArgs::default()).unwrap();
        assert_eq!(c.registry, RegistryKind::Embedded);
        assert_eq!(
            c.registry_session_timeout_ms,
            REGISTRY_SESSION_TIMEOUT_MS_DEFAULT
        );
        assert_eq!(c.replica_lag_time_max_ms, REPLICA_LAG_TIME_MAX_MS_DEFAULT);
        assert_eq!(
            c.replica_fetch_wait_max_ms,
            REPLICA_FETCH_WAIT_MAX_MS_DEFAULT
        );
        assert_eq!(c.default_replication_factor, 1);
        assert_eq!(c.offsets_topic_replication_factor, 3);
        assert_eq!(
            c.leader_rebalance_interval_ms,
            LEADER_REBALANCE_INTERVAL_MS_DEFAULT
        );
        let off = BrokerConfig::load(&BrokerArgs {
            leader_rebalance_interval_ms: Some(0),
            offsets_topic_replication_factor: Some(1),
            ..BrokerArgs::default()
        })
        .unwrap();
        assert_eq!(off.leader_rebalance_interval_ms, 0, "0 turns it off");
        assert_eq!(off.offsets_topic_replication_factor, 1);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.toml");
        std::fs::write(
            &file,
            "registry = \"etcd://127.0.0.1:2379\"\nreplica_lag_time_max_ms = 2000\ndefault_replication_factor = 3\n",
        )
        .unwrap();
        let c = BrokerConfig::load(&BrokerArgs {
            config: Some(file),
            registry_session_timeout_ms: Some(2000),
            ..BrokerArgs::default()
        })
        .unwrap();
        assert_eq!(
            c.registry,
            RegistryKind::Etcd("etcd://127.0.0.1:2379".into())
        );
        assert_eq!(c.registry_session_timeout_ms, 2000);
        assert_eq!(c.replica_lag_time_max_ms, 2000);
        assert_eq!(c.default_replication_factor, 3);

        let bad = [
            (
                BrokerArgs {
                    registry: Some("zookeeper://x".into()),
                    ..BrokerArgs::default()
                },
                "registry",
            ),
            (
                BrokerArgs {
                    registry_session_timeout_ms: Some(10),
                    ..BrokerArgs::default()
                },
                "registry_session_timeout_ms",
            ),
            (
                BrokerArgs {
                    default_replication_factor: Some(0),
                    ..BrokerArgs::default()
                },
                "default_replication_factor",
            ),
            (
                BrokerArgs {
                    replica_lag_time_max_ms: Some(400),
                    ..BrokerArgs::default()
                },
                "replica_fetch_wait_max_ms",
            ),
            (
                BrokerArgs {
                    replica_fetch_wait_max_ms: Some(0),
                    ..BrokerArgs::default()
                },
                "replica_fetch_wait_max_ms",
            ),
            (
                BrokerArgs {
                    offsets_topic_replication_factor: Some(0),
                    ..BrokerArgs::default()
                },
                "offsets_topic_replication_factor",
            ),
            (
                BrokerArgs {
                    leader_rebalance_interval_ms: Some(5),
                    ..BrokerArgs::default()
                },
                "leader_rebalance_interval_ms",
            ),
        ];
        for (args, key) in bad {
            let err = BrokerConfig::load(&args).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    /// `group_initial_rebalance_delay_ms`: Kafka's 3 s by default, from the file, the flag over
    /// the file, 0 allowed (off), and refused beyond the limit with the key named.
    #[test]
    fn group_initial_rebalance_delay_defaults_merges_and_is_checked() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            broker: BrokerArgs,
        }
        let load = |args: &BrokerArgs| {
            BrokerConfig::load(args).map(|c| c.group_initial_rebalance_delay_ms)
        };
        assert_eq!(
            load(&BrokerArgs::default()).unwrap(),
            GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT
        );
        assert_eq!(GROUP_INITIAL_REBALANCE_DELAY_MS_DEFAULT, 3_000);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.toml");
        std::fs::write(&file, "group_initial_rebalance_delay_ms = 500\n").unwrap();
        let from_file = BrokerArgs {
            config: Some(file.clone()),
            ..BrokerArgs::default()
        };
        assert_eq!(load(&from_file).unwrap(), 500);
        let flag = <Cli as clap::Parser>::try_parse_from([
            "sluiceway",
            "--config",
            file.to_str().unwrap(),
            "--group-initial-rebalance-delay-ms",
            "0",
        ])
        .unwrap()
        .broker;
        assert_eq!(
            load(&flag).unwrap(),
            0,
            "the flag wins over the file; 0 is off"
        );

        let too_long = BrokerArgs {
            group_initial_rebalance_delay_ms: Some(GROUP_INITIAL_REBALANCE_DELAY_MS_MAX + 1),
            ..BrokerArgs::default()
        };
        let err = load(&too_long).unwrap_err().to_string();
        assert!(err.contains("group_initial_rebalance_delay_ms"), "{err}");
        let max = BrokerArgs {
            group_initial_rebalance_delay_ms: Some(GROUP_INITIAL_REBALANCE_DELAY_MS_MAX),
            ..BrokerArgs::default()
        };
        assert_eq!(load(&max).unwrap(), GROUP_INITIAL_REBALANCE_DELAY_MS_MAX);
    }
}
