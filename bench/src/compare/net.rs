//! The network a comparison runs over: two network namespaces joined by a veth pair at MTU 1500
//! (what two pods on a pod network see), or loopback.
//!
//! ```text
//!   namespace ferrybench-PID-src            namespace ferrybench-PID-dst
//!   source side: clients, stunnel client    destination side: servers, sshd, stunnel server
//!   fbsPID  10.231.7.1/24  <--- veth, MTU 1500 --->  fbdPID  10.231.7.2/24
//! ```
//!
//! Both namespaces share the filesystem (only the network is separate), so datasets and
//! destinations stay where they are. Namespaces need root; [`Veth::setup`] says why it cannot
//! make them, and the comparison then falls back to loopback. The pair is removed when the
//! [`Veth`] guard drops (on success and on error); namespaces left by a run that was killed are
//! recognised by their name prefix and the dead process id in it, and removed at the next
//! start.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::tools::NetPlaces;

/// Where the two sides of the client/server tools run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NetMode {
    /// Two network namespaces joined by a veth pair at MTU 1500 (root only).
    Veth,
    /// Both sides on 127.0.0.1 (MTU 65,536).
    Loopback,
}

impl NetMode {
    /// Identifier in tables and JSON.
    pub fn slug(self) -> &'static str {
        match self {
            NetMode::Veth => "veth",
            NetMode::Loopback => "loopback",
        }
    }
}

/// Bytes that crossed the veth pair during one run, all of them (handshakes, headers,
/// acknowledgements), from the interfaces' counters read before and after.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VethBytes {
    /// From the source side to the destination side (the source interface's `tx_bytes`).
    pub sent: u64,
    /// From the destination side back (the source interface's `rx_bytes`).
    pub received: u64,
    /// The destination interface's `rx_bytes` + `tx_bytes`: the same traffic seen from the
    /// other end, a cross-check.
    pub dst_total: u64,
}

impl VethBytes {
    /// Both directions.
    pub fn total(&self) -> u64 {
        self.sent + self.received
    }
}

/// The MTU of the pair: a pod network's.
pub const MTU: u32 = 1500;
/// Name prefix of the namespaces a comparison makes.
const PREFIX: &str = "ferrybench-";
const SRC_ADDR: Ipv4Addr = Ipv4Addr::new(10, 231, 7, 1);
const DST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 231, 7, 2);
/// The destination side's address, as text: the Ferry pair's credentials name it.
pub const DST_ADDR_TEXT: &str = "10.231.7.2";

/// The two namespaces and their veth pair; removed on drop.
#[derive(Debug)]
pub struct Veth {
    places: NetPlaces,
}

impl Veth {
    /// Removes namespaces of earlier runs that died, then makes the pair.
    ///
    /// # Errors
    /// Why namespaces cannot be made here (not root, no `ip`, no netns support), as a sentence
    /// for the fallback message; what was made so far is removed.
    pub fn setup() -> Result<Veth, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("network namespaces need root".to_string());
        }
        remove_stale();
        let pid = std::process::id();
        let places = NetPlaces {
            src_ns: format!("{PREFIX}{pid}-src"),
            dst_ns: format!("{PREFIX}{pid}-dst"),
            // Interface names are at most 15 bytes.
            src_if: format!("fbs{pid}"),
            dst_if: format!("fbd{pid}"),
            src_addr: SRC_ADDR,
            dst_addr: DST_ADDR,
        };
        // From here on, the guard removes whatever exists if a step fails.
        let veth = Veth { places };
        veth.make().map_err(|e| format!("{e:#}"))?;
        Ok(veth)
    }

    /// Where the sides run.
    pub fn places(&self) -> &NetPlaces {
        &self.places
    }

    fn make(&self) -> Result<()> {
        let p = &self.places;
        let (src, dst) = (p.src_ns.as_str(), p.dst_ns.as_str());
        let mtu = MTU.to_string();
        ip(&["netns", "add", src])?;
        ip(&["netns", "add", dst])?;
        ip(&["link", "add", &p.src_if, "mtu", &mtu, "type", "veth", "peer", "name", &p.dst_if])?;
        ip(&["link", "set", &p.src_if, "netns", src])?;
        ip(&["link", "set", &p.dst_if, "netns", dst])?;
        for (ns, ifname, addr) in [(src, &p.src_if, p.src_addr), (dst, &p.dst_if, p.dst_addr)] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", ifname, "mtu", &mtu])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", ifname])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        // Both ends report "state UP" once the pair carries traffic (a moment after `up`).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for (ns, ifname) in [(src, &p.src_if), (dst, &p.dst_if)] {
            loop {
                let out = Command::new("ip").args(["-n", ns, "link", "show", ifname]).output()?;
                if String::from_utf8_lossy(&out.stdout).contains("state UP") {
                    break;
                }
                ensure!(
                    std::time::Instant::now() < deadline,
                    "{ifname} in {ns} is not up after 5 s: {}",
                    String::from_utf8_lossy(&out.stdout).trim()
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

/// A reading of the pair's byte counters: (source tx, source rx, destination rx + tx).
pub type Counters = (u64, u64, u64);

impl NetPlaces {
    /// The pair's byte counters now: (source tx, source rx, destination rx + tx).
    ///
    /// # Errors
    /// When the counters cannot be read.
    pub fn counters(&self) -> Result<Counters> {
        let p = self;
        let (s_rx, s_tx) = read_counters(&p.src_ns, &p.src_if)?;
        let (d_rx, d_tx) = read_counters(&p.dst_ns, &p.dst_if)?;
        Ok((s_tx, s_rx, d_rx + d_tx))
    }

    /// What crossed the pair since `before` (a [`NetPlaces::counters`] reading).
    ///
    /// # Errors
    /// When the counters cannot be read.
    pub fn since(&self, before: Counters) -> Result<VethBytes> {
        let now = self.counters()?;
        Ok(VethBytes {
            sent: now.0.saturating_sub(before.0),
            received: now.1.saturating_sub(before.1),
            dst_total: now.2.saturating_sub(before.2),
        })
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        for ns in [&self.places.src_ns, &self.places.dst_ns] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// `rx_bytes` and `tx_bytes` of `ifname` in `netns` (`ip netns exec` mounts that namespace's
/// sysfs).
fn read_counters(netns: &str, ifname: &str) -> Result<(u64, u64)> {
    let stat = |what: &str| format!("/sys/class/net/{ifname}/statistics/{what}");
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "cat"])
        .arg(stat("rx_bytes"))
        .arg(stat("tx_bytes"))
        .output()
        .context("running ip netns exec cat")?;
    ensure!(
        out.status.success(),
        "reading {ifname}'s counters in {netns}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = text.lines().map(|l| l.trim().parse::<u64>());
    match (n.next(), n.next()) {
        (Some(Ok(rx)), Some(Ok(tx))) => Ok((rx, tx)),
        _ => anyhow::bail!("unexpected counters of {ifname} in {netns}: {text:?}"),
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    ensure!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Removes `ferrybench-PID-*` namespaces whose process is gone (a run that was killed).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        if let Some(pid) = stale_pid(name) {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("removing network namespace {name} left by an earlier run");
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
}

/// The process id in a namespace name this module makes (`ferrybench-PID-src|dst`).
fn stale_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, side) = rest.split_once('-')?;
    matches!(side, "src" | "dst").then_some(())?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_address_is_the_destination_address() {
        assert_eq!(DST_ADDR_TEXT.parse::<Ipv4Addr>().ok(), Some(DST_ADDR));
    }

    #[test]
    fn only_our_namespace_names_are_stale_candidates() {
        assert_eq!(stale_pid("ferrybench-123-src"), Some(123));
        assert_eq!(stale_pid("ferrybench-7-dst"), Some(7));
        assert_eq!(stale_pid("ferrybench-7-other"), None);
        assert_eq!(stale_pid("ferrybench-x-src"), None);
        assert_eq!(stale_pid("cni-1234"), None);
    }
}
