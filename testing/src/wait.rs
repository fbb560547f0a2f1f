//! Bounded waits on conditions. Each polls its condition at [`POLL_INTERVAL`] until it holds,
//! and panics naming what it waited for once its deadline passes. The deadlines are liveness
//! bounds (a hang becomes a failure with a message), never assertions on speed.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long one test may run before [`bounded`] fails it, unless the test names its own bound.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a condition (a failover, a rebalance, a metric reaching a value) may take to hold.
pub const CONDITION_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a condition is polled. Short enough that tests do not idle, long enough that the
/// polling itself does not load the two-core machine the tests share.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Runs `f`, failing the test if it has not finished within `limit`.
pub async fn bounded<F: Future>(limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("test timed out after {limit:?}"))
}

/// Waits until `f` returns true; panics naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    wait_for(what, timeout, async || f().await.then_some(())).await
}

/// Waits until `f` returns `Some` and returns its value; panics naming `what` after `timeout`.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    wait_reporting(what, timeout, async || f().await.ok_or(())).await
}

/// Waits until `f` returns `Ok` and returns its value; after `timeout` panics naming `what`
/// and the last state `f` reported in its `Err` (what the test saw instead).
pub async fn wait_reporting<T, S: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Result<T, S>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting until {what}; last seen: {last:?}"
            ),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`wait_until`] for code outside a runtime (blocking closures, a thread of its own).
pub fn wait_until_blocking(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    wait_for_blocking(what, timeout, || f().then_some(()))
}

/// [`wait_for`] for code outside a runtime (blocking closures, a thread of its own).
pub fn wait_for_blocking<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}
