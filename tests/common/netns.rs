//! Small networks of Linux network namespaces for fault tests. Every host is a namespace
//! with loopback and an `eth0` (10.99.0.N/24) that is a TUN device; the test process holds
//! the TUN ends and moves IPv4 packets between hosts in a thread, the link emulator.
//! It delays and drops what a host receives (`shape`) and can cut a host off both ways
//! (`partition`: silence, no reset, as when a link or router dies). `tc netem` would do the
//! shaping, but this machine's kernel has no netem (nor any delaying qdisc); the kernels'
//! TCP stacks on both ends are real either way. Everything is removed on drop.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One host of a `Net`: its namespace and address.
pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: String,
}

/// What a host's inbound link does to packets.
#[derive(Clone, Copy, Default)]
struct Link {
    delay: Duration,
    /// Probability of dropping each packet.
    loss: f64,
    cut: bool,
}

/// Hosts wired together by the link emulator.
pub struct Net {
    hosts: Vec<Host>,
    links: Arc<Mutex<Vec<Link>>>,
    stop: Arc<AtomicBool>,
    /// Packets delivered and dropped by loss (not by a partition).
    counts: Arc<[AtomicU64; 2]>,
    emulator: Option<JoinHandle<()>>,
}

/// `cmd` run inside the namespace `ns` (`ip netns exec` sets it and execs, so the pid and
/// signals are those of the program itself).
pub fn exec_in(ns: &str, cmd: std::process::Command) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(cmd.get_program());
    c.args(cmd.get_args());
    c
}

/// Moves the calling thread into the namespace `ns`: sockets it creates from now on live
/// there (a socket keeps its namespace when used from another thread).
pub fn enter(ns: &str) -> io::Result<()> {
    let f = File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: setns on a valid namespace fd affects only the calling thread's network view.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(prog: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Opens a TUN device named `eth0` in the namespace `ns`, non-blocking, without packet
/// information headers.
fn tun_in(ns: &str) -> io::Result<File> {
    within(ns, || {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        #[repr(C)]
        struct IfReq {
            name: [u8; libc::IFNAMSIZ],
            flags: libc::c_short,
            _pad: [u8; 22],
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..4].copy_from_slice(b"eth0");
        // SAFETY: TUNSETIFF reads an ifreq of this layout from a valid pointer.
        if unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain fcntl flag change on an fd we own.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        Ok(f)
    })
}

impl Net {
    /// Builds a network of the named hosts (10.99.0.1, .2, ... in order). Err (with the
    /// reason) when namespaces cannot be made here: the caller skips.
    pub fn new(hosts: &[&str]) -> Result<Net, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Net {
            hosts: Vec::new(),
            links: Arc::new(Mutex::new(vec![Link::default(); hosts.len()])),
            stop: Arc::default(),
            counts: Arc::default(),
            emulator: None,
        };
        let mut tuns = Vec::new();
        for (i, name) in hosts.iter().enumerate() {
            let ns = format!("rtmpedge-{id}-{name}");
            let addr = format!("10.99.0.{}", i + 1);
            ip(&["netns", "add", &ns])?;
            net.hosts.push(Host {
                name: name.to_string(),
                ns: ns.clone(),
                ip: addr.clone(),
            });
            tuns.push(tun_in(&ns).map_err(|e| format!("TUN in {ns}: {e}"))?);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let (links, stop, counts) = (net.links.clone(), net.stop.clone(), net.counts.clone());
        net.emulator = Some(std::thread::spawn(move || {
            emulate(tuns, links, stop, counts)
        }));
        Ok(net)
    }

    pub fn host(&self, name: &str) -> &Host {
        &self.hosts[self.index(name)]
    }

    fn index(&self, name: &str) -> usize {
        self.hosts
            .iter()
            .position(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// What `host` receives from now on is delayed by `delay` and each packet dropped with
    /// probability `loss` (like netem on its inbound link).
    pub fn shape(&self, host: &str, delay: Duration, loss: f64) {
        let i = self.index(host);
        let mut links = self.links.lock().unwrap();
        links[i].delay = delay;
        links[i].loss = loss;
    }

    /// Packets delivered and packets dropped by `shape`'s loss so far.
    pub fn counts(&self) -> (u64, u64) {
        let [d, l] = &*self.counts;
        (d.load(Ordering::Relaxed), l.load(Ordering::Relaxed))
    }

    /// Cuts `host` off (true) or plugs it back in (false); shaping is kept.
    pub fn partition(&self, host: &str, cut: bool) {
        let i = self.index(host);
        self.links.lock().unwrap()[i].cut = cut;
    }
}

/// The link emulator: reads each host's outbound packets, drops or queues them by the
/// destination's link, and writes them to the destination once due. Ends on `stop`.
fn emulate(
    mut tuns: Vec<File>,
    links: Arc<Mutex<Vec<Link>>>,
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 2]>,
) {
    // (due, destination, packet), in order of arrival per destination: delays are fixed
    // per destination, so each queue stays sorted by due time.
    let mut queues: Vec<VecDeque<(Instant, Vec<u8>)>> = vec![VecDeque::new(); tuns.len()];
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 65536];
    let hosts = tuns.len();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let next_due = queues.iter().filter_map(|q| q.front()).map(|p| p.0).min();
        let wait = next_due.map_or(Duration::from_millis(50), |d| {
            d.saturating_duration_since(now)
                .min(Duration::from_millis(50))
        });
        let mut fds: Vec<libc::pollfd> = tuns
            .iter()
            .map(|t| libc::pollfd {
                fd: t.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: fds is a valid array of pollfd for the call's duration.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        let links_now = links.lock().unwrap().clone();
        for (src, t) in tuns.iter_mut().enumerate() {
            while let Ok(n) = t.read(&mut buf) {
                let p = &buf[..n];
                if n < 20 || p[0] >> 4 != 4 || p[12..15] != p[16..19] {
                    continue; // IPv4 on our /24 only
                }
                let dst = p[19] as usize;
                if dst == 0 || dst > hosts {
                    continue;
                }
                let link = links_now[dst - 1];
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let lost = ((rng >> 11) as f64 / (1u64 << 53) as f64) < link.loss;
                if link.cut || links_now[src].cut {
                    continue;
                }
                if lost {
                    counts[1].fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                queues[dst - 1].push_back((Instant::now() + link.delay, p.to_vec()));
            }
        }
        let now = Instant::now();
        for (dst, q) in queues.iter_mut().enumerate() {
            while q.front().is_some_and(|p| p.0 <= now) {
                let (_, p) = q.pop_front().unwrap();
                if tuns[dst].write(&p).is_ok() {
                    counts[0].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.emulator.take() {
            let _ = t.join();
        }
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
        }
    }
}

/// Runs `f` on a thread inside the namespace `ns` (for clients whose sockets must live
/// there) and returns what it returns.
pub fn within<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns).unwrap_or_else(|e| panic!("enter {ns}: {e}"));
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    })
}
