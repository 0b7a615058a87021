//! The daemon: the configuration, the health checks and the data plane kept in step.
//!
//! A backend is in the data plane when it is configured and healthy; drained (by the
//! configuration or the API) it keeps its flows and takes no new ones. Health changes,
//! reloads and API calls all end in [`Inner::sync`], which makes one service's
//! destinations match that rule.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use fulcrum::{
    AttachMode, Balancer, Destination, Protocol, Scheduler, Service, ServiceId, Traffic,
};
use fulcrum_config::{CheckKind, Config, HealthRule};
use fulcrum_health::{
    BackendId, CheckSpec, Checker, CheckerConfig, HealthEvent, HttpCheck, Probe, Rule, Target,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{error, info, info_span, warn};

use crate::{
    api::{Control, ControlError, Event, Snapshot},
    status::{self, BackendStatus, CheckStatus, Health, ServiceStatus, Status, TrafficStatus},
};

/// How many recent changes the console shows.
const EVENTS_KEPT: usize = 50;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration file is invalid; the message names file, line and field.
    #[error(transparent)]
    Config(#[from] fulcrum_config::ConfigError),
    /// The data plane could not be loaded, attached or configured.
    #[error("data plane")]
    Balancer(#[from] fulcrum::BalancerError),
    /// The health checker refused the configured checks.
    #[error("health checks")]
    Health(#[from] fulcrum_health::CheckerError),
    /// The API address could not be bound.
    #[error("listening on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The API token file could not be read.
    #[error("reading the API token from {path}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The running daemon, shared by the API, the signal handler and the event loop.
pub struct Daemon {
    inner: Mutex<Inner>,
    checker: Checker,
    config_path: PathBuf,
}

/// A service (`None`) or one of its backends.
type RateKey = (String, Option<Ipv4Addr>);

/// The last counters sampled, when, and the rates (packets/s, bits/s) they gave.
type Rate = (Traffic, Instant, f64, f64);

struct Inner {
    lb: Balancer,
    config: Config,
    healthy: BTreeMap<(String, Ipv4Addr), bool>,
    drained_by_api: BTreeSet<(String, Ipv4Addr)>,
    events: VecDeque<Event>,
    rates: BTreeMap<RateKey, Rate>,
    reload_error: Option<String>,
}

impl Daemon {
    /// Loads the configuration, the data plane and the checks. Must run inside a tokio
    /// runtime; the returned receiver carries health changes for [`Daemon::on_health`].
    pub fn start(
        config_path: &Path,
    ) -> Result<(Arc<Self>, UnboundedReceiver<HealthEvent>), DaemonError> {
        let config = fulcrum_config::load(config_path)?;
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
            .build()?;
        for iface in &config.interfaces {
            lb.attach(iface, mode)?;
        }
        let (checker, events) = Checker::new(CheckerConfig { source: None })?;
        checker.set_targets(targets(&config))?;
        let mut inner = Inner {
            lb,
            config: config.clone(),
            healthy: BTreeMap::new(),
            drained_by_api: BTreeSet::new(),
            events: VecDeque::new(),
            rates: BTreeMap::new(),
            reload_error: None,
        };
        inner.read_health(&checker);
        for service in &config.services {
            inner.lb.add_service(Service {
                id: service_id(service),
                scheduler: scheduler(service),
            })?;
            inner.sync(&service.name)?;
        }
        info!(services = config.services.len(), "configuration applied");
        let daemon = Self {
            inner: Mutex::new(inner),
            checker,
            config_path: config_path.to_path_buf(),
        };
        Ok((Arc::new(daemon), events))
    }

    /// The API token, from `api.token_file`.
    pub fn token(&self) -> Result<Option<String>, DaemonError> {
        let inner = self.lock();
        let Some(path) = &inner.config.api.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| DaemonError::Token {
            path: path.clone(),
            source,
        })?;
        Ok(Some(text.trim().to_string()))
    }

    /// Where the API listens.
    pub fn listen(&self) -> std::net::SocketAddr {
        self.lock().config.api.listen
    }

    /// A backend's health changed: the data plane follows.
    pub fn on_health(&self, event: HealthEvent) {
        let IpAddr::V4(address) = event.backend.address else {
            return;
        };
        let mut inner = self.lock();
        let service = event.backend.service.clone();
        inner
            .healthy
            .insert((service.clone(), address), event.healthy);
        let word = if event.healthy {
            "healthy"
        } else {
            "unhealthy"
        };
        inner.event(
            &service,
            Some(address),
            format!("became {word}: {}", event.reason),
        );
        if let Err(e) = inner.sync(&service) {
            error!(%service, error = %chain(&e), "applying a health change failed");
        }
    }

    /// Periodic upkeep: neighbour changes and traffic rates.
    pub fn tick(&self) {
        let mut inner = self.lock();
        if let Err(e) = inner.lb.refresh_neighbours() {
            warn!(error = %chain(&e), "neighbour refresh failed");
        }
        inner.sample_rates();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves data that is still consistent map by map.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Control for Arc<Daemon> {
    fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let checks = self.checker.snapshot();
        Snapshot {
            status: inner.status(&checks),
            events: inner.events.iter().cloned().collect(),
            reload_error: inner.reload_error.clone(),
        }
    }

    fn set_drain(
        &self,
        service: &str,
        backend: Ipv4Addr,
        drained: bool,
    ) -> Result<(), ControlError> {
        let mut inner = self.lock();
        let known = inner
            .config
            .services
            .iter()
            .find(|s| s.name == service)
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
            inner.drained_by_api.insert(key);
        } else {
            inner.drained_by_api.remove(&key);
        }
        let word = if drained { "drained" } else { "undrained" };
        inner.event(service, Some(backend), format!("{word} through the API"));
        inner
            .sync(service)
            .map_err(|e| ControlError::Internal(chain(&e)))
    }

    fn reload(&self) -> Result<(), ControlError> {
        let new = match fulcrum_config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                let message = e.to_string();
                error!(error = %message, "reload refused; the running configuration stays");
                self.lock().reload_error = Some(message.clone());
                return Err(ControlError::Rejected(message));
            }
        };
        let mut inner = self.lock();
        let diff = fulcrum_config::diff(&inner.config, &new);
        if diff.interfaces_changed || diff.xdp_mode_changed || diff.api_changed {
            let message =
                "interfaces, xdp_mode and api take effect at restart only; reload refused"
                    .to_string();
            inner.reload_error = Some(message.clone());
            return Err(ControlError::Rejected(message));
        }
        if let Err(e) = self.checker.set_targets(targets(&new)) {
            let message = format!("health checks: {e}");
            inner.reload_error = Some(message.clone());
            return Err(ControlError::Rejected(message));
        }
        let old = std::mem::replace(&mut inner.config, new);
        inner.read_health(&self.checker);
        let result = inner.apply_diff(&old, &diff);
        inner.reload_error = result.as_ref().err().map(|e| chain(e));
        if result.is_ok() {
            inner.event("", None, format!("reloaded: {}", describe(&diff)));
            info!(change = %describe(&diff), "reloaded");
        }
        result.map_err(|e| ControlError::Internal(chain(&e)))
    }
}

impl Inner {
    /// Makes one service's destinations in the data plane match its configuration,
    /// health and drain state.
    fn sync(&mut self, name: &str) -> Result<(), fulcrum::BalancerError> {
        let Some(service) = self.config.services.iter().find(|s| s.name == name) else {
            return Ok(());
        };
        let span = info_span!("service", service = name);
        let _enter = span.enter();
        let id = service_id(service);
        let wanted: Vec<(Destination, bool)> = service
            .backends
            .iter()
            .filter(|b| {
                *self
                    .healthy
                    .get(&(name.to_string(), b.address))
                    .unwrap_or(&false)
            })
            .map(|b| {
                let drained =
                    b.drain || self.drained_by_api.contains(&(name.to_string(), b.address));
                (Destination::new(b.address).with_weight(b.weight), drained)
            })
            .collect();
        let dests: Vec<Destination> = wanted.iter().map(|(d, _)| *d).collect();
        self.lb.set_destinations(&id, &dests)?;
        for (dest, drained) in wanted {
            if self.lb.is_drained(&id, dest.address)? != drained {
                if drained {
                    self.lb.drain(&id, dest.address)?;
                } else {
                    self.lb.undrain(&id, dest.address)?;
                }
            }
        }
        Ok(())
    }

    /// Applies a reload's difference: removed services go, added ones come, changed ones
    /// are synced; services that did not change are not touched.
    fn apply_diff(
        &mut self,
        old: &Config,
        diff: &fulcrum_config::ConfigDiff,
    ) -> Result<(), fulcrum::BalancerError> {
        for name in &diff.removed {
            if let Some(service) = old.services.iter().find(|s| &s.name == name) {
                self.lb.remove_service(&service_id(service))?;
            }
            self.drained_by_api.retain(|(s, _)| s != name);
        }
        for name in &diff.added {
            if let Some(service) = self.config.services.iter().find(|s| &s.name == name) {
                self.lb.add_service(Service {
                    id: service_id(service),
                    scheduler: scheduler(service),
                })?;
            }
            self.sync(name)?;
        }
        for change in &diff.changed {
            if change.scheduler_changed
                && let Some(service) = self.config.services.iter().find(|s| s.name == change.name)
            {
                self.lb.update_service(Service {
                    id: service_id(service),
                    scheduler: scheduler(service),
                })?;
            }
            self.sync(&change.name)?;
        }
        Ok(())
    }

    /// Takes every backend's verdict from the checker (after a start or a reload).
    fn read_health(&mut self, checker: &Checker) {
        self.healthy = checker
            .snapshot()
            .into_iter()
            .filter_map(|b| match b.backend.address {
                IpAddr::V4(a) => Some(((b.backend.service, a), b.healthy)),
                IpAddr::V6(_) => None,
            })
            .collect();
    }

    fn event(&mut self, service: &str, backend: Option<Ipv4Addr>, message: String) {
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
            let Some(name) = self.name_of(&s.service.id) else {
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

    fn name_of(&self, id: &ServiceId) -> Option<String> {
        self.config
            .services
            .iter()
            .find(|s| service_id(s) == *id)
            .map(|s| s.name.clone())
    }

    fn traffic(&self, key: RateKey, counted: Traffic) -> TrafficStatus {
        let mut t = TrafficStatus::sample(counted, None, 0.0);
        if let Some((_, _, pps, bps)) = self.rates.get(&key) {
            t.packets_per_second = *pps;
            t.bits_per_second = *bps;
        }
        t
    }

    fn status(&self, checks: &[fulcrum_health::BackendSnapshot]) -> Status {
        let plane: BTreeMap<ServiceId, fulcrum::ServiceInfo> = self
            .lb
            .services()
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.service.id, s))
            .collect();
        let services = self
            .config
            .services
            .iter()
            .map(|service| {
                let info = plane.get(&service_id(service));
                let backends = service
                    .backends
                    .iter()
                    .map(|b| {
                        let in_plane = info.and_then(|i| {
                            i.destinations
                                .iter()
                                .find(|d| d.destination.address == b.address)
                        });
                        let snap = checks.iter().find(|c| {
                            c.backend.service == service.name
                                && c.backend.address == IpAddr::V4(b.address)
                        });
                        let health =
                            match (self.healthy.get(&(service.name.clone(), b.address)), snap) {
                                (Some(true), _) => Health::Up,
                                (Some(false), Some(s))
                                    if s.checks.iter().all(|c| {
                                        c.status == fulcrum_health::CheckStatus::Unknown
                                    }) =>
                                {
                                    Health::Unknown
                                }
                                (Some(false), _) => Health::Down,
                                (None, _) => Health::Unknown,
                            };
                        let checks: Vec<CheckStatus> = snap
                            .map(|s| {
                                s.checks
                                    .iter()
                                    .map(|c| CheckStatus {
                                        kind: c.name.clone(),
                                        up: c.status == fulcrum_health::CheckStatus::Up,
                                        latency_seconds: c.last_latency.map(|l| l.as_secs_f64()),
                                        last_error: c.last_error.clone(),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        BackendStatus {
                            address: b.address,
                            weight: b.weight,
                            drained: b.drain
                                || self
                                    .drained_by_api
                                    .contains(&(service.name.clone(), b.address)),
                            health,
                            last_error: if health == Health::Up {
                                None
                            } else {
                                checks.iter().find_map(|c| c.last_error.clone())
                            },
                            checks,
                            traffic: self.traffic(
                                (service.name.clone(), Some(b.address)),
                                in_plane.map(|d| d.traffic).unwrap_or_default(),
                            ),
                        }
                    })
                    .collect();
                ServiceStatus {
                    name: service.name.clone(),
                    vip: service.vip,
                    port: service.port,
                    protocol: service.protocol.to_string(),
                    traffic: self.traffic(
                        (service.name.clone(), None),
                        info.map(|i| i.traffic).unwrap_or_default(),
                    ),
                    backends,
                }
            })
            .collect();
        Status {
            services,
            counters: self
                .lb
                .stats()
                .map(|s| status::counters(&s))
                .unwrap_or_default(),
        }
    }
}

/// The health targets of a configuration.
fn targets(config: &Config) -> Vec<Target> {
    config
        .services
        .iter()
        .flat_map(|service| {
            service.backends.iter().map(move |b| Target {
                backend: BackendId {
                    service: service.name.clone(),
                    address: IpAddr::V4(b.address),
                },
                checks: service.health.iter().map(check_spec).collect(),
                rule: match service.health_rule {
                    HealthRule::All => Rule::All,
                    HealthRule::AtLeast(n) => Rule::AtLeast(n),
                },
            })
        })
        .collect()
}

fn check_spec(check: &fulcrum_config::HealthCheck) -> CheckSpec {
    let http = |h: &fulcrum_config::HttpCheck| HttpCheck {
        path: h.path.clone(),
        host: h.host.clone(),
        expect_status: h.expect_status,
        expect_body: h.expect_body.clone(),
    };
    let probe = match &check.kind {
        CheckKind::Tcp => Probe::Tcp,
        CheckKind::Http(h) => Probe::Http(http(h)),
        CheckKind::Https { request, insecure } => Probe::Https {
            http: http(request),
            insecure: *insecure,
        },
        CheckKind::Dns(d) => Probe::Dns(fulcrum_health::DnsCheck {
            query: d.query.clone(),
            query_type: fulcrum_health::QueryType(d.query_type.code()),
            expect_rcode: fulcrum_health::Rcode(d.expect_rcode.code()),
        }),
    };
    CheckSpec {
        probe,
        port: check.port,
        interval: check.interval,
        timeout: check.timeout,
        rise: check.rise,
        fall: check.fall,
    }
}

fn service_id(service: &fulcrum_config::Service) -> ServiceId {
    let protocol = match service.protocol {
        fulcrum_config::Protocol::Tcp => Protocol::Tcp,
        fulcrum_config::Protocol::Udp => Protocol::Udp,
    };
    ServiceId::new(service.vip, service.port, protocol)
}

fn scheduler(service: &fulcrum_config::Service) -> Scheduler {
    match service.scheduler {
        fulcrum_config::Scheduler::FiveTuple => Scheduler::FiveTuple,
        fulcrum_config::Scheduler::SourceIp => Scheduler::SourceIp,
    }
}

fn describe(diff: &fulcrum_config::ConfigDiff) -> String {
    if diff.is_empty() {
        return "no change".into();
    }
    let mut parts = Vec::new();
    if !diff.added.is_empty() {
        parts.push(format!("added {}", diff.added.join(", ")));
    }
    if !diff.removed.is_empty() {
        parts.push(format!("removed {}", diff.removed.join(", ")));
    }
    for c in &diff.changed {
        parts.push(format!(
            "{}: +{} -{} backends",
            c.name,
            c.backends_added.len(),
            c.backends_removed.len()
        ));
    }
    parts.join("; ")
}

/// An error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Runs the daemon until `shutdown` resolves: the API, the health loop, SIGHUP reloads.
pub async fn serve(
    config_path: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let (daemon, mut health) = Daemon::start(&config_path)?;
    let token = daemon.token()?;
    if token.is_none() {
        warn!("no api.token_file: drain, undrain and reload through the API are refused");
    }
    let listen = daemon.listen();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: listen,
            source,
        })?;
    info!(%listen, "API listening");
    let app = crate::api::router(daemon.clone(), token);
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "API server stopped");
        }
    });
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(event) = health.recv() => {
                let d = daemon.clone();
                tokio::task::spawn_blocking(move || d.on_health(event)).await.ok();
            }
            Some(_) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                let d = daemon.clone();
                let _ = tokio::task::spawn_blocking(move || d.reload()).await;
            }
            _ = tick.tick() => {
                let d = daemon.clone();
                tokio::task::spawn_blocking(move || d.tick()).await.ok();
            }
        }
    }
    server.abort();
    let _ = server.await;
    info!("shutting down; detaching");
    drop(daemon);
    Ok(())
}
