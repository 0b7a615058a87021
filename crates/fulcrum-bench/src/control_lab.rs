//! The control suite's lab: a namespace with one veth whose far side holds the backends
//! (permanent neighbours), plus summary statistics and map-memory accounting.

use std::{
    ffi::CString,
    io::Write as _,
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};
use fulcrum_lab::netns::{NetNs, NsGuard, unique_prefix};

/// The interface the balancer attaches to; backends are neighbours on it.
pub const VETH: &str = "cb0";
const PEER: &str = "cb1";

/// Backend `i`'s address (`i` < 200).
pub fn backend(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + i)
}

/// Backend `i`'s MAC, as the lab's neighbour table gives it.
pub fn backend_mac(i: u8) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, 0, i]
}

/// Which of the first `count` backends owns `mac`.
pub fn backend_of_mac(mac: [u8; 6], count: u8) -> Option<u8> {
    (0..count).find(|&i| backend_mac(i) == mac)
}

/// A namespace with `VETH` (10.77.0.1/24, up) and `count` backends as permanent
/// neighbours on it. Deleted on drop, with everything in it.
pub struct Lab {
    ns: NetNs,
}

impl Lab {
    /// Creates the namespace, the veth pair and the neighbours.
    pub fn new(tag: &str, count: u8) -> anyhow::Result<Self> {
        ensure!(count < 200, "the lab holds at most 199 backends");
        let ns = NetNs::create(&unique_prefix(tag)).context("creating the lab namespace")?;
        let lab = Self { ns };
        let mut batch = format!(
            "link add {VETH} type veth peer name {PEER}\n\
             addr add 10.77.0.1/24 dev {VETH}\n\
             link set {VETH} up\n\
             link set {PEER} up\n"
        );
        for i in 0..count {
            let mac = backend_mac(i).map(|b| format!("{b:02x}")).join(":");
            batch.push_str(&format!(
                "neigh replace {} lladdr {mac} dev {VETH} nud permanent\n",
                backend(i)
            ));
        }
        lab.ip_batch(&batch)
            .with_context(|| format!("setting up namespace {}", lab.ns.name()))?;
        Ok(lab)
    }

    /// Moves the calling thread into the namespace until the guard drops.
    pub fn enter(&self) -> anyhow::Result<NsGuard> {
        self.ns.enter()
    }

    /// `ip -n NAME -batch -`: one process for the whole setup.
    fn ip_batch(&self, commands: &str) -> anyhow::Result<()> {
        let mut child = Command::new("ip")
            .args(["-n", self.ns.name(), "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running ip -batch")?;
        child
            .stdin
            .take()
            .context("ip -batch has no stdin")?
            .write_all(commands.as_bytes())
            .context("writing to ip -batch")?;
        let out = child.wait_with_output().context("waiting for ip -batch")?;
        if !out.status.success() {
            bail!(
                "ip -batch failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// The index of `iface` in the calling thread's namespace.
pub fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let name = CString::new(iface).context("interface name with a NUL")?;
    // SAFETY: a valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    ensure!(
        index != 0,
        "no interface {iface}: {}",
        std::io::Error::last_os_error()
    );
    Ok(index)
}

/// Median and range of a set of samples.
pub struct Spread {
    /// Middle sample (mean of the two middle ones for an even count).
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Number of samples.
    pub n: usize,
}

impl Spread {
    /// Summarises `samples`; fails on an empty set or a NaN.
    pub fn of(samples: &[f64]) -> anyhow::Result<Self> {
        ensure!(!samples.is_empty(), "no samples");
        ensure!(samples.iter().all(|s| !s.is_nan()), "a sample is NaN");
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Ok(Self {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// `median of N X unit, range A–B`.
    pub fn text(&self, unit: &str) -> String {
        let digits = if self.max < 10.0 { 3 } else { 1 };
        format!(
            "median of {} {:.digits$} {unit}, range {:.digits$}–{:.digits$}",
            self.n, self.median, self.min, self.max
        )
    }
}

/// Kernel memory charged to this process's BPF maps.
pub struct MapMemory {
    /// Sum of `memlock` over every bpf-map fd.
    pub total: u64,
    /// The largest single map's `memlock`.
    pub largest: u64,
}

/// Reads `memlock` of every bpf-map fd of this process from `/proc/self/fdinfo`.
pub fn bpf_map_memory() -> anyhow::Result<MapMemory> {
    let mut total = 0;
    let mut largest = 0;
    for entry in std::fs::read_dir("/proc/self/fd").context("listing /proc/self/fd")? {
        let entry = entry.context("reading /proc/self/fd")?;
        // Fds can close between listing and reading (the listing's own fd does): skip those.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.as_os_str() != "anon_inode:bpf-map" {
            continue;
        }
        let Ok(info) =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", entry.file_name().display()))
        else {
            continue;
        };
        let memlock = info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .map(str::trim)
            .with_context(|| format!("no memlock in fdinfo of fd {:?}", entry.file_name()))?
            .parse::<u64>()
            .context("parsing memlock")?;
        total += memlock;
        largest = largest.max(memlock);
    }
    Ok(MapMemory { total, largest })
}
