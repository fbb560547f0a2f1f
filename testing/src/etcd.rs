//! A real etcd (Debian's etcd-server; `scripts/setup.sh` installs it) for the registry and
//! cluster tests of both crates.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::process::{command_in, free_port_pair};
use crate::wait::wait_until_blocking;

/// Bound on etcd becoming healthy after a (re)start.
const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one health probe (a stopped etcd must not stall the wait).
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A real `etcd` on free loopback ports over a data directory of its own; killed on drop.
#[derive(Debug)]
pub struct TestEtcd {
    child: Option<Child>,
    /// The address it listens on (127.0.0.1, or its address in a network namespace).
    pub host: String,
    /// Its network namespace, when it runs in one (the broker's `netns.rs`).
    pub netns: Option<String>,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The directory of [`TestEtcd::start_temp`], removed on drop.
    _temp: Option<tempfile::TempDir>,
}

/// The etcd binary: `$SLUICEWAY_TEST_ETCD`, else `etcd` on the `PATH`.
fn etcd_binary() -> String {
    std::env::var("SLUICEWAY_TEST_ETCD").unwrap_or_else(|_| "etcd".to_owned())
}

impl TestEtcd {
    /// Starts etcd over `<root>/etcd` (log `<root>/etcd.log`) and waits until it is healthy.
    pub fn start(root: &Path) -> TestEtcd {
        let (client_port, peer_port) = free_port_pair();
        TestEtcd::start_in(root, None, "127.0.0.1", client_port, peer_port)
    }

    /// Starts etcd in a temporary directory of its own, removed when it is dropped.
    pub fn start_temp() -> TestEtcd {
        let temp = tempfile::tempdir().unwrap();
        let mut etcd = TestEtcd::start(temp.path());
        etcd._temp = Some(temp);
        etcd
    }

    /// Starts etcd listening on `host`, inside network namespace `netns` when given (`host` is
    /// then its address there).
    pub fn start_in(
        root: &Path,
        netns: Option<&str>,
        host: &str,
        client_port: u16,
        peer_port: u16,
    ) -> TestEtcd {
        let mut etcd = TestEtcd {
            child: None,
            host: host.to_owned(),
            netns: netns.map(str::to_owned),
            client_port,
            peer_port,
            data_dir: root.join("etcd"),
            log: root.join("etcd.log"),
            _temp: None,
        };
        etcd.spawn();
        etcd
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let bin = etcd_binary();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let client = self.url();
        let peer = format!("http://{}:{}", self.host, self.peer_port);
        let child = command_in(self.netns.as_deref(), &bin)
            .args(["--name", "sluiceway-test", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("sluiceway-test={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {bin:?}: {e}. These tests need a real etcd: run \
                     scripts/setup.sh (installs Debian's etcd-server), or point \
                     SLUICEWAY_TEST_ETCD at an etcd binary"
                )
            });
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let what = format!("etcd on port {} is healthy", self.client_port);
        wait_until_blocking(&what, ETCD_START_TIMEOUT, || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "etcd exited with {status} before it was healthy; log:\n{}",
                    self.log_text()
                );
            }
            self.healthy()
        });
    }

    /// `GET /health` answered `{"health":"true"}` (etcd has a leader).
    pub fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect((self.host.as_str(), self.client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(HEALTH_PROBE_TIMEOUT));
        let _ = s.set_write_timeout(Some(HEALTH_PROBE_TIMEOUT));
        let req = format!("GET /health HTTP/1.0\r\nHost: {}\r\n\r\n", self.endpoint());
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    /// `HOST:PORT` of the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }

    /// `http://HOST:PORT` of the client endpoint (what etcd clients connect to).
    pub fn url(&self) -> String {
        format!("http://{}", self.endpoint())
    }

    /// The broker's `--registry` value.
    pub fn registry_url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, keeping the data directory. Does nothing when it is not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports over the same data directory (killing it first when
    /// it still runs), and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.kill9();
    }
}
