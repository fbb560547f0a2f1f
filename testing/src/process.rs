//! Processes and ports: free loopback ports, signals, commands inside a network namespace.

use std::net::TcpListener;
use std::process::Command;

/// A loopback port nobody listens on now (the OS picks it; the listener is closed at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Two distinct free ports (a client and a peer port).
pub fn free_port_pair() -> (u16, u16) {
    let a = free_port();
    let mut b = free_port();
    while b == a {
        b = free_port();
    }
    (a, b)
}

/// Sends `sig` (`-STOP`, `-CONT`, `-TERM`, `-9`) to `pid` with kill(1); panics if it fails.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill {sig} {pid} failed");
}

/// `program`, run inside network namespace `netns` when given (`ip netns exec` switches, then
/// execs it: the child's pid is the program's).
pub fn command_in(netns: Option<&str>, program: &str) -> Command {
    match netns {
        None => Command::new(program),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
    }
}
