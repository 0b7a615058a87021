//! The scheduler: backends with identical checks (same address, same specs in the same order,
//! same rule) form one *group*, probed once: one tokio task per (group, check) runs its probe
//! every interval, feeds the group's pure state in [`crate::state`], and sends each transition
//! to every backend of the group. 300 services on the same 4 backends probe 4 times per
//! interval, not 1,200.
//!
//! A reload keeps groups that did not change as they are. A backend that moves to a new group
//! (a changed interval, threshold or rule) carries its checks' states over, matched by
//! [`CheckSpec::same_probe`]. Groups nobody uses any more stop at once.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::IpAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{runtime::Handle, sync::mpsc, task::AbortHandle, time::Instant};
use tracing::Instrument;

use crate::{
    BackendState, CheckSpec, CheckState, CheckStatus, Rule, SpecError,
    probe::{Via, probe, probe_via, random_u64},
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
    /// Set for a tunnelled backend: probes go to the VIP through the tunnel, proving the
    /// backend serves the VIP, not only its own address.
    pub via: Option<Via>,
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
    /// Set while probes cannot run for a local reason (e.g. `local: too many open files
    /// (socket)`); the status and counters then stay as they were.
    pub local_error: Option<String>,
    /// Probes of this check that could not run for a local reason.
    pub local_failures: u64,
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
            local_error: c.local_error().map(str::to_owned),
            local_failures: c.local_failures(),
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

/// What makes checks identical: probed once for every backend that has them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    address: IpAddr,
    checks: Vec<CheckSpec>,
    rule: Rule,
    via: Option<Via>,
}

impl GroupKey {
    fn of(target: &Target) -> Self {
        Self {
            address: target.backend.address,
            checks: target.checks.clone(),
            rule: target.rule,
            via: target.via.clone(),
        }
    }
}

struct Group {
    key: GroupKey,
    state: BackendState,
    tasks: Vec<AbortHandle>,
    backends: Vec<BackendId>,
}

impl Group {
    fn stop(&self) {
        self.tasks.iter().for_each(AbortHandle::abort);
    }
}

#[derive(Default)]
struct Shared {
    groups: HashMap<u64, Group>,
    by_key: HashMap<GroupKey, u64>,
    by_backend: HashMap<BackendId, u64>,
    next_id: u64,
}

/// Runs the checks of a set of backends until stopped or dropped.
pub struct Checker {
    shared: Arc<Mutex<Shared>>,
    events: mpsc::UnboundedSender<HealthEvent>,
    source: Option<IpAddr>,
    runtime: Handle,
    local_failures: Arc<AtomicU64>,
}

impl Checker {
    /// A checker with no targets, and the receiving end of its events. The channel is
    /// unbounded so a slow consumer never delays probes nor loses a transition; there is at
    /// most one event per backend and check result.
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
            local_failures: Arc::default(),
        };
        Ok((checker, rx))
    }

    /// Replaces the set of targets (hot reload). Backends whose checks did not change keep
    /// their state and schedule; a backend whose checks changed keeps the state of each check
    /// whose probe is unchanged ([`CheckSpec::same_probe`]) under the new interval, timeout
    /// and thresholds; new backends start unhealthy (or healthy without checks) with no
    /// event, see [`snapshot`](Self::snapshot); removed ones stop at once. A known backend's
    /// verdict changed by the new set is sent as an event. On error nothing changes.
    pub fn set_targets(&self, targets: Vec<Target>) -> Result<(), CheckerError> {
        self.set_targets_adopting(targets, &HashSet::new())
    }

    /// [`set_targets`](Self::set_targets) for a daemon adopting a data plane: the backends in
    /// `serving` that the checker does not check yet start healthy with every check Up, so
    /// that only `fall` failures in a row take them out. Checks shared with other backends
    /// start so if any of their backends is serving (they were one check before too).
    pub fn set_targets_adopting(
        &self,
        targets: Vec<Target>,
        serving: &HashSet<BackendId>,
    ) -> Result<(), CheckerError> {
        self.validate(&targets)?;
        let mut shared = lock(&self.shared);
        let before: HashMap<BackendId, bool> = shared
            .by_backend
            .iter()
            .filter_map(|(b, g)| Some((b.clone(), shared.groups.get(g)?.state.healthy())))
            .collect();
        let mut keys = Vec::new();
        let mut mates: HashMap<GroupKey, Vec<&Target>> = HashMap::new();
        for target in &targets {
            let key = GroupKey::of(target);
            mates
                .entry(key)
                .or_insert_with_key(|key| {
                    keys.push(key.clone());
                    Vec::new()
                })
                .push(target);
        }
        let mut by_backend = HashMap::new();
        let mut members: HashMap<u64, Vec<BackendId>> = HashMap::new();
        for key in keys {
            let Some(mates) = mates.remove(&key) else {
                continue;
            };
            let id = match shared.by_key.get(&key) {
                Some(&id) => id,
                None => self.create(&mut shared, key, &mates, serving),
            };
            for t in mates {
                by_backend.insert(t.backend.clone(), id);
                members.entry(id).or_default().push(t.backend.clone());
            }
        }
        let Shared {
            groups,
            by_key,
            by_backend: old,
            ..
        } = &mut *shared;
        groups.retain(|id, group| match members.remove(id) {
            Some(backends) => {
                group.backends = backends;
                true
            }
            None => {
                group.stop();
                by_key.remove(&group.key);
                false
            }
        });
        *old = by_backend;
        for (backend, id) in old.iter() {
            let (Some(group), Some(&was)) = (groups.get(id), before.get(backend)) else {
                continue;
            };
            if group.state.healthy() != was {
                let reason = format!("reconfigured; {}", group.state.tally());
                self.send(backend, group.state.healthy(), reason);
            }
        }
        Ok(())
    }

    /// Starts the group of `key` for its backends' `mates`: carries over the checks of the
    /// group the first of them was in, or starts fresh.
    fn create(
        &self,
        shared: &mut Shared,
        key: GroupKey,
        mates: &[&Target],
        serving: &HashSet<BackendId>,
    ) -> u64 {
        let previous = mates
            .iter()
            .find_map(|t| shared.by_backend.get(&t.backend))
            .and_then(|id| shared.groups.get(id));
        let state = match previous {
            Some(old) => {
                let mut kept: Vec<Option<(&CheckSpec, &CheckState)>> = old
                    .key
                    .checks
                    .iter()
                    .zip(old.state.checks())
                    .map(Some)
                    .collect();
                let checks = key
                    .checks
                    .iter()
                    .map(|spec| {
                        let carried = kept
                            .iter_mut()
                            .find(|k| k.is_some_and(|(s, _)| s.same_probe(spec)))
                            .and_then(Option::take);
                        match carried {
                            Some((_, state)) => {
                                let mut state = state.clone();
                                state.set_thresholds(spec.rise, spec.fall);
                                state
                            }
                            None => CheckState::new(spec.to_string(), spec.rise, spec.fall),
                        }
                    })
                    .collect();
                let mut state = BackendState::with_verdict(key.rule, checks, old.state.healthy());
                // The verdict is sent per backend by the caller.
                let _ = state.reconfigure(key.rule, state.checks().to_vec());
                state
            }
            None if mates.iter().any(|t| serving.contains(&t.backend)) => {
                let checks = key
                    .checks
                    .iter()
                    .map(|spec| CheckState::assumed_up(spec.to_string(), spec.rise, spec.fall));
                BackendState::with_verdict(key.rule, checks.collect(), true)
            }
            None => {
                let checks = key
                    .checks
                    .iter()
                    .map(|spec| CheckState::new(spec.to_string(), spec.rise, spec.fall));
                BackendState::new(key.rule, checks.collect())
            }
        };
        shared.next_id += 1;
        let id = shared.next_id;
        let tasks = key
            .checks
            .iter()
            .enumerate()
            .map(|(index, spec)| self.spawn(&key, id, index, spec))
            .collect();
        shared.by_key.insert(key.clone(), id);
        let group = Group {
            key,
            state,
            tasks,
            backends: Vec::new(),
        };
        shared.groups.insert(id, group);
        id
    }

    fn validate(&self, targets: &[Target]) -> Result<(), CheckerError> {
        let mut seen = HashSet::new();
        for t in targets {
            let backend = || t.backend.clone();
            if !seen.insert(&t.backend) {
                return Err(CheckerError::Duplicate(backend()));
            }
            if let Some(source_addr) = self.source
                && t.via.is_none()
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

    /// Every backend's state, sorted by backend. Backends sharing their checks show the same
    /// state.
    pub fn snapshot(&self) -> Vec<BackendSnapshot> {
        let shared = lock(&self.shared);
        let mut all: Vec<_> = shared
            .by_backend
            .iter()
            .filter_map(|(id, group)| {
                let b = shared.groups.get(group)?;
                Some(BackendSnapshot {
                    backend: id.clone(),
                    healthy: b.state.healthy(),
                    rule: b.state.rule(),
                    checks: b.state.checks().iter().map(CheckSnapshot::from).collect(),
                })
            })
            .collect();
        all.sort_by(|a, b| a.backend.cmp(&b.backend));
        all
    }

    /// Probes that could not run for a local reason (out of file descriptors, memory,
    /// buffers or ports), since the checker started: a counter for `/metrics`. Such failures
    /// never count against a backend.
    pub fn local_failures(&self) -> u64 {
        self.local_failures.load(Ordering::Relaxed)
    }

    /// Stops every probe and forgets every backend; the checker can be given targets again.
    /// Dropping the checker does the same.
    pub fn stop(&self) {
        let mut shared = lock(&self.shared);
        shared.groups.values().for_each(Group::stop);
        *shared = Shared {
            next_id: shared.next_id,
            ..Shared::default()
        };
    }

    fn send(&self, backend: &BackendId, healthy: bool, reason: String) {
        send(&self.events, backend, healthy, reason);
    }

    fn spawn(&self, key: &GroupKey, group: u64, index: usize, spec: &CheckSpec) -> AbortHandle {
        let span = tracing::info_span!("health", backend = %key.address, check = %spec);
        let task = run(Probing {
            shared: self.shared.clone(),
            events: self.events.clone(),
            local_failures: self.local_failures.clone(),
            address: key.address,
            via: key.via.clone(),
            group,
            index,
            spec: spec.clone(),
            source: self.source,
        });
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

/// What one check's loop needs.
struct Probing {
    shared: Arc<Mutex<Shared>>,
    events: mpsc::UnboundedSender<HealthEvent>,
    local_failures: Arc<AtomicU64>,
    address: IpAddr,
    via: Option<Via>,
    group: u64,
    index: usize,
    spec: CheckSpec,
    source: Option<IpAddr>,
}

/// One check's loop. Starts after a random fraction of the interval so that checks configured
/// together do not probe in lockstep; probe starts are then at least one interval apart. Ends
/// when its group is gone (it is also aborted at once).
async fn run(p: Probing) {
    let nanos = u64::try_from(p.spec.interval.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut next = Instant::now() + Duration::from_nanos(random_u64(p.group) % nanos);
    loop {
        tokio::time::sleep_until(next).await;
        let result = match &p.via {
            Some(via) => probe_via(via, &p.spec).await,
            None => probe(p.address, &p.spec, p.source).await,
        };
        match &result {
            Err(e) if e.is_local() => {
                p.local_failures.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "probe failed"),
            Ok(_) => {}
        }
        {
            let mut shared = lock(&p.shared);
            let Some(group) = shared.groups.get_mut(&p.group) else {
                return;
            };
            let check = |g: &Group| {
                let c = g.state.checks().get(p.index);
                (
                    c.map(CheckState::status),
                    c.and_then(|c| c.local_error().map(str::to_owned)),
                )
            };
            let (status_before, local_before) = check(group);
            let transition = group.state.record(p.index, &result);
            let (status, local) = check(group);
            if local != local_before {
                match &local {
                    Some(error) => {
                        tracing::warn!(error, "probe cannot run here; the backend's state is kept")
                    }
                    None => tracing::info!("probes run again"),
                }
            }
            if let Some(after) = status.filter(|s| Some(*s) != status_before) {
                let error = result.as_ref().err().map(ToString::to_string);
                tracing::info!(status = ?after, error, "check changed");
            }
            if let Some(t) = transition {
                for backend in &group.backends {
                    send(&p.events, backend, t.healthy, t.reason.clone());
                }
            }
        }
        next += p.spec.interval;
        next = next.max(Instant::now());
    }
}

/// The daemon shares one checker between its reload path and its API.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Checker>();
};
