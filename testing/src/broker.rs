//! A real `sluiceway broker` process on loopback ([`TestBroker`]) and its `/metrics`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use crate::metrics::sample;
use crate::process::{command_in, signal};
use crate::wait::{CONDITION_TIMEOUT, wait_for, wait_for_blocking};

/// Bound on a broker printing its address after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a broker exiting after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// The `sluiceway` binary under test. Cargo builds it for the broker's integration tests and
/// names it in `CARGO_BIN_EXE_sluiceway` (at compile time there, and at run time for newer
/// Cargo); a test binary of another crate finds it beside its own directory
/// (`target/<profile>/deps/<test>` → `target/<profile>/sluiceway`).
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("CARGO_BIN_EXE_sluiceway") {
            return path;
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in target/<profile>/deps");
        let path = profile_dir.join(format!("sluiceway{}", std::env::consts::EXE_SUFFIX));
        assert!(
            path.is_file(),
            "no broker binary at {} (build it: cargo build -p sluiceway-broker)",
            path.display()
        );
        path.to_string_lossy().into_owned()
    })
}

/// The broker flag every test broker gets unless the test sets it (see [`TestBroker::start_on`]).
const GROUP_DELAY_FLAG: &str = "--group-initial-rebalance-delay-ms";
const GROUP_DELAY_ENV: &str = "SLUICEWAY_GROUP_INITIAL_REBALANCE_DELAY_MS";

/// A `sluiceway broker` process on 127.0.0.1:0 over `data_dir`; killed on drop.
///
/// Test brokers run with no initial rebalance delay (`--group-initial-rebalance-delay-ms 0`,
/// as Kafka's own test setups do): with the default 3 s every test's first group join would
/// wait 3 s. A test that passes the flag or its environment variable itself gets its value;
/// [`TestBroker::start_with_broker_defaults`] starts one with the broker's own default.
#[derive(Debug)]
pub struct TestBroker {
    child: Option<Child>,
    pub addr: String,
    pub metrics_addr: Option<String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl TestBroker {
    /// Starts a broker over `<root>/data`, logging to `<root>/broker.log`.
    pub fn start(root: &Path) -> TestBroker {
        TestBroker::start_with(root, &[])
    }

    pub fn start_with(root: &Path, extra: &[&str]) -> TestBroker {
        TestBroker::start_full(root, extra, &[])
    }

    /// With extra flags and environment variables.
    pub fn start_full(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> TestBroker {
        TestBroker::start_on(root, "127.0.0.1:0", extra, env)
    }

    /// Listening on `listen` (e.g. the address of a stopped broker, to restart it in place).
    /// Adds `--group-initial-rebalance-delay-ms 0` unless `extra` or `env` sets the delay. (A
    /// `--config` file's value would lose to the added flag: set it with the flag instead.)
    pub fn start_on(root: &Path, listen: &str, extra: &[&str], env: &[(&str, &str)]) -> TestBroker {
        TestBroker::start_in(None, root, listen, extra, env)
    }

    /// Like [`TestBroker::start_on`], inside network namespace `netns` when given (`ip netns
    /// exec`, which execs the broker: the child's pid is the broker's).
    pub fn start_in(
        netns: Option<&str>,
        root: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestBroker {
        let mut args: Vec<&str> = Vec::with_capacity(extra.len() + 2);
        let sets_delay = extra.iter().any(|a| a.starts_with(GROUP_DELAY_FLAG))
            || env.iter().any(|(k, _)| *k == GROUP_DELAY_ENV);
        if !sets_delay {
            args.extend([GROUP_DELAY_FLAG, "0"]);
        }
        args.extend_from_slice(extra);
        TestBroker::spawn(netns, root, listen, &args, env)
    }

    /// With every setting at the broker's own default, including the 3 s initial rebalance
    /// delay: for tests of what users see when consumers start together.
    pub fn start_with_broker_defaults(root: &Path) -> TestBroker {
        TestBroker::spawn(None, root, "127.0.0.1:0", &[], &[])
    }

    fn spawn(
        netns: Option<&str>,
        root: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestBroker {
        let data_dir = root.join("data");
        let log = root.join("broker.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = command_in(netns, bin())
            .args(["broker", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen", listen, "--log", "info,sluiceway_broker=debug"])
            .args(extra)
            // Not inherited from the test's environment: the flag, `env` or the default decide.
            .env_remove(GROUP_DELAY_ENV)
            .envs(env.iter().copied())
            .env_remove("SLUICEWAY_BOOTSTRAP")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn sluiceway broker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match lines.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line.trim_end().to_owned()).is_err() {
                            // Keep draining so the broker never blocks on a full pipe.
                            continue;
                        }
                    }
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut metrics_addr = None;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        break a.to_owned();
                    }
                    if let Some(a) = line.strip_prefix("metrics on ") {
                        metrics_addr = Some(a.to_owned());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the broker did not print its address; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        };
        TestBroker {
            child: Some(child),
            addr,
            metrics_addr,
            data_dir,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then wait for the process to exit (killed on drop if it never does).
    pub fn stop(&mut self) -> ExitStatus {
        signal(self.pid(), "-TERM");
        let child = self.child.as_mut().expect("running");
        let status = wait_for_blocking("the broker exits after SIGTERM", STOP_TIMEOUT, || {
            child.try_wait().unwrap()
        });
        self.child = None;
        status
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A `sluiceway` command pointed at this broker through `SLUICEWAY_BOOTSTRAP`.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("SLUICEWAY_BOOTSTRAP", &self.addr);
        c
    }

    /// Runs the command line with `stdin` as its input.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cli()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    }

    /// The broker's `/metrics` answer, status line and headers included (the broker must have
    /// been started with `--metrics-listen`).
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_addr.clone().expect("metrics address printed");
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        body
    }

    /// The broker's count of handled requests of one kind (`produce`, `metadata`, …), from
    /// `/metrics` (the broker must have been started with `--metrics-listen`).
    pub async fn requests_handled(&self, kind: &str) -> u64 {
        let series = format!("sluiceway_requests_total{{request=\"{kind}\"}}");
        self.metric(&series)
            .await
            .unwrap_or_else(|| panic!("no {series} in /metrics")) as u64
    }

    /// The value of one `/metrics` series (name and labels as rendered, e.g.
    /// `sluiceway_waiting_fetches`), `None` when the broker does not render it.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        sample(&self.metrics().await, series)
    }

    /// Waits until the `/metrics` series satisfies `ok` and returns its value: how tests wait
    /// for what the broker does inside (a fetch parked in its long poll, connections closed).
    pub async fn wait_metric(&self, series: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
        wait_for(
            &format!("{what} ({series})"),
            CONDITION_TIMEOUT,
            async || self.metric(series).await.filter(|v| ok(*v)),
        )
        .await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
