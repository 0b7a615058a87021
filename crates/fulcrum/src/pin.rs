//! Where a balancer's state lives between processes: a directory on bpffs per instance,
//! holding every map and the XDP links, so a restart or a crash keeps forwarding.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use fulcrum_common::{LAYOUT_MAGIC, LAYOUT_VERSION, Layout};
use tracing::{info, warn};

use crate::BalancerError;

/// Where bpffs is mounted on a normal system.
pub const BPFFS: &str = "/sys/fs/bpf";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The directory of instance `name`: `/sys/fs/bpf/fulcrum/<name>`.
pub fn instance_dir(name: &str) -> PathBuf {
    Path::new(BPFFS).join("fulcrum").join(name)
}

/// Path of a pinned map.
pub(crate) fn map_path(dir: &Path, map: &str) -> PathBuf {
    dir.join(map)
}

/// Path of the pinned XDP link of an interface.
pub(crate) fn link_path(dir: &Path, ifindex: u32) -> PathBuf {
    dir.join(format!("link_{ifindex}"))
}

/// Interfaces whose links are pinned in `dir`.
pub(crate) fn pinned_links(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("link_")?
                .parse::<u32>()
                .ok()
        })
        .collect()
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we pass.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a valid out pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Makes sure `dir` is on bpffs and exists. Under `ip netns exec`, `/sys` is private and
/// has no bpffs: it is mounted then, and said, since such pins last only as long as
/// that mount namespace has a process.
pub(crate) fn prepare(dir: &Path) -> Result<(), BalancerError> {
    let root = Path::new(BPFFS);
    if dir.starts_with(root) && !is_bpffs(root) {
        let target = CString::new(BPFFS).map_err(|_| not_bpffs(dir))?;
        let fstype = c"bpf";
        let options = c"mode=0700";
        // SAFETY: valid C strings; mounting needs CAP_SYS_ADMIN, which the error reports.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(BalancerError::Pin {
                dir: dir.to_path_buf(),
                what: format!(
                    "{BPFFS} is not a bpf filesystem and mounting one failed ({}); \
                     mount it with `mount -t bpf bpf {BPFFS}`",
                    std::io::Error::last_os_error()
                ),
            });
        }
        warn!(
            path = BPFFS,
            "mounted bpffs: this mount namespace had none (ip netns exec?); pins here \
             vanish with the namespace, use nsenter --net to keep the host's"
        );
    }
    std::fs::create_dir_all(dir).map_err(|e| BalancerError::Pin {
        dir: dir.to_path_buf(),
        what: format!("creating the directory: {e}"),
    })?;
    if !is_bpffs(dir) {
        return Err(not_bpffs(dir));
    }
    Ok(())
}

fn not_bpffs(dir: &Path) -> BalancerError {
    BalancerError::Pin {
        dir: dir.to_path_buf(),
        what: "not on a bpf filesystem (pins must live on bpffs, e.g. under /sys/fs/bpf)".into(),
    }
}

/// The layout a new instance is created with.
pub(crate) fn layout(
    ring_size: u32,
    max_services: u32,
    max_backends: u32,
    max_flows: u32,
    flow_cache: u32,
) -> Layout {
    Layout {
        magic: LAYOUT_MAGIC,
        version: LAYOUT_VERSION,
        ring_size,
        max_services,
        max_backends,
        max_flows,
        flow_cache,
        _pad: 0,
    }
}

/// Refuses a layout this binary cannot read, with what to do about it.
pub(crate) fn check(dir: &Path, found: &Layout) -> Result<(), BalancerError> {
    if found.magic != LAYOUT_MAGIC || found.version != LAYOUT_VERSION {
        return Err(BalancerError::Pin {
            dir: dir.to_path_buf(),
            what: format!(
                "pinned state has layout version {} (magic {:#x}); this binary reads \
                 version {LAYOUT_VERSION}. Stop the running instance with the binary that \
                 made it (SIGTERM removes its state), or remove the directory \
                 (`rm -r {}`, which drops every flow), then start again",
                found.version,
                found.magic,
                dir.display()
            ),
        });
    }
    Ok(())
}

/// Removes everything pinned in `dir`, and `dir`: the links detach once nothing else
/// holds them.
pub(crate) fn remove_all(dir: &Path) {
    remove_entries(dir);
    match std::fs::remove_dir(dir) {
        Ok(()) => info!(dir = %dir.display(), "pinned state removed"),
        Err(e) => warn!(dir = %dir.display(), error = %e, "could not remove the pin directory"),
    }
}

/// Removes pins in `dir` left without a layout (a start that died before finishing), so
/// they are never mistaken for state.
pub(crate) fn remove_partial(dir: &Path) {
    if std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_some()) {
        warn!(dir = %dir.display(), "removing pins left without a layout");
    }
    remove_entries(dir);
}

fn remove_entries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if let Err(e) = std::fs::remove_file(entry.path()) {
            warn!(path = %entry.path().display(), error = %e, "could not unpin");
        }
    }
}
