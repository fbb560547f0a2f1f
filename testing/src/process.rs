//! Processes and ports: free loopback ports, signals, commands inside a network namespace.

use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A loopback port nobody listens on now, outside the kernel's ephemeral range.
///
/// A port from `bind(127.0.0.1:0)` comes from the ephemeral range
/// (`net.ipv4.ip_local_port_range`), where the kernel also picks the source port of every
/// outgoing connection. A test that keeps a port for a process it stops and starts again (an
/// etcd, a broker) could find it taken meanwhile by any connection on the machine: a CI run saw
/// etcd's restart fail with "bind: address already in use" on its peer port. So ports come from
/// below that range (or above it when it starts low), handed out once per test process by a
/// counter that starts at an offset from the pid, each checked free with a bind; `bind(:0)`
/// is the fallback when neither side has room.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let (ephemeral_low, ephemeral_high) = ephemeral_range();
    let (low, high) = if ephemeral_low > LOWEST + 1_000 {
        (LOWEST, ephemeral_low - 1)
    } else if ephemeral_high < 64_000 {
        (ephemeral_high + 1, 65_535)
    } else {
        return os_port();
    };
    let span = high - low + 1;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    os_port()
}

/// The kernel's ephemeral port range, or Linux's default when it cannot be read.
fn ephemeral_range() -> (u32, u32) {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut parts = text.split_whitespace().map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(low)), Some(Ok(high))) if low <= high && high <= 65_535 => (low, high),
        _ => (32_768, 60_999),
    }
}

/// A port the OS picks (from the ephemeral range; the listener is closed at once).
fn os_port() -> u16 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let (low, high) = ephemeral_range();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port handed out twice: {ports:?}"
        );
        for p in ports {
            assert!(
                TcpListener::bind(("127.0.0.1", p)).is_ok(),
                "port {p} is taken"
            );
            if low > 11_000 || high < 64_000 {
                assert!(
                    !(low..=high).contains(&u32::from(p)),
                    "port {p} is in the ephemeral range {low}-{high}"
                );
            }
        }
    }
}
