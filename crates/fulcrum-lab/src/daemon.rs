//! A daemon (`fulcrum run`) as a child process of a lab or a benchmark: signalled, waited
//! for with a bound, and stopped with SIGTERM on drop, so no test leaves one behind.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// How long a signalled daemon may take to exit before it is killed.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// The running child; SIGTERM (stop, detach, remove) on drop.
pub struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    /// Spawns `command` (for example `NetNs::command_with_host_mounts`, so pins outlive it).
    pub fn spawn(mut command: Command) -> anyhow::Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        Ok(Self { child: Some(child) })
    }

    /// Sends `signal` without waiting (SIGHUP: reload).
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as libc::pid_t, signal) };
        }
    }

    /// Sends `signal` and waits for the exit; returns its status code (`None` when a
    /// signal ended it). A daemon that does not exit in time is killed, and that is an error.
    pub fn stop_with(&mut self, signal: i32) -> anyhow::Result<Option<i32>> {
        self.signal(signal);
        let Some(mut child) = self.child.take() else {
            bail!("the daemon was already stopped");
        };
        let deadline = Instant::now() + EXIT_LIMIT;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("the daemon did not exit within {EXIT_LIMIT:?} of signal {signal}")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop_with(libc::SIGTERM);
        }
    }
}
