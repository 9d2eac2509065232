//! An emulated LAN for the swarm benchmark: each host (the hub, every
//! agent) in a network namespace of its own, joined to the others by one
//! veth link on a bridge, each link shaped with `tbf` to a rate each way,
//! like one NIC per machine. Loopback alone gives every process unlimited
//! bandwidth, so the network never limits a wave there and the CPU, which
//! the hosts share on one machine, always does; on the LAN each host's
//! link limits what it sends and receives, as in a real cluster.
//!
//! A client on a host (the "docker pull" beside its agent) talks to the
//! agent inside the namespace, over its loopback, unshaped. Needs root,
//! `ip` and `tc` (Debian's iproute2).

use std::os::fd::AsRawFd;
use std::process::Command;

use crate::swarm::Host;

const BRIDGE: &str = "dyswarm0";
const NS_PREFIX: &str = "dyswarm";
const SUBNET: &str = "10.211.0";

pub struct Lan {
    pub hosts: Vec<Host>,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// The root-side end of host `i`'s link.
fn link(i: usize) -> String {
    format!("dysr{i}")
}

fn ns(i: usize) -> String {
    format!("{NS_PREFIX}{i}")
}

impl Lan {
    /// Host 0 (for the hub) on .1, host i on .(10 + i); unshaped.
    pub fn new(count: usize) -> Lan {
        Lan::remove_leftovers(count + 16);
        run(&["ip", "link", "add", BRIDGE, "type", "bridge"]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{SUBNET}.254/24"),
            "dev",
            BRIDGE,
        ]);
        run(&["ip", "link", "set", BRIDGE, "up"]);
        let mut hosts = Vec::new();
        for i in 0..count {
            let (n, root_end, host_end) = (ns(i), link(i), format!("dysh{i}"));
            let ip = if i == 0 {
                format!("{SUBNET}.1")
            } else {
                format!("{SUBNET}.{}", 10 + i)
            };
            run(&["ip", "netns", "add", &n]);
            run(&["ip", "-n", &n, "link", "set", "lo", "up"]);
            run(&[
                "ip", "link", "add", &root_end, "type", "veth", "peer", "name", &host_end,
            ]);
            run(&["ip", "link", "set", &host_end, "netns", &n]);
            run(&["ip", "link", "set", &root_end, "master", BRIDGE, "up"]);
            run(&[
                "ip",
                "-n",
                &n,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                &host_end,
            ]);
            run(&["ip", "-n", &n, "link", "set", &host_end, "up"]);
            hosts.push(Host { ns: n, ip });
        }
        Lan { hosts }
    }

    fn remove_leftovers(count: usize) {
        for i in 0..count {
            run_quiet(&["ip", "netns", "del", &ns(i)]);
            run_quiet(&["ip", "link", "del", &link(i)]);
        }
        run_quiet(&["ip", "link", "del", BRIDGE]);
    }

    /// Every link limited to `rate` (tc syntax, e.g. `1gbit`) each way:
    /// on the root-side end (what the host receives) and the host's end
    /// (what it sends).
    pub fn shape(&self, rate: &str) {
        // A burst of ~4 ms at the rate, at least a few GSO packets.
        let bits: u64 = parse_rate(rate);
        let burst = (bits / 8 / 250).max(256 << 10).to_string();
        for (i, h) in self.hosts.iter().enumerate() {
            let tbf = [
                "root", "tbf", "rate", rate, "burst", &burst, "latency", "100ms",
            ];
            let root_end = link(i);
            let mut a = vec!["tc", "qdisc", "replace", "dev", &root_end];
            a.extend(tbf);
            run(&a);
            let host_end = format!("dysh{i}");
            let mut b = vec!["tc", "-n", &h.ns, "qdisc", "replace", "dev", &host_end];
            b.extend(tbf);
            run(&b);
        }
    }

    pub fn unshape(&self) {
        for (i, h) in self.hosts.iter().enumerate() {
            run_quiet(&["tc", "qdisc", "del", "dev", &link(i), "root"]);
            run_quiet(&[
                "tc",
                "-n",
                &h.ns,
                "qdisc",
                "del",
                "dev",
                &format!("dysh{i}"),
                "root",
            ]);
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        Lan::remove_leftovers(self.hosts.len());
    }
}

/// `100mbit`, `1gbit`, `2.5gbit`, `500kbit` in bits per second.
pub fn parse_rate(rate: &str) -> u64 {
    let r = rate.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = r.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = r.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = r.strip_suffix("kbit") {
        (n, 1e3)
    } else {
        panic!("rate {rate}: use kbit, mbit or gbit");
    };
    (num.parse::<f64>().unwrap_or_else(|_| panic!("rate {rate}")) * mult) as u64
}

/// Moves the calling thread (and the threads it starts from now on) into
/// `host`'s network namespace: sockets it opens from then on live there.
pub fn enter(host: &Host) {
    let f = std::fs::File::open(format!("/run/netns/{}", host.ns)).unwrap();
    // SAFETY: setns on an open namespace file descriptor changes only the
    // calling thread's network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        r,
        0,
        "setns {}: {}",
        host.ns,
        std::io::Error::last_os_error()
    );
}
