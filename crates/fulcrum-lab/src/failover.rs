//! The failover scenario of an ECMP lab, shared by the failover test and the fleet bench:
//! long-lived keep-alive connections over two BGP-announcing balancers, a backend added
//! (so consistent hashing alone would move some flows), one balancer killed or stopped,
//! and later restarted; every step counts the connections that broke.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{
    ecmp::{EcmpLab, VIP, VIP_PREFIX, balancer_addr},
    fleet::{BgpTimers, Fleet, FleetConfig, SharingTimers, api, metric, wait_for},
    traffic::{HttpConnection, Server},
};

/// BGP hold time of the router and the balancers.
pub const HOLD_SECS: u16 = 3;
/// Graceful restart time the balancers advertise.
pub const RESTART_SECS: u16 = 4;
/// How long a stopping balancer forwards after its withdrawal.
pub const SHUTDOWN_DELAY_MS: u64 = 1000;
/// How long a starting balancer waits at most for its peers' flows.
pub const SYNC_TIMEOUT_SECS: u16 = 8;
/// The balancer that dies (balancer 1 survives).
pub const VICTIM: u8 = 2;
/// The balancer that carries on.
pub const SURVIVOR: u8 = 1;

/// How the victim goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Death {
    /// SIGKILL and the machine gone: off the network, its pinned data plane lost.
    Crash,
    /// SIGTERM: withdraw, Cease, `shutdown_delay` still forwarding, then detach.
    Stop,
}

/// What happened to the connections.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Connections opened.
    pub connections: usize,
    /// Flows the victim had carried (its new-flow count before it died).
    pub victim_flows: u64,
    /// Connections that broke (error, reset, or another backend) through the failover.
    pub broken_at_failover: Vec<String>,
    /// From the victim's death until the router's kernel route had only the survivor.
    pub withdrawn_after: Duration,
    /// From the victim's death until every surviving connection had answered again.
    pub carried_after: Duration,
    /// After the restart: connections that broke once the router sent the restarted
    /// balancer its share again (`None`: no restart in this run).
    pub broken_at_restart: Option<Vec<String>>,
    /// After the restart: whether the router ever had the restarted balancer's path while
    /// its flow sharing said it had not synced yet.
    pub announced_before_synced: bool,
}

/// Keep-alive connections from the lab's client, each with the backend it first got.
pub struct Connections {
    list: Vec<Tracked>,
}

struct Tracked {
    conn: Option<HttpConnection>,
    backend: String,
    port: u16,
}

impl Connections {
    /// Opens `n` connections to the VIP's port 80 and asks once on each.
    pub fn open(lab: &EcmpLab, n: usize) -> anyhow::Result<Self> {
        let mut list = Vec::with_capacity(n);
        for i in 0..n {
            let mut conn = HttpConnection::open(&lab.client.ns, SocketAddr::from((VIP, 80)))
                .with_context(|| format!("opening connection {i}"))?;
            let backend = conn.get().with_context(|| format!("request {i}"))?.server;
            let port = conn.local_port();
            list.push(Tracked {
                conn: Some(conn),
                backend,
                port,
            });
        }
        Ok(Self { list })
    }

    /// Asks once more on every connection still working; those that fail or answer from
    /// another backend are broken (and closed). Returns what broke now.
    pub fn check(&mut self) -> Vec<String> {
        let mut broken = Vec::new();
        for t in &mut self.list {
            let Some(conn) = &mut t.conn else { continue };
            let why = match conn.get() {
                Ok(a) if a.server == t.backend => continue,
                Ok(a) => format!("now answered by {}", a.server),
                Err(e) => format!("{e:#}"),
            };
            broken.push(format!("client port {} on {}: {why}", t.port, t.backend));
            t.conn = None;
        }
        broken
    }

    /// How many connections each backend holds.
    pub fn per_backend(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for t in &self.list {
            *m.entry(t.backend.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Connections opened.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether none were opened.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// One run of the scenario with its lab, servers and daemons.
pub struct Failover {
    /// The daemons (dropped before the lab).
    pub fleet: Fleet,
    _servers: Vec<Server>,
    /// The lab.
    pub lab: EcmpLab,
    sharing: bool,
}

impl Failover {
    /// Builds the lab (two balancers, three backend hosts with HTTP servers), starts both
    /// balancers with backends 1 and 2, BGP (hold 3 s) and, with `sharing`, flow sharing;
    /// waits until the router has both paths.
    pub fn start(tag: &str, fulcrum: &Path, sharing: bool) -> anyhow::Result<Self> {
        let lab = EcmpLab::new(tag, 2, 3, Some(HOLD_SECS))?;
        let servers = lab.http_servers()?;
        let config = FleetConfig {
            balancers: 2,
            backends: vec![1, 2],
            udp: false,
            bgp: Some(BgpTimers {
                hold_time: format!("{HOLD_SECS}s"),
                graceful_restart: format!("{RESTART_SECS}s"),
                shutdown_delay: format!("{SHUTDOWN_DELAY_MS}ms"),
            }),
            flow_sharing: sharing.then(|| SharingTimers {
                refresh_interval: "5s".into(),
                sync_timeout: format!("{SYNC_TIMEOUT_SECS}s"),
            }),
        };
        let mut fleet = Fleet::new(&lab, fulcrum, config)?;
        for n in 1..=2 {
            fleet.start(&lab, n)?;
        }
        let run = Self {
            fleet,
            _servers: servers,
            lab,
            sharing,
        };
        for n in 1..=2 {
            run.wait_healthy(n, 2)?;
        }
        run.wait_paths(&[1, 2], Duration::from_secs(30))?;
        Ok(run)
    }

    /// Waits until balancer `n` counts `count` healthy backends of `web`.
    pub fn wait_healthy(&self, n: u8, count: usize) -> anyhow::Result<()> {
        wait_for(
            &format!("{count} healthy backends on balancer {n}"),
            Duration::from_secs(30),
            || {
                api(&self.lab.balancer(n).ns, "GET", "/api/v1/services")
                    .is_some_and(|(_, b)| b.matches("\"health\":\"up\"").count() == count)
            },
        )
        .with_context(|| self.fleet.log(n))
    }

    /// Waits until the router's kernel route to the VIP goes via exactly these balancers.
    pub fn wait_paths(&self, balancers: &[u8], limit: Duration) -> anyhow::Result<()> {
        let want: Vec<_> = balancers.iter().map(|&n| balancer_addr(n)).collect();
        wait_for(&format!("the router's paths via {want:?}"), limit, || {
            self.lab.kernel_next_hops().is_ok_and(|h| h == want)
        })
        .with_context(|| {
            format!(
                "BIRD: {}\n{}",
                self.lab.bird.route(VIP_PREFIX),
                self.lab.bird.log()
            )
        })
    }

    /// Balancer `n`'s count of new `web` flows.
    pub fn new_flows(&self, n: u8) -> u64 {
        metric(
            &self.lab.balancer(n).ns,
            "fulcrum_service_new_flows_total{service=\"web\"}",
        )
        .unwrap_or(0.0) as u64
    }

    /// Opens `count` connections, checks that both balancers carry some, adds backend 3 on
    /// both (SIGHUP) and checks that every connection stayed where it was.
    pub fn connect_and_grow(&mut self, count: usize) -> anyhow::Result<(Connections, u64)> {
        let mut conns = Connections::open(&self.lab, count)?;
        let mut flows = (0, 0);
        wait_for("every flow counted", Duration::from_secs(10), || {
            flows = (self.new_flows(1), self.new_flows(2));
            flows.0 + flows.1 == count as u64
        })
        .with_context(|| format!("new flows per balancer: {flows:?}"))?;
        ensure!(
            flows.0 > 0 && flows.1 > 0,
            "both balancers carry flows: {flows:?}"
        );
        if self.sharing {
            // Each balancer has heard of the other's flows.
            for (n, other) in [(1, flows.1), (2, flows.0)] {
                wait_for(
                    &format!("balancer {n} receiving its peer's {other} flows"),
                    Duration::from_secs(10),
                    || self.sharing_status(n).is_some_and(|s| s.received >= other),
                )?;
            }
        }
        self.fleet.config.backends.push(3);
        self.fleet.write()?;
        for n in 1..=2 {
            self.fleet.signal(n, libc::SIGHUP);
        }
        for n in 1..=2 {
            self.wait_healthy(n, 3)?;
        }
        let broken = conns.check();
        ensure!(
            broken.is_empty(),
            "connections broke when backend 3 was added: {broken:?}"
        );
        let victim_flows = if VICTIM == 2 { flows.1 } else { flows.0 };
        Ok((conns, victim_flows))
    }

    /// Balancer `n`'s flow-sharing status, `None` while it does not answer.
    pub fn sharing_status(&self, n: u8) -> Option<SharingStatus> {
        let (code, body) = api(&self.lab.balancer(n).ns, "GET", "/api/v1/flow-sharing")?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(SharingStatus {
            synced: v.get("synced")?.as_bool()?,
            received: v.get("received_records")?.as_u64()?,
        })
    }

    /// The victim dies as `death` says; then waits until the router routes the VIP only
    /// via the survivor and every connection has answered. Returns the two times.
    pub fn kill_victim(
        &mut self,
        death: Death,
        conns: &mut Connections,
        broken: &mut Vec<String>,
    ) -> anyhow::Result<(Duration, Duration)> {
        let t0 = Instant::now();
        match death {
            Death::Crash => {
                self.lab.cut(VICTIM)?;
                self.fleet.stop(VICTIM, libc::SIGKILL)?;
                // A dead machine's data plane goes with it.
                self.fleet.forget_pins(VICTIM)?;
            }
            Death::Stop => self.fleet.signal(VICTIM, libc::SIGTERM),
        }
        let limit = Duration::from_secs(u64::from(HOLD_SECS) * 3 + 5);
        self.wait_paths(&[SURVIVOR], limit)?;
        let withdrawn = t0.elapsed();
        broken.extend(conns.check());
        let carried = t0.elapsed();
        if death == Death::Stop {
            // It exits once its `shutdown_delay` has passed.
            let code = self.fleet.stop(VICTIM, 0)?;
            ensure!(code == Some(0), "SIGTERM exits with 0, not {code:?}");
        }
        Ok((withdrawn, carried))
    }

    /// Restarts the victim with a fresh data plane and watches the router: the victim's
    /// path may come back only once its flow sharing has synced. Its peer cannot send it
    /// anything until its BGP session has been up for a second (the sync asks again a fifth
    /// of `sync_timeout` later), so a balancer that announced without waiting for the
    /// sync would be seen doing it. Returns whether it was.
    pub fn restart_victim(&mut self, death: Death) -> anyhow::Result<bool> {
        if death == Death::Crash {
            ensure!(
                !self.lab.has_xdp(VICTIM)?,
                "the crashed balancer's data plane is gone"
            );
            self.lab.reconnect(VICTIM)?;
        }
        // The survivor cannot send to the victim: neither its answers nor its refreshes.
        let ns = &self.lab.balancer(SURVIVOR).ns;
        let peer = format!("{}/32", balancer_addr(VICTIM));
        // How long the peer stays out of reach once the session is up.
        const HELD: Duration = Duration::from_secs(1);
        ns.ip(&["route", "add", "prohibit", &peer])?;
        self.fleet.start(&self.lab, VICTIM)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut early, mut blocked, mut up_since) = (false, true, None);
        loop {
            // The router first, then the status: synced never goes back to false, so a
            // path seen before an unsynced status was announced before the sync ended.
            let hops = self.lab.router_paths()?;
            let back = hops.contains(&balancer_addr(VICTIM));
            let synced = self.sharing_status(VICTIM).is_some_and(|s| s.synced);
            if back && self.sharing && !synced {
                early = true;
            }
            if blocked {
                if !self.lab.session_up(VICTIM) {
                    up_since = None;
                } else if back || up_since.get_or_insert_with(Instant::now).elapsed() > HELD {
                    ns.ip(&["route", "del", "prohibit", &peer])?;
                    blocked = false;
                }
            } else if back && self.lab.kernel_next_hops()?.len() == 2 {
                return Ok(early);
            }
            if Instant::now() > deadline {
                bail!(
                    "the restarted balancer's path did not come back: {hops:?}\n{}",
                    self.fleet.log(VICTIM)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What the scenario reads of a balancer's flow sharing.
#[derive(Clone, Copy, Debug)]
pub struct SharingStatus {
    /// The start-up sync ended.
    pub synced: bool,
    /// Records accepted from peers.
    pub received: u64,
}

/// The whole scenario: `count` connections, backend 3 added, the victim dies by `death`;
/// with `restart`, it comes back and takes its share again.
pub fn run(
    tag: &str,
    fulcrum: &Path,
    sharing: bool,
    death: Death,
    count: usize,
    restart: bool,
) -> anyhow::Result<Outcome> {
    let mut run = Failover::start(tag, fulcrum, sharing)?;
    let (mut conns, victim_flows) = run.connect_and_grow(count)?;
    let mut outcome = Outcome {
        connections: conns.len(),
        victim_flows,
        ..Outcome::default()
    };
    let (withdrawn, carried) =
        run.kill_victim(death, &mut conns, &mut outcome.broken_at_failover)?;
    outcome.withdrawn_after = withdrawn;
    outcome.carried_after = carried;
    if restart {
        outcome.announced_before_synced = run.restart_victim(death)?;
        let broken = conns.check();
        // The restarted balancer carried its share: its tx counter moved.
        wait_for(
            "the restarted balancer forwarding",
            Duration::from_secs(5),
            || {
                metric(
                    &run.lab.balancer(VICTIM).ns,
                    "fulcrum_packets_total{action=\"tx\"}",
                )
                .unwrap_or(0.0)
                    > 0.0
            },
        )?;
        outcome.broken_at_restart = Some(broken);
    }
    Ok(outcome)
}
