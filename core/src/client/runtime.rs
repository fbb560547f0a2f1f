//! The client core's own tokio runtime: one per process, created lazily by the first client,
//! shared by every producer, consumer and admin whatever thread (or language) calls them.
//!
//! Why the core owns it: a language binding calls the client from threads the core does not
//! control (Python's, Node's main thread, a JVM thread), often without any tokio runtime, and
//! a runtime borrowed from the caller may end before the client's background tasks do. So
//! every background task (sender, fetcher, group membership) is spawned here, and every async
//! call is polled with this runtime's context entered ([`Home::run`]): its timers and sockets
//! are driven by this runtime's threads whatever executor (or plain thread, [`Home::block_on`])
//! polls it. Calls are not spawned, so dropping one cancels it like any Rust future.
//!
//! - Worker threads: the machine's parallelism clamped to
//!   [`CLIENT_RUNTIME_WORKER_THREADS_MAX`] (a client is I/O-bound: more threads only add
//!   wake-ups), named `sluiceway-client-N` so they are recognisable in `top -H` and profiles.
//! - **fork()**: only the forking thread survives in the child, so the parent's runtime has no
//!   threads there. Each client records the process id it was made in ([`Home`]); a call in
//!   another process fails at once with [`Error::Forked`] (code CLOSED) instead of hanging. A
//!   client created in the child gets a fresh runtime (the parent's is leaked, never dropped:
//!   dropping it would wait for threads that do not exist).
//! - Blocking entry points ([`Home::block_on`]) poll the call on the calling thread and park it
//!   in between, so they work from any thread that is not itself one of this runtime's threads;
//!   called from one (a task of the client itself) they return [`Error::InvalidArgument`]
//!   rather than deadlocking the runtime.
//! - **Interrupts**: a binding whose host language handles signals on the calling thread
//!   (Python's Ctrl-C) installs a check with [`set_interrupt_check`]; a blocking call then
//!   wakes every [`CLIENT_INTERRUPT_CHECK_INTERVAL_MS`] to ask it and, when it says so, drops
//!   the call (calls are cancel-safe) and returns [`Error::Interrupted`].
//! - **Async bridges**: [`spawn`] runs a future on this runtime, for a binding that completes a
//!   host-language future (an asyncio future, a JS promise) from the Rust side without a
//!   thread per call.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::{Handle, Runtime};

use crate::error::{Error, Result};
use crate::limits::{CLIENT_INTERRUPT_CHECK_INTERVAL_MS, CLIENT_RUNTIME_WORKER_THREADS_MAX};

/// The process's client runtime and the process id it belongs to.
static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

thread_local! {
    /// Set on the client runtime's own threads (workers and its blocking pool).
    static ON_CLIENT_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The binding's interrupt check (see [`set_interrupt_check`]).
static INTERRUPT_CHECK: OnceLock<fn() -> bool> = OnceLock::new();

/// Installs `check`, asked by every blocking call of this process every
/// [`CLIENT_INTERRUPT_CHECK_INTERVAL_MS`] while it waits, on the waiting thread; when it returns
/// true the call is dropped (cancelled) and returns [`Error::Interrupted`]. For bindings whose
/// host handles signals on the caller's thread (Python: `PyErr_CheckSignals`). The first
/// check installed stays; a second call is ignored.
pub fn set_interrupt_check(check: fn() -> bool) {
    let _ = INTERRUPT_CHECK.set(check);
}

/// The installed interrupt check, if any.
pub(crate) fn interrupt_check() -> Option<fn() -> bool> {
    INTERRUPT_CHECK.get().copied()
}

/// Runs `fut` on this process's client runtime (created if needed) and returns a handle that
/// cancels it. For bindings that complete a host-language future when `fut` ends (an asyncio
/// future, a JavaScript promise); the client calls inside `fut` check the process themselves.
pub fn spawn<F>(fut: F) -> Result<SpawnedTask>
where
    F: Future<Output = ()> + Send + 'static,
{
    Ok(SpawnedTask(runtime()?.spawn(fut).abort_handle()))
}

/// A future running on the client runtime ([`spawn`]); dropping the handle does not stop it.
#[derive(Debug)]
pub struct SpawnedTask(tokio::task::AbortHandle);

impl SpawnedTask {
    /// Cancels the future (it is dropped at its next await point; client calls are
    /// cancel-safe).
    pub fn abort(&self) {
        self.0.abort();
    }
}

/// This process's id without a system call per client call (glibc does not cache `getpid`, and
/// [`Home::check`] runs on every call, `send` included): read once and cached, and forgotten in
/// a forked child by an `atfork` handler, so the child reads its own.
pub(crate) fn current_pid() -> u32 {
    #[cfg(unix)]
    {
        static PID: AtomicU32 = AtomicU32::new(0);
        static HOOK: std::sync::Once = std::sync::Once::new();
        extern "C" fn forget_in_child() {
            PID.store(0, Ordering::Relaxed);
        }
        let cached = PID.load(Ordering::Relaxed);
        if cached != 0 {
            return cached;
        }
        HOOK.call_once(|| {
            // SAFETY: `pthread_atfork` only records the handler, which stores to an atomic
            // (async-signal-safe, as a handler run in a forked child must be).
            #[allow(unsafe_code)]
            unsafe {
                libc::pthread_atfork(None, None, Some(forget_in_child));
            }
        });
        // Stored after the handler is in place, so a fork from now on resets it.
        let pid = std::process::id();
        PID.store(pid, Ordering::Relaxed);
        pid
    }
    #[cfg(not(unix))]
    std::process::id()
}

/// The client runtime of this process, created on first use (again in a forked child).
fn runtime() -> Result<Arc<Runtime>> {
    let pid = current_pid();
    let mut slot = RUNTIME.lock();
    match &*slot {
        Some((owner, rt)) if *owner == pid => return Ok(rt.clone()),
        Some(_) => {
            // A child after fork(): the parent's runtime has no threads here. Leak it.
            if let Some((_, old)) = slot.take() {
                std::mem::forget(old);
            }
        }
        None => {}
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, CLIENT_RUNTIME_WORKER_THREADS_MAX);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name_fn(|| {
            static N: AtomicUsize = AtomicUsize::new(0);
            format!("sluiceway-client-{}", N.fetch_add(1, Ordering::Relaxed))
        })
        .on_thread_start(|| ON_CLIENT_THREAD.with(|c| c.set(true)))
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start the client runtime: {e}")))?;
    let rt = Arc::new(rt);
    *slot = Some((pid, rt.clone()));
    Ok(rt)
}

/// Where a client lives: the runtime it was created on and the process that created it.
/// Every public client method goes through this, so a forked child gets a clear error.
#[derive(Clone, Debug)]
pub(crate) struct Home {
    handle: Handle,
    pid: u32,
    what: &'static str,
}

impl Home {
    /// The home of a new client of kind `what` ("producer", "consumer", "admin").
    pub(crate) fn new(what: &'static str) -> Result<Home> {
        Ok(Home {
            handle: runtime()?.handle().clone(),
            pid: current_pid(),
            what,
        })
    }

    /// Fails in a process other than the one the client was created in.
    pub(crate) fn check(&self) -> Result<()> {
        let child = current_pid();
        if child == self.pid {
            Ok(())
        } else {
            Err(Error::Forked {
                what: self.what,
                parent: self.pid,
                child,
            })
        }
    }

    /// The runtime's handle, for spawning background tasks.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Awaits `fut` from any executor with the client runtime's context entered at every
    /// poll, so the tokio timers, sockets and spawns inside it belong to the client runtime
    /// (whose threads drive them) whatever executor polls it — and without a spawn, so
    /// dropping the returned future cancels the call: a dropped `poll` never takes records
    /// nobody receives.
    pub(crate) async fn run<T, F>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        self.check()?;
        InRuntime {
            handle: &self.handle,
            fut: Box::pin(fut),
        }
        .await
    }

    /// Runs `fut` to completion on the calling thread, blocking it between polls (the client
    /// runtime's threads drive timers and sockets and wake it). For the synchronous APIs of
    /// bindings, which release their interpreter lock around this.
    pub(crate) fn block_on<T, F>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        self.check()?;
        if ON_CLIENT_THREAD.with(|c| c.get()) {
            return Err(Error::InvalidArgument(format!(
                "a blocking {} call was made on a client runtime thread; use the async method",
                self.what
            )));
        }
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        let interrupt = interrupt_check();
        loop {
            let polled = {
                let _entered = self.handle.enter();
                fut.as_mut().poll(&mut cx)
            };
            match (polled, interrupt) {
                (Poll::Ready(r), _) => return r,
                // A wake-up that came before this park returns from it at once.
                (Poll::Pending, None) => std::thread::park(),
                (Poll::Pending, Some(check)) => {
                    std::thread::park_timeout(Duration::from_millis(
                        CLIENT_INTERRUPT_CHECK_INTERVAL_MS,
                    ));
                    // A spurious poll after a timed-out park is harmless: futures tolerate it.
                    if check() {
                        return Err(Error::Interrupted);
                    }
                }
            }
        }
    }
}

/// Wakes the thread blocked in [`Home::block_on`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A future polled inside the client runtime's context (see [`Home::run`]).
struct InRuntime<'a, F> {
    handle: &'a Handle,
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for InRuntime<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = self.handle.enter();
        self.fut.as_mut().poll(cx)
    }
}

/// How much of a [`PreciseSleep`] is left to a blocking-pool thread: tokio's timer fires on the
/// first 1 ms tick at or after a deadline (and its wake can add a little), so it sleeps to two
/// ticks before and the OS sleeps the rest.
const PRECISE_TAIL: std::time::Duration = std::time::Duration::from_millis(2);

/// A sleep that ends at its deadline, to the OS's precision (tens of µs), rather than up to 1 ms
/// after it as tokio's timer wheel does: the producer's `linger.ms` is an upper bound (Kafka:
/// "up to"), and the benchmark's fixed-rate generator must not charge its own lateness to the
/// system it measures. Cancel-safe and reusable across the `select!` of a loop: the blocking
/// tail started for a deadline is awaited again, not started again, when the next call asks
/// for the same deadline, so a loop woken many times before its deadline sleeps the tail on
/// one thread.
#[derive(Debug, Default)]
pub(crate) struct PreciseSleep {
    tail: Option<(std::time::Instant, tokio::task::JoinHandle<()>)>,
}

impl PreciseSleep {
    pub(crate) async fn until(&mut self, at: std::time::Instant) {
        if let Some(coarse) = at.checked_sub(PRECISE_TAIL)
            && coarse > std::time::Instant::now()
        {
            tokio::time::sleep_until(tokio::time::Instant::from_std(coarse)).await;
        }
        if self
            .tail
            .as_ref()
            .is_none_or(|(deadline, _)| *deadline != at)
        {
            let rest = at.saturating_duration_since(std::time::Instant::now());
            if rest.is_zero() {
                self.tail = None;
                return;
            }
            let sleep = tokio::task::spawn_blocking(move || std::thread::sleep(rest));
            self.tail = Some((at, sleep));
        }
        if let Some((_, sleep)) = &mut self.tail {
            let _ = sleep.await;
        }
        self.tail = None;
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::Poll;
    use std::time::{Duration, Instant};

    use super::PreciseSleep;

    /// Polls `f` once and drops it (cancels it); true when it was still pending.
    async fn pending_once(f: impl Future) -> bool {
        let mut f = std::pin::pin!(f);
        std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_pending())).await
    }

    /// Never returns before its deadline; a call cancelled in its blocking tail leaves the tail
    /// running, and the next call for the same deadline awaits that one instead of another.
    #[tokio::test]
    async fn precise_sleep_reuses_its_tail_across_cancellations() {
        let mut sleep = PreciseSleep::default();
        let at = Instant::now() + Duration::from_millis(1);
        let id = |s: &PreciseSleep| s.tail.as_ref().map(|(d, h)| (*d, h.id()));
        // The deadline is < 2 ms away: the first pending point is inside the tail.
        assert!(pending_once(sleep.until(at)).await, "the deadline is ahead");
        let first = id(&sleep).expect("a tail is running");
        assert_eq!(first.0, at);
        if pending_once(sleep.until(at)).await {
            assert_eq!(id(&sleep), Some(first), "the same tail, not a second one");
        }
        sleep.until(at).await;
        assert!(Instant::now() >= at);
        assert!(sleep.tail.is_none());
        // A deadline already passed returns at once.
        sleep.until(Instant::now()).await;
        assert!(sleep.tail.is_none());
    }
}
