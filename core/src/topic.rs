//! Topics: name validation and per-topic configuration.
//!
//! A topic's configuration is a map of Kafka's topic-config names to string values (as an
//! operator writes them: `--config retention.ms=86400000`). Only the *overrides* are stored in
//! the registry; [`TopicConfig::parse`] lays them over the broker's defaults and turns them into
//! the storage engine's [`LogConfig`] plus the topic-level settings the log does not know
//! (`min.insync.replicas`). Every rejection is [`Error::InvalidConfig`] naming the key.
//!
//! Keys (the compatibility surface: names are only added):
//! `segment.bytes`, `segment.ms`, `retention.ms` (-1 = forever), `retention.bytes` (-1 = no
//! bound), `message.timestamp.type` (CreateTime | LogAppendTime), `min.insync.replicas`,
//! `max.message.bytes`, `index.interval.bytes`, `segment.index.bytes`, and the flush policy:
//! `flush.policy` (always | interval | os) with `flush.ms` for `interval` (setting `flush.ms`
//! alone implies `interval`).
//!
//! Features: name validation, the key names and [`parse_key_value`] are always compiled (the
//! client validates names); [`TopicConfig`], which builds a storage [`LogConfig`], is behind
//! `server`.

#[cfg(feature = "server")]
use std::collections::BTreeMap;

use crate::error::{Error, Result};
#[cfg(feature = "server")]
use crate::format::TimestampType;
use crate::limits::TOPIC_NAME_BYTES_MAX;
#[cfg(feature = "server")]
use crate::limits::{FLUSH_INTERVAL_MS_DEFAULT, REPLICATION_FACTOR_MAX};
#[cfg(feature = "server")]
use crate::storage::{FlushPolicy, LogConfig};

/// Checks a topic name: `[a-zA-Z0-9._-]{1,249}`, and not `.` or `..` (they are directory names).
pub fn validate_topic_name(name: &str) -> Result<()> {
    let invalid = |reason: String| Error::InvalidTopic {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("a topic name must not be empty".into()));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(invalid(format!(
            "{} characters is longer than the limit of {TOPIC_NAME_BYTES_MAX}",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not allowed".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(format!(
            "character {c:?} is not allowed; use [a-zA-Z0-9._-]"
        )));
    }
    Ok(())
}

pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_MS: &str = "segment.ms";
pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const MESSAGE_TIMESTAMP_TYPE: &str = "message.timestamp.type";
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const INDEX_INTERVAL_BYTES: &str = "index.interval.bytes";
pub const SEGMENT_INDEX_BYTES: &str = "segment.index.bytes";
pub const FLUSH_POLICY: &str = "flush.policy";
pub const FLUSH_MS: &str = "flush.ms";

/// Every topic configuration key, in the order `describe` prints them.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    SEGMENT_BYTES,
    SEGMENT_MS,
    RETENTION_MS,
    RETENTION_BYTES,
    MESSAGE_TIMESTAMP_TYPE,
    MIN_INSYNC_REPLICAS,
    MAX_MESSAGE_BYTES,
    INDEX_INTERVAL_BYTES,
    SEGMENT_INDEX_BYTES,
    FLUSH_POLICY,
    FLUSH_MS,
];

#[cfg(feature = "server")]
/// A topic's effective configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    /// What the partition logs get.
    pub log: LogConfig,
    /// `min.insync.replicas`: with acks=all, the fewest in-sync replicas an append needs.
    pub min_insync_replicas: u32,
}

#[cfg(feature = "server")]
impl Default for TopicConfig {
    fn default() -> TopicConfig {
        TopicConfig {
            log: LogConfig::default(),
            min_insync_replicas: 1,
        }
    }
}

#[cfg(feature = "server")]
fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(feature = "server")]
fn parse_u64(key: &str, v: &str) -> Result<u64> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| invalid(key, format!("{v:?} is not a non-negative integer")))
}

#[cfg(feature = "server")]
fn parse_u32(key: &str, v: &str) -> Result<u32> {
    v.trim()
        .parse::<u32>()
        .map_err(|_| invalid(key, format!("{v:?} is not an integer in [0, {}]", u32::MAX)))
}

#[cfg(feature = "server")]
/// `-1` means "no bound" (Kafka's convention), otherwise a non-negative integer.
fn parse_optional_u64(key: &str, v: &str) -> Result<Option<u64>> {
    match v.trim() {
        "-1" => Ok(None),
        other => parse_u64(key, other).map(Some),
    }
}

#[cfg(feature = "server")]
impl TopicConfig {
    /// Lays `overrides` over `defaults` (both maps of Kafka keys) and validates the result.
    /// Unknown keys and bad values are [`Error::InvalidConfig`] naming the key.
    pub fn parse(
        defaults: &BTreeMap<String, String>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig> {
        let mut merged = defaults.clone();
        merged.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut config = TopicConfig::default();
        let mut flush_policy: Option<&str> = None;
        let mut flush_ms: Option<u64> = None;
        for (key, value) in &merged {
            let log = &mut config.log;
            match key.as_str() {
                SEGMENT_BYTES => log.segment_bytes = parse_u64(key, value)?,
                SEGMENT_MS => log.segment_ms = parse_u64(key, value)?,
                RETENTION_MS => log.retention_ms = parse_optional_u64(key, value)?,
                RETENTION_BYTES => log.retention_bytes = parse_optional_u64(key, value)?,
                MESSAGE_TIMESTAMP_TYPE => {
                    log.timestamp_type =
                        TimestampType::from_name(value.trim()).ok_or_else(|| {
                            invalid(
                                key,
                                format!("{value:?} is neither CreateTime nor LogAppendTime"),
                            )
                        })?;
                }
                MIN_INSYNC_REPLICAS => {
                    let n = parse_u32(key, value)?;
                    if !(1..=REPLICATION_FACTOR_MAX).contains(&n) {
                        return Err(invalid(
                            key,
                            format!("{n} is outside [1, {REPLICATION_FACTOR_MAX}]"),
                        ));
                    }
                    config.min_insync_replicas = n;
                }
                MAX_MESSAGE_BYTES => log.max_message_bytes = parse_u32(key, value)?,
                INDEX_INTERVAL_BYTES => log.index_interval_bytes = parse_u32(key, value)?,
                SEGMENT_INDEX_BYTES => log.index_bytes_max = parse_u32(key, value)?,
                FLUSH_POLICY => flush_policy = Some(value.trim()),
                FLUSH_MS => flush_ms = Some(parse_u64(key, value)?),
                other => {
                    return Err(invalid(
                        other,
                        format!(
                            "unknown topic config key; known keys: {}",
                            TOPIC_CONFIG_KEYS.join(", ")
                        ),
                    ));
                }
            }
        }
        config.log.flush = match (flush_policy, flush_ms) {
            (None, None) => config.log.flush,
            (None | Some("interval"), ms) => FlushPolicy::Interval {
                ms: ms.unwrap_or(FLUSH_INTERVAL_MS_DEFAULT),
            },
            (Some("always"), None) => FlushPolicy::Always,
            (Some("os"), None) => FlushPolicy::Os,
            (Some(p @ ("always" | "os")), Some(_)) => {
                return Err(invalid(
                    FLUSH_MS,
                    format!("only applies to flush.policy=interval, not {p}"),
                ));
            }
            (Some(other), _) => {
                return Err(invalid(
                    FLUSH_POLICY,
                    format!("{other:?} is not one of always, interval, os"),
                ));
            }
        };
        config.log.validate()?;
        Ok(config)
    }

    /// Every key with its effective value, as Kafka names and writes them.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let log = &self.log;
        let opt = |v: Option<u64>| v.map_or_else(|| "-1".to_owned(), |v| v.to_string());
        let (policy, ms) = match log.flush {
            FlushPolicy::Always => ("always", None),
            FlushPolicy::Interval { ms } => ("interval", Some(ms)),
            FlushPolicy::Os => ("os", None),
        };
        let mut m = BTreeMap::new();
        m.insert(SEGMENT_BYTES.to_owned(), log.segment_bytes.to_string());
        m.insert(SEGMENT_MS.to_owned(), log.segment_ms.to_string());
        m.insert(RETENTION_MS.to_owned(), opt(log.retention_ms));
        m.insert(RETENTION_BYTES.to_owned(), opt(log.retention_bytes));
        m.insert(
            MESSAGE_TIMESTAMP_TYPE.to_owned(),
            log.timestamp_type.name().to_owned(),
        );
        m.insert(
            MIN_INSYNC_REPLICAS.to_owned(),
            self.min_insync_replicas.to_string(),
        );
        m.insert(
            MAX_MESSAGE_BYTES.to_owned(),
            log.max_message_bytes.to_string(),
        );
        m.insert(
            INDEX_INTERVAL_BYTES.to_owned(),
            log.index_interval_bytes.to_string(),
        );
        m.insert(
            SEGMENT_INDEX_BYTES.to_owned(),
            log.index_bytes_max.to_string(),
        );
        m.insert(FLUSH_POLICY.to_owned(), policy.to_owned());
        if let Some(ms) = ms {
            m.insert(FLUSH_MS.to_owned(), ms.to_string());
        }
        m
    }
}

/// Splits one `KEY=VALUE` argument (the command line's `--config`).
pub fn parse_key_value(arg: &str) -> Result<(String, String)> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(Error::InvalidArgument(format!("{arg:?} is not KEY=VALUE"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "server")]
    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn topic_names() {
        for ok in ["a", "orders", "a.b_c-D9", &"x".repeat(249), "..."] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a b", "a/b", "é", &"x".repeat(250)] {
            assert!(
                matches!(validate_topic_name(bad), Err(Error::InvalidTopic { .. })),
                "{bad:?}"
            );
        }
    }

    #[cfg(feature = "server")]
    #[test]
    fn parse_and_render() {
        let c = TopicConfig::parse(
            &map(&[("retention.ms", "1000")]),
            &map(&[
                ("retention.ms", "-1"),
                ("segment.bytes", "4096"),
                ("flush.ms", "50"),
            ]),
        )
        .unwrap();
        assert_eq!(c.log.retention_ms, None);
        assert_eq!(c.log.segment_bytes, 4096);
        assert_eq!(c.log.flush, FlushPolicy::Interval { ms: 50 });
        let back = TopicConfig::parse(&BTreeMap::new(), &c.to_map()).unwrap();
        assert_eq!(back, c);
    }

    #[cfg(feature = "server")]
    #[test]
    fn errors_name_the_key() {
        let key_of =
            |pairs: &[(&str, &str)]| match TopicConfig::parse(&BTreeMap::new(), &map(pairs)) {
                Err(Error::InvalidConfig { key, .. }) => key,
                other => panic!("{other:?}"),
            };
        assert_eq!(key_of(&[("segment.bytes", "ten")]), "segment.bytes");
        assert_eq!(key_of(&[("segment.bytes", "1")]), "segment.bytes");
        assert_eq!(key_of(&[("no.such.key", "1")]), "no.such.key");
        assert_eq!(
            key_of(&[("message.timestamp.type", "Now")]),
            "message.timestamp.type"
        );
        assert_eq!(
            key_of(&[("min.insync.replicas", "0")]),
            "min.insync.replicas"
        );
        assert_eq!(key_of(&[("flush.policy", "sometimes")]), "flush.policy");
        assert_eq!(
            key_of(&[("flush.policy", "always"), ("flush.ms", "5")]),
            "flush.ms"
        );
    }
}
