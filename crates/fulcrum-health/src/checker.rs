//! The scheduler: one tokio task per (backend, check) runs its probe every interval, feeds the
//! pure state in [`crate::state`], and sends backend transitions on a channel.
//!
//! Tasks look their check up by id in the shared state before every probe, so a reload that
//! changes only timing or thresholds takes effect without restarting anything, and a task
//! whose check was removed ends by itself (it is also aborted at once).

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::{runtime::Handle, sync::mpsc, task::AbortHandle, time::Instant};
use tracing::Instrument;

use crate::{
    BackendState, CheckSpec, CheckState, CheckStatus, Rule, SpecError,
    probe::{probe, random_u64},
};

/// A backend as the health checker knows it: per service, because two services may check the
/// same address differently.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId {
    /// The service's name.
    pub service: String,
    /// The backend's address.
    pub address: IpAddr,
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.address)
    }
}

/// A backend to check, with its checks and the rule combining them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Which backend.
    pub backend: BackendId,
    /// Its checks; none means always healthy.
    pub checks: Vec<CheckSpec>,
    /// How many checks must be up.
    pub rule: Rule,
}

/// Settings of the checker as a whole.
#[derive(Debug, Clone, Default)]
pub struct CheckerConfig {
    /// Address probes are sent from. The daemon sets it so that probes never leave through an
    /// address our own XDP program would balance; backends of the other address family are
    /// refused by [`Checker::set_targets`].
    pub source: Option<IpAddr>,
}

/// A backend's verdict changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    /// Which backend.
    pub backend: BackendId,
    /// Whether it should now receive new flows.
    pub healthy: bool,
    /// Why, fit for a log line.
    pub reason: String,
}

/// One backend's state, for the API, metrics and console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSnapshot {
    /// Which backend.
    pub backend: BackendId,
    /// Whether it receives new flows.
    pub healthy: bool,
    /// The rule in force.
    pub rule: Rule,
    /// Its checks, in configuration order.
    pub checks: Vec<CheckSnapshot>,
}

/// One check's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSnapshot {
    /// Label such as `http :80 /health`.
    pub name: String,
    /// Where the check stands.
    pub status: CheckStatus,
    /// Successes in a row.
    pub successes: u32,
    /// Failures in a row.
    pub failures: u32,
    /// The most recent failure's reason (kept after recovery).
    pub last_error: Option<String>,
    /// The most recent success's latency.
    pub last_latency: Option<Duration>,
}

impl From<&CheckState> for CheckSnapshot {
    fn from(c: &CheckState) -> Self {
        Self {
            name: c.name().to_owned(),
            status: c.status(),
            successes: c.successes(),
            failures: c.failures(),
            last_error: c.last_error().map(str::to_owned),
            last_latency: c.last_latency(),
        }
    }
}

/// Why the checker refused a set of targets (nothing of it was applied).
#[derive(Debug, thiserror::Error)]
pub enum CheckerError {
    /// Probes run on tokio; the checker was created outside a runtime.
    #[error("the health checker must be created inside a tokio runtime")]
    NoRuntime,
    /// The same backend was listed twice.
    #[error("backend {0} is listed twice")]
    Duplicate(BackendId),
    /// A check specification is invalid.
    #[error("{backend}: check {check}")]
    Check {
        /// Whose check.
        backend: BackendId,
        /// The check's label.
        check: String,
        /// What is wrong.
        #[source]
        source: SpecError,
    },
    /// The rule asks for more checks than there are, or for none.
    #[error("{backend}: rule needs {need} checks up but must be between 1 and {checks}")]
    Rule {
        /// Whose rule.
        backend: BackendId,
        /// Checks the rule needs.
        need: usize,
        /// Checks there are.
        checks: usize,
    },
    /// The backend's family differs from the probe source's.
    #[error("{backend}: cannot be probed from source {source_addr}")]
    Source {
        /// The backend.
        backend: BackendId,
        /// The configured source.
        source_addr: IpAddr,
    },
}

struct Slot {
    id: u64,
    spec: CheckSpec,
    task: AbortHandle,
}

struct Backend {
    state: BackendState,
    slots: Vec<Slot>,
}

#[derive(Default)]
struct Shared {
    backends: HashMap<BackendId, Backend>,
    next_id: u64,
}

/// Runs the checks of a set of backends until stopped or dropped.
pub struct Checker {
    shared: Arc<Mutex<Shared>>,
    events: mpsc::UnboundedSender<HealthEvent>,
    source: Option<IpAddr>,
    runtime: Handle,
}

impl Checker {
    /// A checker with no targets, and the receiving end of its events. The channel is
    /// unbounded so a slow consumer never delays probes nor loses a transition; there is at
    /// most one event per check result.
    pub fn new(
        config: CheckerConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<HealthEvent>), CheckerError> {
        let runtime = Handle::try_current().map_err(|_| CheckerError::NoRuntime)?;
        let (events, rx) = mpsc::unbounded_channel();
        let checker = Self {
            shared: Arc::default(),
            events,
            source: config.source,
            runtime,
        };
        Ok((checker, rx))
    }

    /// Replaces the set of targets (hot reload). A (backend, check) pair whose probe is
    /// unchanged ([`CheckSpec::same_probe`]) keeps its state and schedule, taking the new
    /// interval, timeout and thresholds; new backends start unhealthy (or healthy without
    /// checks) with no event, see [`snapshot`](Self::snapshot); removed ones stop at once. A
    /// verdict changed by the new set is sent as an event. On error nothing changes.
    pub fn set_targets(&self, targets: Vec<Target>) -> Result<(), CheckerError> {
        self.validate(&targets)?;
        let mut shared = lock(&self.shared);
        let wanted: HashSet<&BackendId> = targets.iter().map(|t| &t.backend).collect();
        shared.backends.retain(|id, backend| {
            let keep = wanted.contains(id);
            if !keep {
                backend.slots.iter().for_each(|s| s.task.abort());
            }
            keep
        });
        for target in targets {
            let mut old: Vec<Option<(Slot, CheckState)>> =
                match shared.backends.get_mut(&target.backend) {
                    Some(b) => b
                        .slots
                        .drain(..)
                        .zip(b.state.take_checks())
                        .map(Some)
                        .collect(),
                    None => Vec::new(),
                };
            let (mut slots, mut states) = (Vec::new(), Vec::new());
            for spec in target.checks {
                let kept = old
                    .iter_mut()
                    .find(|o| o.as_ref().is_some_and(|(s, _)| s.spec.same_probe(&spec)))
                    .and_then(Option::take);
                let (slot, state) = match kept {
                    Some((mut slot, mut state)) => {
                        state.set_thresholds(spec.rise, spec.fall);
                        slot.spec = spec;
                        (slot, state)
                    }
                    None => {
                        shared.next_id += 1;
                        let id = shared.next_id;
                        let state = CheckState::new(spec.to_string(), spec.rise, spec.fall);
                        let task = self.spawn(target.backend.clone(), id, &spec);
                        (Slot { id, spec, task }, state)
                    }
                };
                slots.push(slot);
                states.push(state);
            }
            old.into_iter().flatten().for_each(|(s, _)| s.task.abort());
            match shared.backends.get_mut(&target.backend) {
                Some(backend) => {
                    backend.slots = slots;
                    if let Some(t) = backend.state.reconfigure(target.rule, states) {
                        self.send(&target.backend, t.healthy, t.reason);
                    }
                }
                None => {
                    let state = BackendState::new(target.rule, states);
                    shared
                        .backends
                        .insert(target.backend, Backend { state, slots });
                }
            }
        }
        Ok(())
    }

    fn validate(&self, targets: &[Target]) -> Result<(), CheckerError> {
        let mut seen = HashSet::new();
        for t in targets {
            let backend = || t.backend.clone();
            if !seen.insert(&t.backend) {
                return Err(CheckerError::Duplicate(backend()));
            }
            if let Some(source_addr) = self.source
                && source_addr.is_ipv4() != t.backend.address.is_ipv4()
                && !t.checks.is_empty()
            {
                return Err(CheckerError::Source {
                    backend: backend(),
                    source_addr,
                });
            }
            if let (Rule::AtLeast(need), checks @ 1..) = (t.rule, t.checks.len())
                && (need == 0 || need > checks)
            {
                return Err(CheckerError::Rule {
                    backend: backend(),
                    need,
                    checks,
                });
            }
            for spec in &t.checks {
                spec.validate().map_err(|source| CheckerError::Check {
                    backend: backend(),
                    check: spec.to_string(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Every backend's state, sorted by backend.
    pub fn snapshot(&self) -> Vec<BackendSnapshot> {
        let shared = lock(&self.shared);
        let mut all: Vec<_> = shared
            .backends
            .iter()
            .map(|(id, b)| BackendSnapshot {
                backend: id.clone(),
                healthy: b.state.healthy(),
                rule: b.state.rule(),
                checks: b.state.checks().iter().map(CheckSnapshot::from).collect(),
            })
            .collect();
        all.sort_by(|a, b| a.backend.cmp(&b.backend));
        all
    }

    /// Stops every probe and forgets every backend; the checker can be given targets again.
    /// Dropping the checker does the same.
    pub fn stop(&self) {
        let mut shared = lock(&self.shared);
        for (_, backend) in shared.backends.drain() {
            backend.slots.iter().for_each(|s| s.task.abort());
        }
    }

    fn send(&self, backend: &BackendId, healthy: bool, reason: String) {
        send(&self.events, backend, healthy, reason);
    }

    fn spawn(&self, backend: BackendId, id: u64, spec: &CheckSpec) -> AbortHandle {
        let span = tracing::info_span!("health", backend = %backend, check = %spec);
        let task = run(
            self.shared.clone(),
            self.events.clone(),
            backend,
            id,
            self.source,
        );
        self.runtime.spawn(task.instrument(span)).abort_handle()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The state stays consistent even if a holder panicked: every update is a single call.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn send(
    events: &mpsc::UnboundedSender<HealthEvent>,
    backend: &BackendId,
    healthy: bool,
    reason: String,
) {
    let event = HealthEvent {
        backend: backend.clone(),
        healthy,
        reason,
    };
    if events.send(event).is_err() {
        tracing::debug!("health event dropped: nobody listens");
    }
}

fn current_spec(shared: &Mutex<Shared>, backend: &BackendId, id: u64) -> Option<CheckSpec> {
    let shared = lock(shared);
    let slots = &shared.backends.get(backend)?.slots;
    slots.iter().find(|s| s.id == id).map(|s| s.spec.clone())
}

/// One check's loop. Starts after a random fraction of the interval so that checks configured
/// together do not probe in lockstep; probe starts are then at least one interval apart.
async fn run(
    shared: Arc<Mutex<Shared>>,
    events: mpsc::UnboundedSender<HealthEvent>,
    backend: BackendId,
    id: u64,
    source: Option<IpAddr>,
) {
    let Some(first) = current_spec(&shared, &backend, id) else {
        return;
    };
    let nanos = u64::try_from(first.interval.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut next = Instant::now() + Duration::from_nanos(random_u64(id) % nanos);
    loop {
        tokio::time::sleep_until(next).await;
        let Some(spec) = current_spec(&shared, &backend, id) else {
            return;
        };
        let result = probe(backend.address, &spec, source).await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, "probe failed");
        }
        {
            let mut shared = lock(&shared);
            let Some(b) = shared.backends.get_mut(&backend) else {
                return;
            };
            let Some(index) = b.slots.iter().position(|s| s.id == id) else {
                return;
            };
            let status = |b: &Backend| b.state.checks().get(index).map(CheckState::status);
            let before = status(b);
            let transition = b.state.record(index, &result);
            if let Some(after) = status(b).filter(|s| Some(*s) != before) {
                let error = result.as_ref().err().map(ToString::to_string);
                tracing::info!(status = ?after, error, "check changed");
            }
            if let Some(t) = transition {
                send(&events, &backend, t.healthy, t.reason);
            }
        }
        next += spec.interval;
        next = next.max(Instant::now());
    }
}

/// The daemon shares one checker between its reload path and its API.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Checker>();
};
