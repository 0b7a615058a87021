//! Route health injection: a task that turns each published [`Snapshot`] into the routes
//! the [`Speaker`] announces (a /32 or /128 per VIP while one of its services has `min_healthy`
//! usable backends), applies `bgp:` changes from reloads, and publishes the peers' status
//! for the API on its own watch, never through the owner.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use fulcrum_bgp::{GrConfig, PeerConfig, PeerStatus, Prefix, Route, Speaker, SpeakerConfig};
use fulcrum_config::{Announce, Bgp, Config};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tracing::{Instrument, error, info, info_span};

use crate::{
    api::Snapshot,
    daemon::Shutdown,
    status::{Health, ServiceStatus},
};

/// Time between connection attempts to a peer.
const CONNECT_RETRY: Duration = Duration::from_secs(3);

/// What `GET /api/v1/bgp` returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BgpStatus {
    /// A `bgp:` section is configured.
    pub enabled: bool,
    pub asn: Option<u32>,
    pub router_id: Option<Ipv4Addr>,
    /// False while announcing is held back (flow sharing's start-up sync).
    pub announce_gate: bool,
    /// Prefixes that qualify for announcement now.
    pub desired: Vec<String>,
    pub peers: Vec<BgpPeerStatus>,
}

/// One peer in [`BgpStatus`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BgpPeerStatus {
    pub address: IpAddr,
    pub asn: u32,
    /// RFC 4271 state name: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    pub state: String,
    /// Seconds since the session reached Established; absent unless it is.
    pub uptime_seconds: Option<u64>,
    pub last_error: Option<String>,
    /// Prefixes this peer has from us.
    pub announced: Vec<String>,
    /// Families negotiated: `ipv4-unicast`, `ipv6-unicast`; empty unless Established.
    pub families: Vec<String>,
    /// Desired prefixes this peer does not get, and why (it did not offer the family, or
    /// the session has no next hop of that family).
    pub not_announced: Vec<NotAnnounced>,
}

/// One prefix in [`BgpPeerStatus::not_announced`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NotAnnounced {
    pub prefix: String,
    pub reason: String,
}

/// The BGP task's published view; peers' uptime is computed when read.
#[derive(Clone, Debug, Default)]
pub struct BgpView {
    enabled: bool,
    asn: Option<u32>,
    router_id: Option<Ipv4Addr>,
    gate: bool,
    desired: Vec<Prefix>,
    peers: Vec<PeerStatus>,
}

impl BgpView {
    /// The view as the API shows it, at `now`.
    pub fn status(&self, now: Instant) -> BgpStatus {
        BgpStatus {
            enabled: self.enabled,
            asn: self.asn,
            router_id: self.router_id,
            announce_gate: self.gate,
            desired: self.desired.iter().map(ToString::to_string).collect(),
            peers: (self.peers.iter())
                .map(|p| BgpPeerStatus {
                    address: p.address,
                    asn: p.asn,
                    state: p.state.name().to_owned(),
                    uptime_seconds: p
                        .established_since
                        .map(|t| now.saturating_duration_since(t).as_secs()),
                    last_error: p.last_error.clone(),
                    announced: p.announced.iter().map(ToString::to_string).collect(),
                    families: p.families.iter().map(|f| (*f).to_owned()).collect(),
                    not_announced: (p.not_announced.iter())
                        .map(|(prefix, reason)| NotAnnounced {
                            prefix: prefix.to_string(),
                            reason: reason.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// How the daemon stops the BGP task; it answers once routes are withdrawn (and
/// `shutdown_delay` has passed) or the sessions are handed over.
pub(crate) type StopRequest = (Shutdown, oneshot::Sender<()>);

/// The desired routes: one host route (/32 or /128) per VIP with a qualifying service, with the
/// attributes of the first qualifying service in file order.
pub(crate) fn routes(config: &Config, services: &[ServiceStatus]) -> Vec<Route> {
    let mut by_vip: BTreeMap<IpAddr, Route> = BTreeMap::new();
    for service in &config.services {
        let a = &service.announce;
        if a.mode == Announce::Never {
            continue;
        }
        let Some(status) = services.iter().find(|s| s.name == service.name) else {
            continue;
        };
        let usable = (status.backends.iter())
            .filter(|b| {
                b.health == Health::Up && !b.drained && !b.leaving && b.data_plane_error.is_none()
            })
            .count();
        if usable < a.min_healthy as usize {
            continue;
        }
        let vip = service.vip;
        by_vip.entry(vip).or_insert_with(|| Route {
            med: a.med,
            local_pref: a.local_pref,
            communities: a.communities.clone(),
            large_communities: a.large_communities.clone(),
            ..Route::host(vip)
        });
    }
    by_vip.into_values().collect()
}

/// The speaker's configuration from the file's; `restarted` sets the Restart State and
/// Forwarding State bits (the daemon adopted a pinned, forwarding data plane).
pub(crate) fn speaker_config(bgp: &Bgp, restarted: bool) -> Result<SpeakerConfig, String> {
    let mut peers = Vec::new();
    for p in &bgp.peers {
        let md5_key = match &p.md5_password_file {
            None => None,
            Some(path) => {
                let text = std::fs::read(path).map_err(|e| {
                    format!(
                        "bgp peer {}: md5_password_file {}: {e}",
                        p.address,
                        path.display()
                    )
                })?;
                let key = text.strip_suffix(b"\n").unwrap_or(&text).to_vec();
                if key.is_empty() || key.len() > 80 {
                    return Err(format!(
                        "bgp peer {}: md5_password_file {} must hold 1 to 80 bytes",
                        p.address,
                        path.display()
                    ));
                }
                Some(key)
            }
        };
        peers.push(PeerConfig {
            address: p.address,
            port: p.port,
            asn: p.asn,
            hold_time: p.hold_time.as_secs().min(65535) as u16,
            passive: p.passive,
            md5_key,
            next_hop: p.next_hop,
            next_hop_ipv6: bgp.next_hop_ipv6,
        });
    }
    Ok(SpeakerConfig {
        asn: bgp.asn,
        router_id: bgp.router_id,
        graceful_restart: bgp.graceful_restart.map(|t| GrConfig {
            restart_time: t.as_secs().min(4095) as u16,
            restart_state: restarted,
            forwarding_state: restarted,
        }),
        listen: bgp.listen,
        connect_retry: CONNECT_RETRY,
        peers,
    })
}

/// Starts the BGP task. It runs until a [`StopRequest`] arrives.
pub(crate) fn spawn(
    snapshots: watch::Receiver<Arc<Snapshot>>,
    gate: watch::Receiver<bool>,
    restarted: bool,
    view: watch::Sender<BgpView>,
    stop: oneshot::Receiver<StopRequest>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(snapshots, gate, restarted, view, stop).instrument(info_span!("bgp")))
}

async fn run(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut gate: watch::Receiver<bool>,
    restarted: bool,
    view: watch::Sender<BgpView>,
    mut stop: oneshot::Receiver<StopRequest>,
) {
    let mut speaker: Option<Speaker> = None;
    let mut running: Option<Bgp> = None;
    let mut peers: Option<watch::Receiver<Vec<PeerStatus>>> = None;
    let mut gate_open = true;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if let Some(config) = &snapshot.config {
            if config.bgp != running {
                apply(&mut speaker, config.bgp.as_ref(), restarted).await;
                running = config.bgp.clone();
                peers = speaker.as_ref().map(Speaker::status);
            }
            let open = *gate.borrow_and_update();
            let desired = match open {
                true => routes(config, &snapshot.status.services),
                false => Vec::new(),
            };
            view.send_modify(|v| {
                v.enabled = running.is_some();
                v.asn = running.as_ref().map(|b| b.asn);
                v.router_id = running.as_ref().map(|b| b.router_id);
                v.gate = open;
                v.desired = desired.iter().map(|r| r.prefix).collect();
                v.peers = (peers.as_mut())
                    .map(|p| p.borrow_and_update().clone())
                    .unwrap_or_default();
            });
            if let Some(s) = &mut speaker {
                s.set_routes(desired);
            }
        }
        tokio::select! {
            request = &mut stop => {
                let Ok((how, done)) = request else { return };
                finish(speaker, how, running.as_ref()).await;
                let _ = done.send(());
                return;
            }
            changed = snapshots.changed() => if changed.is_err() { return },
            changed = gate.changed(), if gate_open => gate_open = changed.is_ok(),
            changed = changed(&mut peers) => if changed.is_err() { peers = None },
        }
    }
}

async fn changed(peers: &mut Option<watch::Receiver<Vec<PeerStatus>>>) -> Result<(), ()> {
    match peers {
        Some(p) => p.changed().await.map_err(|_| ()),
        None => std::future::pending().await,
    }
}

/// Starts, reconfigures or stops the speaker for a new `bgp:` section.
async fn apply(speaker: &mut Option<Speaker>, bgp: Option<&Bgp>, restarted: bool) {
    let config = match bgp.map(|b| speaker_config(b, restarted)) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            error!(error = %e, "BGP not (re)configured");
            return;
        }
    };
    match (speaker.as_mut(), config) {
        (Some(s), Some(c)) => {
            if let Err(e) = s.reconfigure(c).await {
                error!(error = %crate::daemon::chain(&e), "BGP reconfiguration");
            }
            info!("BGP reconfigured");
        }
        (None, Some(c)) => match Speaker::start(c) {
            Ok(s) => {
                info!("BGP speaker started");
                *speaker = Some(s);
            }
            Err(e) => error!(error = %crate::daemon::chain(&e), "BGP speaker not started"),
        },
        (Some(_), None) => {
            if let Some(s) = speaker.take() {
                s.shutdown().await;
                info!("BGP removed from the configuration: routes withdrawn, sessions closed");
            }
        }
        (None, None) => {}
    }
}

async fn finish(speaker: Option<Speaker>, how: Shutdown, bgp: Option<&Bgp>) {
    let Some(speaker) = speaker else { return };
    match how {
        Shutdown::Stop => {
            speaker.shutdown().await;
            let delay = bgp.map_or(Duration::ZERO, |b| b.shutdown_delay);
            info!(delay = ?delay, "routes withdrawn; still forwarding for shutdown_delay");
            tokio::time::sleep(delay).await;
        }
        Shutdown::Handover => {
            speaker.handover().await;
            info!(
                "BGP sessions closed without NOTIFICATION; routers keep the routes (graceful restart)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{BackendStatus, TrafficStatus};

    fn backend(last: u8, health: Health, drained: bool) -> BackendStatus {
        BackendStatus {
            address: [10, 0, 1, last].into(),
            weight: 1,
            drained,
            health,
            last_error: None,
            checks: Vec::new(),
            traffic: TrafficStatus::default(),
            data_plane_error: None,
            leaving: false,
        }
    }

    fn service(name: &str, vip: [u8; 4], backends: Vec<BackendStatus>) -> ServiceStatus {
        ServiceStatus {
            name: name.to_owned(),
            vip: vip.into(),
            port: 80,
            protocol: "tcp".to_owned(),
            forwarding: "l2-dsr".to_owned(),
            icmp_echo: true,
            traffic: TrafficStatus::default(),
            backends,
        }
    }

    const CONFIG: &str = "\
interfaces: [eth0]
services:
  - name: web
    vip: 10.0.100.1
    port: 80
    min_healthy: 2
    med: 10
    backends: [{address: 10.0.1.1}, {address: 10.0.1.2}]
  - name: web-tls
    vip: 10.0.100.1
    port: 443
    backends: [{address: 10.0.1.1}]
  - name: internal
    vip: 10.0.100.2
    port: 80
    announce: never
    backends: [{address: 10.0.1.1}]
";

    fn vips(routes: &[Route]) -> Vec<String> {
        routes.iter().map(|r| r.prefix.to_string()).collect()
    }

    #[test]
    fn a_vip_is_announced_while_any_of_its_services_has_min_healthy_usable_backends() {
        let config = fulcrum_config::parse(CONFIG, "t.yaml").expect("config");
        let up = |n| backend(n, Health::Up, false);
        let all_up = [
            service("web", [10, 0, 100, 1], vec![up(1), up(2)]),
            service("web-tls", [10, 0, 100, 1], vec![up(1)]),
            service("internal", [10, 0, 100, 2], vec![up(1)]),
        ];
        let r = routes(&config, &all_up);
        assert_eq!(vips(&r), ["10.0.100.1/32"], "`never` is not announced");
        assert_eq!(
            r[0].med,
            Some(10),
            "attributes of the first qualifying service"
        );

        // web has one usable backend (one drained, min_healthy 2); web-tls keeps the VIP.
        let degraded = [
            service(
                "web",
                [10, 0, 100, 1],
                vec![up(1), backend(2, Health::Up, true)],
            ),
            service("web-tls", [10, 0, 100, 1], vec![up(1)]),
        ];
        let r = routes(&config, &degraded);
        assert_eq!(vips(&r), ["10.0.100.1/32"]);
        assert_eq!(r[0].med, None, "now web-tls's attributes");

        let down = [
            service(
                "web",
                [10, 0, 100, 1],
                vec![up(1), backend(2, Health::Down, false)],
            ),
            service(
                "web-tls",
                [10, 0, 100, 1],
                vec![backend(1, Health::Unknown, false)],
            ),
        ];
        assert!(routes(&config, &down).is_empty());
    }

    #[test]
    fn an_ipv6_vip_is_a_host_route_of_128_beside_the_ipv4_ones() {
        let text = format!(
            "{CONFIG}  - name: web6\n    vip: 2001:db8:100::1\n    port: 80\n    \
             backends: [{{address: 2001:db8:200::10}}]\n"
        );
        let config = fulcrum_config::parse(&text, "t.yaml").expect("config");
        let up = |n| backend(n, Health::Up, false);
        let v6_up = BackendStatus {
            address: "2001:db8:200::10".parse().expect("address"),
            ..up(1)
        };
        let mut web6 = service("web6", [0, 0, 0, 0], vec![v6_up.clone()]);
        web6.vip = "2001:db8:100::1".parse().expect("address");
        let statuses = [
            service("web", [10, 0, 100, 1], vec![up(1), up(2)]),
            web6.clone(),
        ];
        assert_eq!(
            vips(&routes(&config, &statuses)),
            ["10.0.100.1/32", "2001:db8:100::1/128"]
        );
        web6.backends = vec![BackendStatus {
            health: Health::Down,
            ..v6_up
        }];
        let statuses = [service("web", [10, 0, 100, 1], vec![up(1), up(2)]), web6];
        assert_eq!(vips(&routes(&config, &statuses)), ["10.0.100.1/32"]);
    }
}
