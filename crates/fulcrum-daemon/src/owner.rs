//! The one owner of the data plane. A dedicated thread (Balancer calls are blocking
//! syscalls) holds the [`Balancer`] and applies [`Command`]s in the order they come: health
//! changes, reloads, drains, ticks. After every command it publishes an immutable
//! [`Snapshot`] that the API, `/metrics` and the console read without waiting for it.
//!
//! A backend enters the data plane when it is configured and healthy; drained (by the
//! configuration or the API), unhealthy once in, or leaving during its drain period, it
//! keeps its flows and takes no new ones. Every change ends in [`Owner::sync`] of the services it touched.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    time::{Instant, SystemTime},
};

use fulcrum::{AttachMode, Balancer, DesiredDestination, Destination, ServiceId};
use fulcrum_config::Config;
use fulcrum_health::{Checker, CheckerConfig, HealthEvent};
use tokio::sync::{mpsc::UnboundedReceiver, watch};
use tracing::{error, info, info_span, warn};

use crate::{
    adopt,
    api::{ControlError, Event, Snapshot},
    daemon::{DaemonError, Shutdown, chain},
    status::TrafficStatus,
    targets::{self, service_id},
};

/// How many recent changes the console shows.
const EVENTS_KEPT: usize = 50;

/// A service's backend, by names the configuration uses.
pub(crate) type BackendKey = (String, IpAddr);

/// Where a command's answer goes: a channel of one.
pub(crate) type Reply = mpsc::SyncSender<Result<(), ControlError>>;

/// What the owner is asked to do, in order.
pub(crate) enum Command {
    /// A backend's health verdict changed.
    Health(HealthEvent),
    /// Drain (`true`) or undrain a backend through the API.
    Drain {
        service: String,
        backend: IpAddr,
        drained: bool,
        reply: Reply,
    },
    /// Read the configuration file again; SIGHUP asks without waiting for the answer.
    Reload { reply: Option<Reply> },
    /// Periodic upkeep: neighbours, rates, drain periods, unresolved backends.
    Tick,
    /// Stop the thread, detaching or leaving the data plane for the next daemon.
    Stop(Shutdown),
    /// Flows the data plane just pinned: name them by address and share them.
    FlowEvents(Vec<fulcrum::FlowEvent>),
    /// Peers' records to write into the flow table.
    ImportFlows(Vec<fulcrum::FlowRecord>),
    /// Scan the flow table and send it whole (a peer's dump request, or the refresh).
    DumpFlows(fulcrum_flowsync::Target),
    /// Flow sharing restarted with new settings: send through this from now on.
    FlowSender(fulcrum_flowsync::FlowSender),
}

/// A backend removed from the configuration that keeps its flows until `until`.
pub(crate) struct Leaving {
    pub(crate) backend: fulcrum_config::Backend,
    pub(crate) until: Instant,
}

/// The last counters sampled, when, and the rates (packets/s, bits/s) they gave.
type Rate = (fulcrum::Traffic, Instant, f64, f64);

/// A service (`None`) or one of its backends.
pub(crate) type RateKey = (String, Option<IpAddr>);

/// The data plane and everything the daemon knows about it.
pub(crate) struct Owner {
    pub(crate) lb: Balancer,
    pub(crate) checker: Checker,
    pub(crate) config: Config,
    pub(crate) config_path: PathBuf,
    /// Service name to its index in `config.services`.
    pub(crate) by_name: HashMap<String, usize>,
    /// Data plane id to service name.
    pub(crate) by_id: HashMap<ServiceId, String>,
    /// Each backend's verdict; adopted backends start healthy in the checker.
    pub(crate) healthy: HashMap<BackendKey, bool>,
    /// Backends drained through the API (the configuration's drains are in `config`).
    pub(crate) drained_by_api: HashSet<BackendKey>,
    /// Backends wanted in the data plane that it cannot serve, with the reason, by service.
    pub(crate) unresolved: HashMap<String, BTreeMap<IpAddr, String>>,
    /// Backends removed from the configuration, draining, by service.
    pub(crate) leaving: HashMap<String, BTreeMap<IpAddr, Leaving>>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) rates: HashMap<RateKey, Rate>,
    pub(crate) reload_error: Option<String>,
    pub(crate) view: watch::Sender<Arc<Snapshot>>,
    /// Whether the data plane was adopted from pins (its flows survived the restart).
    pub(crate) adopted_data_plane: bool,
    /// The data plane's ring of new flows, until the daemon takes it to read.
    pub(crate) flow_events: Option<fulcrum::FlowEvents>,
    /// Where shared and dumped records go, while flow sharing runs.
    pub(crate) flow_sender: Option<fulcrum_flowsync::FlowSender>,
    /// What imports did, for the API.
    pub(crate) imports: watch::Sender<crate::flow_sharing::ImportTotals>,
    /// Peers' records held while a starting balancer's backends are not yet healthy (they
    /// enter the data plane only then, and a record for a backend not in it is refused),
    /// until the deadline; see [`crate::flow_sharing::HeldImports`].
    pub(crate) held_imports: Option<crate::flow_sharing::HeldImports>,
    /// Where a reload that changed `flow_sharing` sends the new settings.
    pub(crate) flow_restart:
        Option<tokio::sync::mpsc::UnboundedSender<fulcrum_config::FlowSharing>>,
    /// Top talkers' rates, sampled every tick.
    pub(crate) talkers: crate::talkers::Sampler,
}

impl Owner {
    /// Loads the configuration, the data plane and the checks, and applies every service.
    /// Must run inside a tokio runtime (the checker's probes run on it); the receiver
    /// carries health changes, to be sent back as [`Command::Health`].
    pub(crate) fn start(
        config_path: &Path,
        view: watch::Sender<Arc<Snapshot>>,
    ) -> Result<(Self, UnboundedReceiver<HealthEvent>), DaemonError> {
        let config = fulcrum_config::load(config_path)?;
        let refused = crate::host::local_vip_problems(&config);
        if !refused.is_empty() {
            return Err(DaemonError::Refused(refused.join("\n")));
        }
        let mode = match config.xdp_mode {
            fulcrum_config::XdpMode::Native => AttachMode::Native,
            fulcrum_config::XdpMode::Generic => AttachMode::Generic,
        };
        let mut lb = Balancer::builder()
            .max_services(
                u32::try_from(config.services.len())
                    .unwrap_or(u32::MAX)
                    .max(16)
                    * 2,
            )
            .pin(fulcrum::pin::instance_dir(&config.instance))
            .share_flows(config.flow_sharing.is_some())
            .flow_insert_budget(config.flow_table.insert_budget)
            .top_talkers(crate::talkers::Sampler::sampling(&config.top_talkers))
            .build()?;
        for iface in &config.interfaces {
            lb.attach(iface, mode)?;
        }
        lb.release_unclaimed()?;
        let adopted_data_plane = lb.adopted();
        let flow_events = match config.flow_sharing {
            Some(_) => Some(lb.flow_events()?),
            None => None,
        };
        let adopted = match lb.adopted() {
            true => lb.services()?,
            false => Vec::new(),
        };
        let (checker, events) = Checker::new(CheckerConfig { source: None })?;
        // Backends the adopted table serves start healthy: only `fall` failures take them out.
        let serving = adopt::serving(&adopted, &config);
        let vias = targets::probe_vias(&mut lb, &config)?;
        checker.set_targets_adopting(targets::targets(&config, &vias), &serving)?;
        let talkers = crate::talkers::Sampler::new(&config.top_talkers);
        let mut owner = Self {
            lb,
            checker,
            config,
            config_path: config_path.to_path_buf(),
            by_name: HashMap::new(),
            by_id: HashMap::new(),
            healthy: HashMap::new(),
            drained_by_api: HashSet::new(),
            unresolved: HashMap::new(),
            leaving: HashMap::new(),
            events: VecDeque::new(),
            rates: HashMap::new(),
            reload_error: None,
            view,
            adopted_data_plane,
            flow_events,
            flow_sender: None,
            imports: watch::Sender::new(Default::default()),
            held_imports: None,
            flow_restart: None,
            talkers,
        };
        owner.reindex();
        owner.read_health();
        let adopted = owner.adopt(adopted)?;
        for service in owner.config.services.clone() {
            if !adopted.contains(&service_id(&service)) {
                owner.lb.add_service(targets::service(&service))?;
            }
            owner.sync(&service.name)?;
        }
        info!(
            services = owner.config.services.len(),
            "configuration applied"
        );
        owner.publish();
        Ok((owner, events))
    }

    /// Applies commands until [`Command::Stop`] or until every sender is gone.
    pub(crate) fn run(mut self, commands: mpsc::Receiver<Command>) -> Shutdown {
        let mut how = Shutdown::Stop;
        while let Ok(command) = commands.recv() {
            match command {
                Command::Health(event) => {
                    self.on_health(event);
                    self.release_held_imports();
                }
                Command::Drain {
                    service,
                    backend,
                    drained,
                    reply,
                } => {
                    let result = self.set_drain(&service, backend, drained);
                    self.publish();
                    let _ = reply.send(result);
                }
                Command::Reload { reply } => {
                    self.publish_reloading();
                    let result = self.reload();
                    self.publish();
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }
                Command::Tick => {
                    self.tick();
                    self.release_held_imports();
                }
                Command::FlowEvents(events) => self.share_flows(&events),
                Command::ImportFlows(records) => self.import_flows(&records),
                Command::DumpFlows(to) => self.dump_flows(to),
                Command::FlowSender(sender) => self.flow_sender = Some(sender),
                Command::Stop(asked) => {
                    how = asked;
                    break;
                }
            }
        }
        self.checker.stop();
        self.finish(how);
        how
    }

    fn finish(self, how: Shutdown) {
        match how {
            Shutdown::Stop => {
                info!("shutting down; detaching");
                drop(self.lb);
            }
            Shutdown::Handover => {
                let dir = self.lb.pin_dir().map(|d| d.display().to_string());
                info!(pinned = ?dir, "handing over; the data plane stays pinned and forwarding");
                self.lb.leave_pinned();
            }
        }
    }

    /// Whether a backend counts as healthy (adopted ones start so, see [`adopt::serving`]).
    pub(crate) fn is_healthy(&self, key: &BackendKey) -> bool {
        self.healthy.get(key) == Some(&true)
    }

    /// Indexes the configuration in force by name and by data plane id.
    pub(crate) fn reindex(&mut self) {
        self.by_name = (self.config.services.iter().enumerate())
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        self.by_id = (self.config.services.iter())
            .map(|s| (service_id(s), s.name.clone()))
            .collect();
    }

    /// A service's name from its name or its id (`[2001:db8::1]:80/tcp`); unknown ones are
    /// returned as given, for the error to quote.
    fn resolve_name(&self, service: &str) -> String {
        if self.by_name.contains_key(service) {
            return service.to_string();
        }
        (service.parse::<ServiceId>().ok())
            .and_then(|id| self.by_id.get(&id).cloned())
            .unwrap_or_else(|| service.to_string())
    }

    pub(crate) fn service(&self, name: &str) -> Option<&fulcrum_config::Service> {
        self.by_name
            .get(name)
            .and_then(|i| self.config.services.get(*i))
    }

    fn on_health(&mut self, event: HealthEvent) {
        let address = event.backend.address;
        let service = event.backend.service.clone();
        self.healthy
            .insert((service.clone(), address), event.healthy);
        let word = if event.healthy {
            "healthy"
        } else {
            "unhealthy"
        };
        self.event(
            &service,
            Some(address),
            format!("became {word}: {}", event.reason),
        );
        if let Err(e) = self.sync(&service) {
            error!(%service, error = %chain(&e), "applying a health change failed");
        }
        self.publish();
    }

    fn set_drain(
        &mut self,
        service: &str,
        backend: IpAddr,
        drained: bool,
    ) -> Result<(), ControlError> {
        let service = self.resolve_name(service);
        let service = service.as_str();
        let known = self
            .service(service)
            .ok_or_else(|| ControlError::NotFound(format!("no service '{service}'")))?
            .backends
            .iter()
            .any(|b| b.address == backend);
        if !known {
            return Err(ControlError::NotFound(format!(
                "service '{service}' has no backend {backend}"
            )));
        }
        let key = (service.to_string(), backend);
        if drained {
            self.drained_by_api.insert(key);
        } else {
            self.drained_by_api.remove(&key);
        }
        let word = if drained { "drained" } else { "undrained" };
        self.event(service, Some(backend), format!("{word} through the API"));
        self.sync(service)
            .map_err(|e| ControlError::Internal(chain(&e)))
    }

    fn tick(&mut self) {
        if let Err(e) = self.lb.refresh_neighbours() {
            warn!(error = %chain(&e), "neighbour refresh failed");
        }
        let now = Instant::now();
        let mut due: Vec<String> = Vec::new();
        for (service, leaving) in &mut self.leaving {
            let before = leaving.len();
            leaving.retain(|_, l| l.until > now);
            if leaving.len() != before {
                due.push(service.clone());
            }
        }
        self.leaving.retain(|_, l| !l.is_empty());
        for service in &due {
            self.event(
                service,
                None,
                "drain period over; removed backends left".into(),
            );
        }
        // Unresolved backends are tried again: a route may have appeared.
        due.extend(
            (self.unresolved.iter())
                .filter(|(_, u)| !u.is_empty())
                .map(|(s, _)| s.clone()),
        );
        due.sort();
        due.dedup();
        for service in due {
            if let Err(e) = self.sync(&service) {
                error!(%service, error = %chain(&e), "applying the service failed");
            }
        }
        self.sample_rates();
        self.talkers.sample(&self.lb, &self.by_id);
        self.publish();
    }

    /// Makes one service's destinations in the data plane match its configuration, health,
    /// drain state and leaving backends, in one declarative call. Backends the data plane
    /// cannot serve are left out and remembered with their reason.
    pub(crate) fn sync(&mut self, name: &str) -> Result<(), fulcrum::BalancerError> {
        let Some(service) = self.service(name) else {
            return Ok(());
        };
        let span = info_span!("service", service = name);
        let _enter = span.enter();
        let id = service_id(service);
        let key = |a: IpAddr| (name.to_string(), a);
        let mut wanted: Vec<DesiredDestination> = service
            .backends
            .iter()
            // A backend that turns unhealthy is drained, not removed: its established
            // flows stay (a flapping check must not reset them), new flows go elsewhere.
            .filter_map(|b| {
                let healthy = self.is_healthy(&key(b.address));
                if !healthy && self.lb.is_drained(&id, b.address).is_err() {
                    return None;
                }
                let drained = b.drain || self.drained_by_api.contains(&key(b.address)) || !healthy;
                let d = Destination::new(b.address).with_weight(b.weight);
                Some(DesiredDestination::new(d, drained))
            })
            .collect();
        let configured: HashSet<IpAddr> = service.backends.iter().map(|b| b.address).collect();
        for (address, l) in self.leaving.get(name).into_iter().flatten() {
            if !configured.contains(address) {
                wanted.push(DesiredDestination::new(
                    Destination::new(*address).with_weight(l.backend.weight),
                    true,
                ));
            }
        }
        let left_out: BTreeMap<IpAddr, String> = self
            .lb
            .set_desired(&id, &wanted)?
            .into_iter()
            .map(|u| (u.address, chain(&u.error)))
            .collect();
        let before = self.unresolved.remove(name).unwrap_or_default();
        for (address, why) in &left_out {
            if before.get(address) != Some(why) {
                let at = self.place_of(name, *address, why);
                warn!(backend = %address, "left out of the data plane: {at}");
                self.event(name, Some(*address), format!("left out: {why}"));
            }
        }
        for address in before.keys().filter(|a| !left_out.contains_key(a)) {
            if configured.contains(address)
                && wanted.iter().any(|d| d.destination.address == *address)
            {
                self.event(name, Some(*address), "now in the data plane".into());
            }
        }
        if !left_out.is_empty() {
            self.unresolved.insert(name.to_string(), left_out);
        }
        Ok(())
    }

    /// `why`, placed at the backend's line in the configuration file.
    fn place_of(&self, service: &str, address: IpAddr, why: &str) -> String {
        let Some(i) = self.by_name.get(service).copied() else {
            return why.to_string();
        };
        let backends = self.config.services.get(i).map(|s| s.backends.as_slice());
        match backends.and_then(|b| b.iter().position(|b| b.address == address)) {
            Some(j) => self
                .config
                .backend_problem(i, j, why.to_string())
                .to_string(),
            None => why.to_string(),
        }
    }

    /// Takes every backend's verdict from the checker (after a start or a reload).
    pub(crate) fn read_health(&mut self) {
        self.healthy = self
            .checker
            .snapshot()
            .into_iter()
            .map(|b| ((b.backend.service, b.backend.address), b.healthy))
            .collect();
    }

    pub(crate) fn event(&mut self, service: &str, backend: Option<IpAddr>, message: String) {
        self.events.push_front(Event {
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            service: service.to_string(),
            backend,
            message,
        });
        self.events.truncate(EVENTS_KEPT);
    }

    fn sample_rates(&mut self) {
        let Ok(services) = self.lb.services() else {
            return;
        };
        let now = Instant::now();
        for s in services {
            let Some(name) = self.by_id.get(&s.service.id) else {
                continue;
            };
            let mut samples = vec![((name.clone(), None), s.traffic)];
            for d in &s.destinations {
                samples.push(((name.clone(), Some(d.destination.address)), d.traffic));
            }
            for (key, traffic) in samples {
                let entry = self.rates.entry(key).or_insert((traffic, now, 0.0, 0.0));
                let dt = now.duration_since(entry.1).as_secs_f64();
                if dt >= 0.5 {
                    let rate = TrafficStatus::sample(traffic, Some(entry.0), dt);
                    *entry = (traffic, now, rate.packets_per_second, rate.bits_per_second);
                }
            }
        }
    }

    /// The rates last computed for a service or backend, with `counted` traffic.
    pub(crate) fn traffic(&self, key: RateKey, counted: fulcrum::Traffic) -> TrafficStatus {
        let mut t = TrafficStatus::sample(counted, None, 0.0);
        if let Some((_, _, pps, bps)) = self.rates.get(&key) {
            t.packets_per_second = *pps;
            t.bits_per_second = *bps;
        }
        t
    }

    /// Publishes the current state for every reader.
    pub(crate) fn publish(&self) {
        let snapshot = Snapshot {
            status: self.status(),
            events: self.events.iter().cloned().collect(),
            reload_error: self.reload_error.clone(),
            config: Some(Arc::new(self.config.clone())),
        };
        self.view.send_replace(Arc::new(snapshot));
    }

    /// Marks the published view as "a reload is being applied"; it stays the old
    /// configuration's view until the reload is done.
    fn publish_reloading(&self) {
        let mut snapshot = Snapshot::clone(&self.view.borrow());
        snapshot.status.reloading = true;
        self.view.send_replace(Arc::new(snapshot));
    }
}
