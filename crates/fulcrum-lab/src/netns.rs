//! Network namespaces owned by a test: created with unique names, removed on drop.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

/// A named network namespace (`/run/netns/NAME`), deleted with everything in it on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `NAME`, removing a leftover of the same name first (a crashed earlier run).
    pub fn create(name: &str) -> anyhow::Result<Self> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.name).args(args);
        run(&mut cmd)
    }

    /// Runs a program inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        run(&mut cmd)
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// A `Command` that runs `program` in the namespace's network stack but with the
    /// host's mounts (`nsenter --net`): unlike `ip netns exec`, it sees the host's
    /// `/sys/fs/bpf`, so what it pins outlives it.
    pub fn command_with_host_mounts(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    /// A veth pair: `name` here, `peer_name` in `peer`.
    pub fn veth(&self, name: &str, peer: &NetNs, peer_name: &str) -> anyhow::Result<()> {
        self.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer_name,
            "netns",
            peer.name(),
        ])
        .map(|_| ())
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Runs `f` with the calling thread inside this namespace, then moves the thread back.
    /// Sockets created inside stay in this namespace for their whole life.
    pub fn run_in<T>(&self, f: impl FnOnce() -> T) -> anyhow::Result<T> {
        let _guard = self.enter()?;
        Ok(f())
    }

    /// Moves the calling thread into this namespace until the guard drops.
    pub fn enter(&self) -> anyhow::Result<NsGuard> {
        let home = File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
        let target = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening netns {}", self.name))?;
        setns(&target).with_context(|| format!("entering netns {}", self.name))?;
        Ok(NsGuard { home })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Puts the thread back into the namespace it came from.
pub struct NsGuard {
    home: File,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.home) {
            // A thread left in a lab namespace would run the rest of the test in the wrong place.
            panic!("could not return to the original network namespace: {e}");
        }
    }
}

fn setns(file: &File) -> std::io::Result<()> {
    // SAFETY: a valid namespace fd; affects only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!(
            "{cmd:?} failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// A prefix no other lab of this machine uses right now: the process id and a counter.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "fl{tag}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
