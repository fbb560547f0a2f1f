//! The clock seam. The log asks a [`Clock`] for the time whenever a decision depends on it
//! (rolling by `segment.ms`, retention by `retention.ms`, log-append timestamps, the `interval`
//! flush policy), so tests can drive those decisions exactly with a [`ManualClock`].

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::types::TimestampMs;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug {
    fn now_ms(&self) -> TimestampMs;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TimestampMs {
        // A clock before 1970 is a misconfigured machine; report the epoch rather than panic.
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        TimestampMs(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to. Shared between a test and the log through an `Arc`.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    pub fn new(start: TimestampMs) -> ManualClock {
        ManualClock {
            now: AtomicI64::new(start.0),
        }
    }

    pub fn set(&self, now: TimestampMs) {
        self.now.store(now.0, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: u64) {
        let ms = i64::try_from(ms).unwrap_or(i64::MAX);
        // Saturate instead of wrapping: a test that advances "forever" means "very late".
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(ms))
            });
    }
}

impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock::new(TimestampMs(0))
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> TimestampMs {
        TimestampMs(self.now.load(Ordering::SeqCst))
    }
}
