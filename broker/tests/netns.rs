//! A network the partition tests can cut: etcd, the brokers and the test's own clients each in a
//! Linux network namespace of their own, joined by a bridge, with links cut and healed by
//! nftables rules inside the namespaces (issue #17).
//!
//! ```text
//!            ┌──────────── <p>-hub: bridge br0 ────────────┐
//!   <p>-etcd 10.0.0.10   <p>-b1 10.0.0.11   <p>-b2 .12   <p>-b3 .13   <pid>-client 10.0.0.100
//! ```
//!
//! - **Only the test's own namespaces** carry the 10.0.0.0/24 addresses: the root namespace gets
//!   no address and no route, so no traffic of these tests can leave the machine.
//! - **The test process itself runs in the client namespace** ([`enter_client_namespace`], called
//!   first thing in `main`, before any thread exists, so every thread the test makes — tokio's
//!   workers, the client core's own runtime — inherits it). Brokers and etcd are started with
//!   `ip netns exec`, which switches namespace and then execs the program (same pid).
//! - **Cuts** drop packets (no reset, like a real partition) in both directions: a cut between A
//!   and B is one input and one output rule in A's namespace (the client namespace has none: a
//!   scenario cuts brokers and etcd, and keeps or cuts its clients through them).
//! - **Clean-up**: [`NetLab`] deletes its namespaces on drop (their veths go with them), even
//!   when the scenario panicked; namespaces left by a test process that no longer runs (killed
//!   by a CI timeout) are deleted when the next run starts ([`remove_stale_namespaces`]).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// Namespace names start with this, then the test process's pid (`slp<pid>-…`).
const PREFIX: &str = "slp";
/// The subnet of a lab (inside its namespaces only).
const SUBNET_PREFIX: &str = "10.0.0";
const CLIENT_HOST: u8 = 100;
const ETCD_HOST: u8 = 10;
/// Port every broker listens on in its own namespace.
pub const BROKER_PORT: u16 = 9292;
/// etcd's client and peer ports in its namespace.
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;

/// One end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Etcd,
    Broker(i32),
    /// The test process (its clients).
    Client,
}

impl Node {
    fn host(self) -> u8 {
        match self {
            Node::Etcd => ETCD_HOST,
            Node::Broker(id) => {
                assert!((1..=9).contains(&id), "broker ids 1..=9 in a lab");
                ETCD_HOST + id as u8
            }
            Node::Client => CLIENT_HOST,
        }
    }

    /// Its address in the lab.
    pub fn ip(self) -> String {
        format!("{SUBNET_PREFIX}.{}", self.host())
    }
}

/// Runs `ip`/`nft` (or any command), panicking with its output when it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `nft -f -` inside `netns` with `script` on its standard input.
fn nft_in(netns: &str, script: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft in {netns} failed: {}\nscript:\n{script}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The client namespace of this process: `slp<pid>-client`.
pub fn client_namespace() -> String {
    format!("{PREFIX}{}-client", std::process::id())
}

/// Why this machine cannot run the partition tests, if it cannot: not root, no `ip`, no `nft`,
/// or namespaces refused (a container without CAP_SYS_ADMIN).
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)] // No safe std wrapper.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some("network namespaces need root".to_owned());
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "`{tool}` is missing (Debian package {package}; scripts/setup.sh installs it)"
            ));
        }
    }
    let probe = format!("{PREFIX}{}-probe", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .stderr(Stdio::piped())
        .output()
        .expect("run ip");
    if !made.status.success() {
        return Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    run("ip", &["netns", "del", &probe]);
    None
}

/// Deletes namespaces named by an earlier test process that is gone.
pub fn remove_stale_namespaces() {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Creates this process's client namespace and moves the calling thread into it. Call it before
/// any other thread exists: threads made later inherit it, threads made earlier do not.
pub fn enter_client_namespace() {
    let name = client_namespace();
    run("ip", &["netns", "add", &name]);
    run("ip", &["-n", &name, "link", "set", "lo", "up"]);
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    use std::os::fd::AsRawFd;
    // SAFETY: a valid namespace file descriptor; CLONE_NEWNET moves only this thread's network
    // namespace.
    #[allow(unsafe_code)] // setns() has no safe std wrapper.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Deletes the client namespace (at the end of the run; the process may stay in it).
pub fn remove_client_namespace() {
    let _ = Command::new("ip")
        .args(["netns", "del", &client_namespace()])
        .status();
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// One lab: the hub, etcd's and each broker's namespace, and the client's link to the hub.
#[derive(Debug)]
pub struct NetLab {
    prefix: String,
    brokers: Vec<i32>,
    /// Created namespaces, deleted on drop (the client namespace is not among them).
    created: Vec<String>,
    cuts: Mutex<BTreeSet<(Node, Node)>>,
}

impl NetLab {
    /// A lab for etcd and brokers `1..=n`, the client namespace linked in.
    pub fn new(n: i32) -> NetLab {
        let prefix = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            LAB_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = NetLab {
            prefix,
            brokers: (1..=n).collect(),
            created: Vec::new(),
            cuts: Mutex::new(BTreeSet::new()),
        };
        let hub = lab.hub();
        lab.add_namespace(&hub);
        run("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", &hub, "link", "set", "br0", "up"]);
        let mut nodes = vec![Node::Etcd];
        nodes.extend(lab.brokers.iter().map(|b| Node::Broker(*b)));
        for node in nodes {
            let ns = lab.namespace(node);
            lab.add_namespace(&ns);
            lab.link(node);
            nft_in(&ns, &rules(&BTreeSet::new(), node));
        }
        lab.link(Node::Client);
        lab
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// The namespace `node` runs in.
    pub fn namespace(&self, node: Node) -> String {
        match node {
            Node::Etcd => format!("{}-etcd", self.prefix),
            Node::Broker(id) => format!("{}-b{id}", self.prefix),
            Node::Client => client_namespace(),
        }
    }

    fn add_namespace(&mut self, name: &str) {
        run("ip", &["netns", "add", name]);
        self.created.push(name.to_owned());
        run("ip", &["-n", name, "link", "set", "lo", "up"]);
    }

    /// A veth from `node`'s namespace (`eth0`, with its address) to the hub's bridge.
    fn link(&self, node: Node) {
        let hub = self.hub();
        let ns = self.namespace(node);
        let port = format!("h{}", node.host());
        run(
            "ip",
            &[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ],
        );
        run("ip", &["-n", &hub, "link", "set", &port, "master", "br0"]);
        run("ip", &["-n", &hub, "link", "set", &port, "up"]);
        let cidr = format!("{}/24", node.ip());
        run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
    }

    /// Broker `id`'s listen address.
    pub fn broker_addr(&self, id: i32) -> String {
        format!("{}:{BROKER_PORT}", Node::Broker(id).ip())
    }

    /// Drops every packet between `a` and `b`, both ways, until [`NetLab::heal`].
    pub fn cut(&self, a: Node, b: Node) {
        assert_ne!(a, b);
        let mut cuts = self.cuts.lock().unwrap();
        cuts.insert((a.min(b), a.max(b)));
        self.apply(&cuts, a, b);
    }

    /// Cuts `node` from every other node in `others`.
    pub fn isolate(&self, node: Node, others: &[Node]) {
        for other in others.iter().filter(|o| **o != node) {
            self.cut(node, *other);
        }
    }

    /// Restores the link between `a` and `b`.
    pub fn heal(&self, a: Node, b: Node) {
        let mut cuts = self.cuts.lock().unwrap();
        cuts.remove(&(a.min(b), a.max(b)));
        self.apply(&cuts, a, b);
    }

    /// Restores every link.
    pub fn heal_all(&self) {
        let mut cuts = self.cuts.lock().unwrap();
        let touched: BTreeSet<Node> = cuts.iter().flat_map(|(a, b)| [*a, *b]).collect();
        cuts.clear();
        for node in touched.into_iter().filter(|n| *n != Node::Client) {
            // With no cuts left every table is empty again.
            nft_in(&self.namespace(node), &rules(&cuts, node));
        }
    }

    /// Rewrites the rules of the namespace that holds the `a`–`b` cut: the smaller node's (a
    /// broker or etcd: the client namespace is the largest and never holds rules).
    fn apply(&self, cuts: &BTreeSet<(Node, Node)>, a: Node, b: Node) {
        let holder = a.min(b);
        assert_ne!(
            holder,
            Node::Client,
            "a cut needs a broker or etcd on one side"
        );
        nft_in(&self.namespace(holder), &rules(cuts, holder));
    }
}

/// The whole `inet sl` table of `node`'s namespace for `cuts`: drop in and out for each peer
/// cut from it (when `node` is the side that holds the rules).
fn rules(cuts: &BTreeSet<(Node, Node)>, node: Node) -> String {
    let mut input = String::new();
    let mut output = String::new();
    // Pairs are stored (smaller, larger); the smaller node holds the rules (`NetLab::apply`).
    for (_, peer) in cuts.iter().filter(|(holder, _)| *holder == node) {
        input.push_str(&format!("    ip saddr {} drop\n", peer.ip()));
        output.push_str(&format!("    ip daddr {} drop\n", peer.ip()));
    }
    // `add` then `delete` then define: replaces the table whether or not it existed.
    format!(
        "add table inet sl\ndelete table inet sl\ntable inet sl {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{input}  }}\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{output}  }}\n}}\n"
    )
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // The client's end first, synchronously: a namespace's deletion finishes in the
        // background, and the next lab adds an `eth0` with the same address.
        let _ = Command::new("ip")
            .args(["-n", &client_namespace(), "link", "del", "eth0"])
            .stderr(Stdio::null())
            .status();
        for ns in self.created.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}
