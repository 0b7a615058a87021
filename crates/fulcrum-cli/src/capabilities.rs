//! What loading Fulcrum needs instead of uid 0, read from the effective set with capget(2).

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Each needed capability, and what else grants it (CAP_SYS_ADMIN covered CAP_BPF and
/// CAP_PERFMON before they existed, and still does).
const NEEDED: [(&str, u32, Option<u32>); 3] = [
    ("CAP_BPF", CAP_BPF, Some(CAP_SYS_ADMIN)),
    ("CAP_NET_ADMIN", CAP_NET_ADMIN, None),
    ("CAP_PERFMON", CAP_PERFMON, Some(CAP_SYS_ADMIN)),
];

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const VERSION_3: u32 = 0x2008_0522;

/// The needed capabilities missing from the effective set, by name.
pub fn missing() -> std::io::Result<Vec<&'static str>> {
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: version 3 takes one header and two data structs, both valid for writing.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let effective = u64::from(data[0].effective) | (u64::from(data[1].effective) << 32);
    let has = |cap: u32| effective & (1 << cap) != 0;
    Ok(NEEDED
        .iter()
        .filter(|(_, cap, or)| !has(*cap) && !or.is_some_and(has))
        .map(|(name, ..)| *name)
        .collect())
}

/// Fails with one line naming the missing capabilities, if any.
pub fn require(who: &str) -> anyhow::Result<()> {
    let missing =
        missing().map_err(|e| anyhow::anyhow!("reading the process's capabilities: {e}"))?;
    if !missing.is_empty() {
        anyhow::bail!(
            "missing capabilities {}: {who} loads and attaches XDP programs and BPF maps \
             (CAP_BPF, CAP_PERFMON) and writes neighbour entries (CAP_NET_ADMIN); run it as \
             root or grant exactly these, as examples/fulcrum.service does",
            missing.join(", ")
        );
    }
    Ok(())
}
