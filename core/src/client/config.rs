//! Client configuration: Kafka's key names where the concept is the same, parsed from a string
//! map (what the language bindings pass) or set through typed builder methods (Rust).
//!
//! Both paths end in one `validate()`, which checks every value against the bounds in
//! [`crate::limits`]; every rejection is [`Error::InvalidConfig`] naming the key and saying what
//! is allowed. Unknown keys are errors, not warnings: a producer given `group.id` is told so.
//!
//! | key | producer | consumer | admin | default |
//! |---|---|---|---|---|
//! | `bootstrap.servers` | ✓ | ✓ | ✓ | required, `HOST:PORT[,HOST:PORT…]` |
//! | `client.id` | ✓ | ✓ | ✓ | `""` |
//! | `request.timeout.ms` | ✓ | ✓ | ✓ | 30000 |
//! | `retry.backoff.ms` | ✓ | ✓ | ✓ | 100 |
//! | `metadata.max.age.ms` | ✓ | ✓ | ✓ | 300000 |
//! | `acks` | ✓ | | | `all` (`all`, `-1`, `1`, `0`) |
//! | `linger.ms` | ✓ | | | 5 |
//! | `batch.size` | ✓ | | | 16384 |
//! | `compression.type` | ✓ | | | `none` (`none`, `gzip`, `snappy`, `lz4`, `zstd`) |
//! | `retries` | ✓ | | | 2147483647 (bounded by `delivery.timeout.ms`) |
//! | `delivery.timeout.ms` | ✓ | | | 120000 |
//! | `max.in.flight.requests.per.connection` | ✓ | | | 5 (per broker, and per partition: the leader appends a partition's requests in the order sent, and a failed one is resent before later ones, so order holds even above 1, unlike Kafka without idempotence) |
//! | `buffer.memory` | ✓ | | | 33554432 |
//! | `max.block.ms` | ✓ | | | 60000 |
//! | `message.format.version` | ✓ | | | `1` (`1`: the notes' magic 1; `2`: Kafka's RecordBatch v2) |
//! | `enable.idempotence` | ✓ | | | `false` (`true`: each batch carries a producer id and sequence, so a retry is never written twice; needs `acks=all`, `max.in.flight.requests.per.connection` ≤ 5, `retries` ≥ 1; batches are magic 2) |
//! | `max.request.size` | ✓ | | | 1048576 (bytes of message sets in one Produce request; one partition's queued batches go out together up to it, a single larger batch alone) |
//! | `group.id` | | ✓ | | none (needed by `subscribe`; the local store then uses the id `standalone`) |
//! | `auto.offset.reset` | | ✓ | | `latest` (`earliest`, `latest`, `none` = `error`) |
//! | `enable.auto.commit` | | ✓ | | `true` (only acts with `offset.store.dir`) |
//! | `auto.commit.interval.ms` | | ✓ | | 5000 |
//! | `fetch.min.bytes` | | ✓ | | 1 |
//! | `fetch.max.wait.ms` | | ✓ | | 500 |
//! | `max.partition.fetch.bytes` | | ✓ | | 1048576 |
//! | `fetch.max.bytes` | | ✓ | | 52428800 |
//! | `max.poll.records` | | ✓ | | 500 |
//! | `check.crcs` | | ✓ | | `true` (`false`: fetched sets' CRCs are not checked, as with Kafka's consumer key: 10–20 % less client CPU reading 1 KiB records, but a changed byte in a key or value reaches the application; framing is still checked) |
//! | `offset.store.dir` | | ✓ | | none (no local store) |
//! | `session.timeout.ms` | | ✓ | | 45000 (groups: the member is removed after this long unheard) |
//! | `heartbeat.interval.ms` | | ✓ | | 3000, or `session.timeout.ms` / 3 when that is less (must be below the session timeout) |
//! | `max.poll.interval.ms` | | ✓ | | 300000 (groups: how long the coordinator waits for a rejoin) |
//! | `partition.assignment.strategy` | | ✓ | | `range` (`range`, `roundrobin`) |
//! | `security.protocol`, `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`, `sasl.mechanism`, `sasl.username`, `sasl.password` | ✓ | ✓ | ✓ | `PLAINTEXT`; see [`super::security`] |

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::security::{SECURITY_KEYS, SecurityConfig};
use crate::error::{Error, Result};
use crate::format::Compression;
use crate::group::Assignor;
use crate::limits::*;

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn parse_u64(key: &str, v: &str, min: u64, max: u64) -> Result<u64> {
    let n: u64 = v.trim().parse().map_err(|_| {
        invalid(
            key,
            format!("{v:?} is not a whole number; allowed: {min}..={max}"),
        )
    })?;
    check_range(key, n, min, max)?;
    Ok(n)
}

fn check_range(key: &str, n: u64, min: u64, max: u64) -> Result<()> {
    if n < min || n > max {
        return Err(invalid(
            key,
            format!("{n} is out of range; allowed: {min}..={max}"),
        ));
    }
    Ok(())
}

/// `true` or `false` in any case: Python's `str(True)` is `"True"`.
fn parse_bool(key: &str, v: &str) -> Result<bool> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(invalid(
            key,
            format!("{v:?} is not a boolean; allowed: true, false (any case)"),
        ))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Producer acknowledgement level (`acks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// `0`: the broker answers before appending; no offsets come back, errors are not reported.
    None,
    /// `1`: the leader has appended.
    Leader,
    /// `all` / `-1`: every in-sync replica has the data.
    #[default]
    All,
}

impl Acks {
    /// Parses a value of the `acks` key: `all` or `-1`, `1`, `0`.
    pub fn from_name(v: &str) -> Option<Acks> {
        match v.trim() {
            "all" | "-1" => Some(Acks::All),
            "1" => Some(Acks::Leader),
            "0" => Some(Acks::None),
            _ => None,
        }
    }

    /// The value's name as `acks` takes it: `all`, `1`, `0`.
    pub fn name(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        }
    }

    /// The wire value (`ProduceRequest.acks`).
    pub fn as_i32(self) -> i32 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// What a consumer does when it has no position for a partition, or its position is out of
/// range (`auto.offset.reset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OffsetReset {
    Earliest,
    #[default]
    Latest,
    /// `none` (Kafka's name) or `error`: `poll` fails with OFFSET_OUT_OF_RANGE.
    Error,
}

/// Settings every client shares.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    pub bootstrap_servers: Vec<String>,
    pub client_id: String,
    pub request_timeout: Duration,
    pub retry_backoff: Duration,
    pub metadata_max_age: Duration,
    /// `security.protocol`, `ssl.*`, `sasl.*` (see [`super::security`]).
    pub security: SecurityConfig,
}

impl Default for CommonConfig {
    fn default() -> CommonConfig {
        CommonConfig {
            bootstrap_servers: Vec::new(),
            client_id: String::new(),
            request_timeout: Duration::from_millis(CLIENT_REQUEST_TIMEOUT_MS_DEFAULT),
            retry_backoff: Duration::from_millis(CLIENT_RETRY_BACKOFF_MS_DEFAULT),
            metadata_max_age: Duration::from_millis(CLIENT_METADATA_MAX_AGE_MS_DEFAULT),
            security: SecurityConfig::default(),
        }
    }
}

const COMMON_KEYS: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "request.timeout.ms",
    "retry.backoff.ms",
    "metadata.max.age.ms",
];

impl CommonConfig {
    /// Sets one common key; `Ok(false)` when `key` is not a common key.
    fn set(&mut self, key: &str, v: &str) -> Result<bool> {
        if self.security.set(key, v)? {
            return Ok(true);
        }
        match key {
            "bootstrap.servers" => {
                self.bootstrap_servers = v
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            "client.id" => self.client_id = v.to_owned(),
            "request.timeout.ms" => {
                self.request_timeout = Duration::from_millis(parse_u64(
                    key,
                    v,
                    CLIENT_REQUEST_TIMEOUT_MS_MIN,
                    CLIENT_REQUEST_TIMEOUT_MS_MAX,
                )?)
            }
            "retry.backoff.ms" => {
                self.retry_backoff =
                    Duration::from_millis(parse_u64(key, v, 0, CLIENT_RETRY_BACKOFF_MS_MAX)?)
            }
            "metadata.max.age.ms" => {
                self.metadata_max_age = Duration::from_millis(parse_u64(
                    key,
                    v,
                    CLIENT_METADATA_MAX_AGE_MS_MIN,
                    CLIENT_METADATA_MAX_AGE_MS_MAX,
                )?)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn validate(&self) -> Result<()> {
        let key = "bootstrap.servers";
        if self.bootstrap_servers.is_empty() {
            return Err(invalid(
                key,
                "is required: one or more HOST:PORT, comma-separated",
            ));
        }
        if self.bootstrap_servers.len() > CLIENT_BOOTSTRAP_SERVERS_MAX {
            return Err(invalid(
                key,
                format!("lists more than {CLIENT_BOOTSTRAP_SERVERS_MAX} addresses"),
            ));
        }
        for a in &self.bootstrap_servers {
            validate_address(key, a)?;
        }
        if self.client_id.len() > CLIENT_ID_BYTES_MAX {
            return Err(invalid(
                "client.id",
                format!("is longer than {CLIENT_ID_BYTES_MAX} bytes"),
            ));
        }
        check_range(
            "request.timeout.ms",
            ms(self.request_timeout),
            CLIENT_REQUEST_TIMEOUT_MS_MIN,
            CLIENT_REQUEST_TIMEOUT_MS_MAX,
        )?;
        check_range(
            "retry.backoff.ms",
            ms(self.retry_backoff),
            0,
            CLIENT_RETRY_BACKOFF_MS_MAX,
        )?;
        check_range(
            "metadata.max.age.ms",
            ms(self.metadata_max_age),
            CLIENT_METADATA_MAX_AGE_MS_MIN,
            CLIENT_METADATA_MAX_AGE_MS_MAX,
        )?;
        // Reads the certificate files too, so a bad path is reported when the client is made.
        self.security.connector().map(|_| ())
    }
}

/// `HOST:PORT` with a non-empty host and a numeric port (names are resolved at connect time).
pub(crate) fn validate_address(key: &str, a: &str) -> Result<()> {
    let ok = match a.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok() && !a.contains('/'),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{a:?} is not HOST:PORT (e.g. 127.0.0.1:9292)"),
        ))
    }
}

fn unknown(kind: &str, key: &str, own: &[&str]) -> Error {
    let mut all: Vec<&str> = COMMON_KEYS
        .iter()
        .chain(SECURITY_KEYS)
        .chain(own.iter())
        .copied()
        .collect();
    all.sort_unstable();
    invalid(
        key,
        format!("is not a {kind} setting; known keys: {}", all.join(", ")),
    )
}

macro_rules! common_builders {
    () => {
        /// Sets `bootstrap.servers` (one or more `HOST:PORT`).
        pub fn bootstrap_servers<S: Into<String>>(
            mut self,
            servers: impl IntoIterator<Item = S>,
        ) -> Self {
            self.common.bootstrap_servers = servers.into_iter().map(Into::into).collect();
            self
        }
        /// Sets `client.id`.
        pub fn client_id(mut self, id: impl Into<String>) -> Self {
            self.common.client_id = id.into();
            self
        }
        /// Sets `request.timeout.ms`.
        pub fn request_timeout(mut self, d: Duration) -> Self {
            self.common.request_timeout = d;
            self
        }
        /// Sets `retry.backoff.ms`.
        pub fn retry_backoff(mut self, d: Duration) -> Self {
            self.common.retry_backoff = d;
            self
        }
        /// Sets `metadata.max.age.ms`.
        pub fn metadata_max_age(mut self, d: Duration) -> Self {
            self.common.metadata_max_age = d;
            self
        }
        /// Builds from `key → value` pairs (what bindings pass), then validates.
        pub fn from_map<K: AsRef<str>, V: AsRef<str>>(
            map: impl IntoIterator<Item = (K, V)>,
        ) -> Result<Self> {
            let mut c = Self::default();
            for (k, v) in map {
                c.set(k.as_ref(), v.as_ref())?;
            }
            c.validate()?;
            Ok(c)
        }
    };
}

/// The settings a send's records travel with: the producer's own `acks` and `compression.type`
/// ([`ProducerConfig::send_settings`]), or others for one send
/// ([`super::Producer::send_batch_with`], kafkajs's per-send `acks` and `compression`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SendSettings {
    pub acks: Acks,
    pub compression: Compression,
}

/// A producer's configuration. See the module docs for keys and defaults.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    pub common: CommonConfig,
    pub acks: Acks,
    pub linger: Duration,
    pub batch_size: u32,
    pub compression: Compression,
    pub retries: u32,
    pub delivery_timeout: Duration,
    pub max_in_flight: u32,
    pub buffer_memory: u64,
    pub max_block: Duration,
    /// `max.request.size`: bytes of message sets one Produce request carries.
    pub max_request_size: u32,
    /// `message.format.version`: the magic batches are written in, 1 or 2.
    pub message_format_version: u8,
    /// `enable.idempotence`: producer ids and sequence numbers (forces magic 2).
    pub enable_idempotence: bool,
}

impl ProducerConfig {
    /// The producer's own `acks` and `compression.type`, what `send` and `send_batch` use.
    pub fn send_settings(&self) -> SendSettings {
        SendSettings {
            acks: self.acks,
            compression: self.compression,
        }
    }
}

impl Default for ProducerConfig {
    fn default() -> ProducerConfig {
        ProducerConfig {
            common: CommonConfig::default(),
            acks: Acks::All,
            linger: Duration::from_millis(PRODUCER_LINGER_MS_DEFAULT),
            batch_size: PRODUCER_BATCH_BYTES_DEFAULT,
            compression: Compression::None,
            retries: PRODUCER_RETRIES_DEFAULT,
            delivery_timeout: Duration::from_millis(PRODUCER_DELIVERY_TIMEOUT_MS_DEFAULT),
            max_in_flight: PRODUCER_IN_FLIGHT_PER_BROKER_DEFAULT,
            buffer_memory: PRODUCER_BUFFER_BYTES_DEFAULT,
            max_block: Duration::from_millis(PRODUCER_MAX_BLOCK_MS_DEFAULT),
            max_request_size: PRODUCER_REQUEST_BYTES_DEFAULT,
            message_format_version: crate::format::MAGIC_V1,
            enable_idempotence: false,
        }
    }
}

const PRODUCER_KEYS: &[&str] = &[
    "acks",
    "linger.ms",
    "batch.size",
    "compression.type",
    "retries",
    "delivery.timeout.ms",
    "max.in.flight.requests.per.connection",
    "buffer.memory",
    "max.block.ms",
    "max.request.size",
    "message.format.version",
    "enable.idempotence",
];

impl ProducerConfig {
    /// A default configuration bootstrapping from `bootstrap` (`HOST:PORT[,HOST:PORT…]`).
    pub fn new(bootstrap: &str) -> ProducerConfig {
        let mut c = ProducerConfig::default();
        let _ = c.common.set("bootstrap.servers", bootstrap);
        c
    }

    common_builders!();

    /// Sets one key from its string form (Kafka's names), checking the value's syntax.
    pub fn set(&mut self, key: &str, v: &str) -> Result<&mut Self> {
        if self.common.set(key, v)? {
            return Ok(self);
        }
        match key {
            "acks" => {
                self.acks = Acks::from_name(v).ok_or_else(|| {
                    invalid(
                        key,
                        format!("{:?} is not allowed; allowed: all, -1, 1, 0", v.trim()),
                    )
                })?
            }
            "linger.ms" => {
                self.linger = Duration::from_millis(parse_u64(key, v, 0, PRODUCER_LINGER_MS_MAX)?)
            }
            "batch.size" => {
                self.batch_size = parse_u64(key, v, 1, u64::from(PRODUCER_BATCH_BYTES_MAX))? as u32
            }
            "compression.type" => {
                self.compression = Compression::from_name(v.trim()).ok_or_else(|| {
                    invalid(
                        key,
                        format!("{v:?} is not a codec; allowed: none, gzip, snappy, lz4, zstd"),
                    )
                })?
            }
            "retries" => {
                self.retries = parse_u64(key, v, 0, u64::from(PRODUCER_RETRIES_DEFAULT))? as u32
            }
            "delivery.timeout.ms" => {
                self.delivery_timeout =
                    Duration::from_millis(parse_u64(key, v, 1, PRODUCER_DELIVERY_TIMEOUT_MS_MAX)?)
            }
            "max.in.flight.requests.per.connection" => {
                self.max_in_flight =
                    parse_u64(key, v, 1, u64::from(PRODUCER_IN_FLIGHT_PER_BROKER_MAX))? as u32
            }
            "buffer.memory" => {
                self.buffer_memory =
                    parse_u64(key, v, PRODUCER_BUFFER_BYTES_MIN, PRODUCER_BUFFER_BYTES_MAX)?
            }
            "max.block.ms" => {
                self.max_block =
                    Duration::from_millis(parse_u64(key, v, 0, PRODUCER_MAX_BLOCK_MS_MAX)?)
            }
            "max.request.size" => {
                self.max_request_size = parse_u64(
                    key,
                    v,
                    u64::from(PRODUCER_REQUEST_BYTES_MIN),
                    u64::from(PRODUCER_REQUEST_BYTES_MAX),
                )? as u32
            }
            "message.format.version" => {
                self.message_format_version = match v.trim() {
                    "1" => crate::format::MAGIC_V1,
                    "2" => crate::format::MAGIC_V2,
                    other => {
                        return Err(invalid(
                            key,
                            format!("{other:?} is not allowed; allowed: 1, 2"),
                        ));
                    }
                }
            }
            "enable.idempotence" => {
                self.enable_idempotence = match v.trim() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(invalid(
                            key,
                            format!("{other:?} is not allowed; allowed: true, false"),
                        ));
                    }
                }
            }
            _ => return Err(unknown("producer", key, PRODUCER_KEYS)),
        }
        Ok(self)
    }

    /// Sets `acks`.
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }
    /// Sets `linger.ms`.
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }
    /// Sets `batch.size` (bytes).
    pub fn batch_size(mut self, bytes: u32) -> Self {
        self.batch_size = bytes;
        self
    }
    /// Sets `compression.type`.
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }
    /// Sets `retries`.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }
    /// Sets `delivery.timeout.ms`.
    pub fn delivery_timeout(mut self, d: Duration) -> Self {
        self.delivery_timeout = d;
        self
    }
    /// Sets `max.in.flight.requests.per.connection`.
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = n;
        self
    }
    /// Sets `buffer.memory` (bytes).
    pub fn buffer_memory(mut self, bytes: u64) -> Self {
        self.buffer_memory = bytes;
        self
    }
    /// Sets `max.block.ms`.
    pub fn max_block(mut self, d: Duration) -> Self {
        self.max_block = d;
        self
    }
    /// Sets `max.request.size` (bytes).
    pub fn max_request_size(mut self, bytes: u32) -> Self {
        self.max_request_size = bytes;
        self
    }
    /// Sets `message.format.version` (1 or 2).
    pub fn message_format_version(mut self, magic: u8) -> Self {
        self.message_format_version = magic;
        self
    }
    /// Sets `enable.idempotence`.
    pub fn enable_idempotence(mut self, on: bool) -> Self {
        self.enable_idempotence = on;
        self
    }

    /// Checks every value against its bounds (also what the typed builders set).
    pub fn validate(&self) -> Result<()> {
        self.common.validate()?;
        check_range("linger.ms", ms(self.linger), 0, PRODUCER_LINGER_MS_MAX)?;
        check_range(
            "batch.size",
            u64::from(self.batch_size),
            1,
            u64::from(PRODUCER_BATCH_BYTES_MAX),
        )?;
        check_range(
            "delivery.timeout.ms",
            ms(self.delivery_timeout),
            1,
            PRODUCER_DELIVERY_TIMEOUT_MS_MAX,
        )?;
        check_range(
            "max.in.flight.requests.per.connection",
            u64::from(self.max_in_flight),
            1,
            u64::from(PRODUCER_IN_FLIGHT_PER_BROKER_MAX),
        )?;
        check_range(
            "buffer.memory",
            self.buffer_memory,
            PRODUCER_BUFFER_BYTES_MIN,
            PRODUCER_BUFFER_BYTES_MAX,
        )?;
        check_range(
            "max.block.ms",
            ms(self.max_block),
            0,
            PRODUCER_MAX_BLOCK_MS_MAX,
        )?;
        check_range(
            "max.request.size",
            u64::from(self.max_request_size),
            u64::from(PRODUCER_REQUEST_BYTES_MIN),
            u64::from(PRODUCER_REQUEST_BYTES_MAX),
        )?;
        check_range(
            "message.format.version",
            u64::from(self.message_format_version),
            1,
            2,
        )?;
        if self.enable_idempotence {
            // Kafka's rules for an idempotent producer (ProducerConfig.postProcessAndValidate).
            if self.acks != Acks::All {
                return Err(invalid(
                    "acks",
                    format!(
                        "enable.idempotence=true needs acks=all, not {}",
                        self.acks.name()
                    ),
                ));
            }
            if self.max_in_flight > PRODUCER_IDEMPOTENT_IN_FLIGHT_MAX {
                return Err(invalid(
                    "max.in.flight.requests.per.connection",
                    format!(
                        "enable.idempotence=true allows at most \
                         {PRODUCER_IDEMPOTENT_IN_FLIGHT_MAX}, not {}",
                        self.max_in_flight
                    ),
                ));
            }
            if self.retries == 0 {
                return Err(invalid(
                    "retries",
                    "enable.idempotence=true needs retries >= 1 (a retry is what it makes safe)",
                ));
            }
        }
        Ok(())
    }
}

/// A consumer's configuration. See the module docs for keys and defaults.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub common: CommonConfig,
    /// The consumer group `subscribe` joins; also names the local store file.
    pub group_id: Option<String>,
    pub auto_offset_reset: OffsetReset,
    pub enable_auto_commit: bool,
    pub auto_commit_interval: Duration,
    pub fetch_min_bytes: u32,
    pub fetch_max_wait: Duration,
    pub max_partition_fetch_bytes: u32,
    pub fetch_max_bytes: u32,
    pub max_poll_records: u32,
    /// `check.crcs`: whether each fetched set's CRCs are checked before its records are
    /// returned.
    pub check_crcs: bool,
    pub offset_store_dir: Option<PathBuf>,
    /// `session.timeout.ms` (groups).
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`; `None` means the default (see
    /// [`ConsumerConfig::effective_heartbeat_interval`]).
    pub heartbeat_interval: Option<Duration>,
    /// `max.poll.interval.ms`: sent as the join's rebalance timeout (groups).
    pub max_poll_interval: Duration,
    /// `partition.assignment.strategy` (groups).
    pub assignor: Assignor,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            common: CommonConfig::default(),
            group_id: None,
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_millis(CONSUMER_AUTO_COMMIT_INTERVAL_MS_DEFAULT),
            fetch_min_bytes: CONSUMER_FETCH_MIN_BYTES_DEFAULT,
            fetch_max_wait: Duration::from_millis(u64::from(CONSUMER_FETCH_MAX_WAIT_MS_DEFAULT)),
            max_partition_fetch_bytes: FETCH_PARTITION_BYTES_DEFAULT,
            fetch_max_bytes: FETCH_RESPONSE_BYTES_DEFAULT,
            max_poll_records: CONSUMER_MAX_POLL_RECORDS_DEFAULT,
            check_crcs: true,
            offset_store_dir: None,
            session_timeout: Duration::from_millis(CONSUMER_SESSION_TIMEOUT_MS_DEFAULT),
            heartbeat_interval: None,
            max_poll_interval: Duration::from_millis(CONSUMER_MAX_POLL_INTERVAL_MS_DEFAULT),
            assignor: Assignor::Range,
        }
    }
}

const CONSUMER_KEYS: &[&str] = &[
    "group.id",
    "auto.offset.reset",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "fetch.min.bytes",
    "fetch.max.wait.ms",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "max.poll.records",
    "check.crcs",
    "offset.store.dir",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
];

impl ConsumerConfig {
    /// A default configuration bootstrapping from `bootstrap` (`HOST:PORT[,HOST:PORT…]`).
    pub fn new(bootstrap: &str) -> ConsumerConfig {
        let mut c = ConsumerConfig::default();
        let _ = c.common.set("bootstrap.servers", bootstrap);
        c
    }

    common_builders!();

    /// Sets one key from its string form (Kafka's names), checking the value's syntax.
    pub fn set(&mut self, key: &str, v: &str) -> Result<&mut Self> {
        if self.common.set(key, v)? {
            return Ok(self);
        }
        match key {
            "group.id" => self.group_id = Some(v.to_owned()),
            "auto.offset.reset" => {
                self.auto_offset_reset = match v.trim() {
                    "earliest" => OffsetReset::Earliest,
                    "latest" => OffsetReset::Latest,
                    "none" | "error" => OffsetReset::Error,
                    other => {
                        return Err(invalid(
                            key,
                            format!(
                                "{other:?} is not allowed; allowed: earliest, latest, none (= error)"
                            ),
                        ));
                    }
                }
            }
            "enable.auto.commit" => self.enable_auto_commit = parse_bool(key, v)?,
            "auto.commit.interval.ms" => {
                self.auto_commit_interval = Duration::from_millis(parse_u64(
                    key,
                    v,
                    CONSUMER_AUTO_COMMIT_INTERVAL_MS_MIN,
                    CONSUMER_AUTO_COMMIT_INTERVAL_MS_MAX,
                )?)
            }
            "fetch.min.bytes" => {
                self.fetch_min_bytes = parse_u64(key, v, 0, u64::from(FETCH_BYTES_MAX))? as u32
            }
            "fetch.max.wait.ms" => {
                self.fetch_max_wait =
                    Duration::from_millis(parse_u64(key, v, 0, u64::from(FETCH_WAIT_MS_MAX))?)
            }
            "max.partition.fetch.bytes" => {
                self.max_partition_fetch_bytes =
                    parse_u64(key, v, 1, u64::from(FETCH_BYTES_MAX))? as u32
            }
            "fetch.max.bytes" => {
                self.fetch_max_bytes = parse_u64(key, v, 1, u64::from(FETCH_BYTES_MAX))? as u32
            }
            "max.poll.records" => {
                self.max_poll_records =
                    parse_u64(key, v, 1, u64::from(CONSUMER_MAX_POLL_RECORDS_MAX))? as u32
            }
            "check.crcs" => self.check_crcs = parse_bool(key, v)?,
            "offset.store.dir" => {
                if v.trim().is_empty() {
                    return Err(invalid(key, "is empty; give a directory path"));
                }
                self.offset_store_dir = Some(PathBuf::from(v))
            }
            "session.timeout.ms" => {
                self.session_timeout = Duration::from_millis(parse_u64(
                    key,
                    v,
                    GROUP_SESSION_TIMEOUT_MS_MIN,
                    GROUP_SESSION_TIMEOUT_MS_MAX,
                )?)
            }
            "heartbeat.interval.ms" => {
                self.heartbeat_interval = Some(Duration::from_millis(parse_u64(
                    key,
                    v,
                    CONSUMER_HEARTBEAT_INTERVAL_MS_MIN,
                    GROUP_SESSION_TIMEOUT_MS_MAX,
                )?))
            }
            "max.poll.interval.ms" => {
                self.max_poll_interval =
                    Duration::from_millis(parse_u64(key, v, 1, GROUP_REBALANCE_TIMEOUT_MS_MAX)?)
            }
            "partition.assignment.strategy" => {
                self.assignor = Assignor::from_name(v.trim()).ok_or_else(|| {
                    invalid(
                        key,
                        format!("{:?} is not allowed; allowed: range, roundrobin", v.trim()),
                    )
                })?
            }
            _ => return Err(unknown("consumer", key, CONSUMER_KEYS)),
        }
        Ok(self)
    }

    /// Sets `group.id`.
    pub fn group_id(mut self, id: impl Into<String>) -> Self {
        self.group_id = Some(id.into());
        self
    }
    /// Sets `auto.offset.reset`.
    pub fn auto_offset_reset(mut self, r: OffsetReset) -> Self {
        self.auto_offset_reset = r;
        self
    }
    /// Sets `enable.auto.commit`.
    pub fn enable_auto_commit(mut self, on: bool) -> Self {
        self.enable_auto_commit = on;
        self
    }
    /// Sets `auto.commit.interval.ms`.
    pub fn auto_commit_interval(mut self, d: Duration) -> Self {
        self.auto_commit_interval = d;
        self
    }
    /// Sets `fetch.min.bytes`.
    pub fn fetch_min_bytes(mut self, n: u32) -> Self {
        self.fetch_min_bytes = n;
        self
    }
    /// Sets `fetch.max.wait.ms`.
    pub fn fetch_max_wait(mut self, d: Duration) -> Self {
        self.fetch_max_wait = d;
        self
    }
    /// Sets `max.partition.fetch.bytes`.
    pub fn max_partition_fetch_bytes(mut self, n: u32) -> Self {
        self.max_partition_fetch_bytes = n;
        self
    }
    /// Sets `fetch.max.bytes`.
    pub fn fetch_max_bytes(mut self, n: u32) -> Self {
        self.fetch_max_bytes = n;
        self
    }
    /// Sets `max.poll.records`.
    pub fn max_poll_records(mut self, n: u32) -> Self {
        self.max_poll_records = n;
        self
    }
    /// Sets `check.crcs`.
    pub fn check_crcs(mut self, on: bool) -> Self {
        self.check_crcs = on;
        self
    }
    /// Sets `offset.store.dir`, the directory of the local offset store.
    pub fn offset_store_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.offset_store_dir = Some(dir.into());
        self
    }

    /// Sets `session.timeout.ms`.
    pub fn session_timeout(mut self, d: Duration) -> Self {
        self.session_timeout = d;
        self
    }
    /// Sets `heartbeat.interval.ms`.
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat_interval = Some(d);
        self
    }
    /// Sets `max.poll.interval.ms`.
    pub fn max_poll_interval(mut self, d: Duration) -> Self {
        self.max_poll_interval = d;
        self
    }
    /// Sets `partition.assignment.strategy`.
    pub fn assignor(mut self, a: Assignor) -> Self {
        self.assignor = a;
        self
    }

    /// The heartbeat interval in effect: `heartbeat.interval.ms`, else Kafka's default of 3 s,
    /// or a third of `session.timeout.ms` when that is shorter (so two heartbeats may be lost
    /// before the session expires). Not a third of the session always: a stable member learns
    /// of a rebalance only from its next heartbeat, so with the 45 s default session a member
    /// joining the group would wait up to 15 s for its partitions.
    pub fn effective_heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
            .unwrap_or_else(|| {
                Duration::from_millis(CONSUMER_HEARTBEAT_INTERVAL_MS_DEFAULT)
                    .min(self.session_timeout / 3)
            })
            .max(Duration::from_millis(CONSUMER_HEARTBEAT_INTERVAL_MS_MIN))
    }

    /// Checks every value against its bounds (also what the typed builders set).
    pub fn validate(&self) -> Result<()> {
        self.common.validate()?;
        check_range(
            "session.timeout.ms",
            ms(self.session_timeout),
            GROUP_SESSION_TIMEOUT_MS_MIN,
            GROUP_SESSION_TIMEOUT_MS_MAX,
        )?;
        if let Some(h) = self.heartbeat_interval
            && (ms(h) < CONSUMER_HEARTBEAT_INTERVAL_MS_MIN || h >= self.session_timeout)
        {
            return Err(invalid(
                "heartbeat.interval.ms",
                format!(
                    "{} is not allowed; allowed: {CONSUMER_HEARTBEAT_INTERVAL_MS_MIN}..{} (below session.timeout.ms)",
                    ms(h),
                    ms(self.session_timeout)
                ),
            ));
        }
        check_range(
            "max.poll.interval.ms",
            ms(self.max_poll_interval),
            1,
            GROUP_REBALANCE_TIMEOUT_MS_MAX,
        )?;
        if let Some(g) = &self.group_id
            && (g.is_empty() || g.len() > CLIENT_ID_BYTES_MAX)
        {
            return Err(invalid(
                "group.id",
                format!("must be 1..={CLIENT_ID_BYTES_MAX} bytes"),
            ));
        }
        check_range(
            "auto.commit.interval.ms",
            ms(self.auto_commit_interval),
            CONSUMER_AUTO_COMMIT_INTERVAL_MS_MIN,
            CONSUMER_AUTO_COMMIT_INTERVAL_MS_MAX,
        )?;
        check_range(
            "fetch.min.bytes",
            u64::from(self.fetch_min_bytes),
            0,
            u64::from(FETCH_BYTES_MAX),
        )?;
        check_range(
            "fetch.max.wait.ms",
            ms(self.fetch_max_wait),
            0,
            u64::from(FETCH_WAIT_MS_MAX),
        )?;
        check_range(
            "max.partition.fetch.bytes",
            u64::from(self.max_partition_fetch_bytes),
            1,
            u64::from(FETCH_BYTES_MAX),
        )?;
        check_range(
            "fetch.max.bytes",
            u64::from(self.fetch_max_bytes),
            1,
            u64::from(FETCH_BYTES_MAX),
        )?;
        check_range(
            "max.poll.records",
            u64::from(self.max_poll_records),
            1,
            u64::from(CONSUMER_MAX_POLL_RECORDS_MAX),
        )
    }
}

/// An admin client's configuration: the common keys only.
#[derive(Clone, Debug, Default)]
pub struct AdminConfig {
    pub common: CommonConfig,
}

impl AdminConfig {
    /// A default configuration bootstrapping from `bootstrap` (`HOST:PORT[,HOST:PORT…]`).
    pub fn new(bootstrap: &str) -> AdminConfig {
        let mut c = AdminConfig::default();
        let _ = c.common.set("bootstrap.servers", bootstrap);
        c
    }

    common_builders!();

    /// Sets one key from its string form.
    pub fn set(&mut self, key: &str, v: &str) -> Result<&mut Self> {
        if self.common.set(key, v)? {
            return Ok(self);
        }
        Err(unknown("admin", key, &[]))
    }

    /// Checks every value against its bounds.
    pub fn validate(&self) -> Result<()> {
        self.common.validate()
    }
}

/// Turns `&[("k","v")]`-like input into the map form; a convenience for tests and examples.
pub fn config_map<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn key_of(e: Error) -> (String, String) {
        match e {
            Error::InvalidConfig { key, reason } => (key, reason),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn producer_from_map_parses_kafka_keys() {
        let c = ProducerConfig::from_map([
            ("bootstrap.servers", "127.0.0.1:1, localhost:2"),
            ("acks", "-1"),
            ("linger.ms", "20"),
            ("batch.size", "1000"),
            ("compression.type", "zstd"),
            ("retries", "3"),
            ("max.in.flight.requests.per.connection", "1"),
        ])
        .unwrap();
        assert_eq!(c.common.bootstrap_servers, ["127.0.0.1:1", "localhost:2"]);
        assert_eq!(c.acks, Acks::All);
        assert_eq!(c.linger, Duration::from_millis(20));
        assert_eq!(c.batch_size, 1000);
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.retries, 3);
        assert_eq!(c.max_in_flight, 1);
        for (v, want) in [("all", Acks::All), ("1", Acks::Leader), ("0", Acks::None)] {
            let c = ProducerConfig::from_map([("bootstrap.servers", "h:1"), ("acks", v)]).unwrap();
            assert_eq!(c.acks, want);
            assert_eq!(Acks::from_name(want.name()), Some(want));
        }
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_allowed() {
        let cases: &[(&str, &str, &str)] = &[
            ("acks", "2", "allowed: all, -1, 1, 0"),
            (
                "compression.type",
                "brotli",
                "allowed: none, gzip, snappy, lz4, zstd",
            ),
            ("linger.ms", "-5", "allowed: 0..=60000"),
            ("linger.ms", "999999", "out of range"),
            ("batch.size", "0", "allowed: 1..="),
            ("bootstrap.servers", "nohost", "HOST:PORT"),
            ("request.timeout.ms", "x", "not a whole number"),
        ];
        for (k, v, frag) in cases {
            let e = ProducerConfig::from_map([("bootstrap.servers", "h:1"), (k, v)]).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidConfig);
            let (key, reason) = key_of(e);
            assert_eq!(key, *k);
            assert!(reason.contains(frag), "{k}={v}: {reason}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let (key, reason) = key_of(
            ProducerConfig::from_map([("bootstrap.servers", "h:1"), ("group.id", "g")])
                .unwrap_err(),
        );
        assert_eq!(key, "group.id");
        assert!(
            reason.contains("not a producer setting") && reason.contains("linger.ms"),
            "{reason}"
        );
        let (key, _) = key_of(
            ConsumerConfig::from_map([("bootstrap.servers", "h:1"), ("linger.ms", "1")])
                .unwrap_err(),
        );
        assert_eq!(key, "linger.ms");
        let (key, _) = key_of(
            AdminConfig::from_map([("bootstrap.servers", "h:1"), ("acks", "1")]).unwrap_err(),
        );
        assert_eq!(key, "acks");
    }

    #[test]
    fn bootstrap_is_required() {
        let (key, _) = key_of(ProducerConfig::from_map([("acks", "1")]).unwrap_err());
        assert_eq!(key, "bootstrap.servers");
    }

    #[test]
    fn consumer_keys_and_reset_aliases() {
        for (v, want) in [
            ("earliest", OffsetReset::Earliest),
            ("latest", OffsetReset::Latest),
            ("none", OffsetReset::Error),
            ("error", OffsetReset::Error),
        ] {
            let c =
                ConsumerConfig::from_map([("bootstrap.servers", "h:1"), ("auto.offset.reset", v)])
                    .unwrap();
            assert_eq!(c.auto_offset_reset, want);
        }
        let c = ConsumerConfig::from_map([
            ("bootstrap.servers", "h:1"),
            ("group.id", "g"),
            ("enable.auto.commit", "false"),
            ("fetch.max.wait.ms", "100"),
            ("max.poll.records", "7"),
            ("check.crcs", "false"),
            ("offset.store.dir", "/tmp/x"),
        ])
        .unwrap();
        assert_eq!(c.group_id.as_deref(), Some("g"));
        assert!(!c.enable_auto_commit);
        assert_eq!(c.max_poll_records, 7);
        assert!(!c.check_crcs);
        assert!(
            ConsumerConfig::new("h:1").check_crcs,
            "Kafka's default: checked"
        );
        assert_eq!(c.offset_store_dir, Some(PathBuf::from("/tmp/x")));
        let (key, reason) = key_of(
            ConsumerConfig::from_map([("bootstrap.servers", "h:1"), ("enable.auto.commit", "yes")])
                .unwrap_err(),
        );
        assert_eq!(key, "enable.auto.commit");
        assert!(reason.contains("true, false"));
        let (key, _) = key_of(
            ConsumerConfig::from_map([("bootstrap.servers", "h:1"), ("check.crcs", "no")])
                .unwrap_err(),
        );
        assert_eq!(key, "check.crcs");
        let (key, _) = key_of(
            ConsumerConfig::from_map([
                ("bootstrap.servers", "h:1"),
                ("fetch.max.wait.ms", "30001"),
            ])
            .unwrap_err(),
        );
        assert_eq!(key, "fetch.max.wait.ms");
    }

    /// Python passes `str(True)`; anything but true/false is still refused, naming the key.
    #[test]
    fn booleans_are_true_or_false_in_any_case() {
        for (v, want) in [
            ("true", true),
            ("True", true),
            ("TRUE", true),
            (" tRuE ", true),
            ("false", false),
            ("False", false),
            ("FALSE", false),
        ] {
            let c =
                ConsumerConfig::from_map([("bootstrap.servers", "h:1"), ("enable.auto.commit", v)])
                    .unwrap();
            assert_eq!(c.enable_auto_commit, want, "{v:?}");
        }
        for v in ["yes", "1", "t", "", "truee", "Falsey"] {
            let (key, reason) = key_of(
                ConsumerConfig::from_map([("bootstrap.servers", "h:1"), ("enable.auto.commit", v)])
                    .unwrap_err(),
            );
            assert_eq!(key, "enable.auto.commit", "{v:?}");
            assert!(reason.contains("allowed: true, false"), "{v:?}: {reason}");
        }
    }

    /// Kafka's 3 s by default, a third of the session when that is shorter, the configured
    /// value when set.
    #[test]
    fn heartbeat_interval_defaults_to_three_seconds() {
        let c = ConsumerConfig::new("h:1");
        assert_eq!(c.session_timeout, Duration::from_secs(45));
        assert_eq!(c.effective_heartbeat_interval(), Duration::from_secs(3));
        let c = ConsumerConfig::new("h:1").session_timeout(Duration::from_secs(6));
        assert_eq!(c.effective_heartbeat_interval(), Duration::from_secs(2));
        let c = ConsumerConfig::new("h:1").session_timeout(Duration::from_secs(9));
        assert_eq!(c.effective_heartbeat_interval(), Duration::from_secs(3));
        let c = ConsumerConfig::new("h:1").session_timeout(Duration::from_millis(1000));
        assert_eq!(
            c.effective_heartbeat_interval(),
            Duration::from_millis(1000) / 3
        );
        let c = ConsumerConfig::new("h:1").heartbeat_interval(Duration::from_secs(10));
        assert_eq!(c.effective_heartbeat_interval(), Duration::from_secs(10));
        let c = ConsumerConfig::from_map([
            ("bootstrap.servers", "h:1"),
            ("heartbeat.interval.ms", "250"),
        ])
        .unwrap();
        assert_eq!(c.effective_heartbeat_interval(), Duration::from_millis(250));
    }

    #[test]
    fn typed_builders_are_validated_too() {
        let c = ProducerConfig::new("h:1").linger(Duration::from_secs(3600));
        assert_eq!(key_of(c.validate().unwrap_err()).0, "linger.ms");
        let c = ProducerConfig::new("h:1").buffer_memory(10);
        assert_eq!(key_of(c.validate().unwrap_err()).0, "buffer.memory");
        let c = ConsumerConfig::new("h:1").max_poll_records(0);
        assert_eq!(key_of(c.validate().unwrap_err()).0, "max.poll.records");
        ProducerConfig::new("a:1,b:2")
            .acks(Acks::Leader)
            .compression(Compression::Lz4)
            .validate()
            .unwrap();
    }
}
