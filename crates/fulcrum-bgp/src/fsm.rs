//! One peer's session (RFC 4271 section 8), as a pure state machine: [`Session::handle`]
//! takes an [`Event`] and returns the [`Action`]s to carry out, so every behaviour is tested
//! by feeding events, without sockets or clocks.
//!
//! This speaker only announces: routes the peer sends are checked for errors and dropped.
//! Connection collisions are avoided rather than resolved: a connection (ours or the
//! peer's) is taken only while no other one has reached OpenSent, and a later one is
//! closed; the peer's collision handling (by BGP identifier) then keeps the one we kept.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use crate::{
    events::{Action, Event, Route, Timer},
    packet::{
        AFI_IPV4, AFI_IPV6, Capability, GrFamily, GracefulRestart, Message, Notification, Open,
        PathAttributes, Prefix, SAFI_UNICAST, Update, error,
    },
};

/// What one session needs to know about both ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our ASN.
    pub local_asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The ASN the peer must open with.
    pub peer_asn: u32,
    /// Hold time we offer, seconds: 0 or 3..=65535.
    pub hold_time: u16,
    /// Graceful restart as we advertise it; `None` leaves the capability out.
    pub graceful_restart: Option<GrConfig>,
    /// NEXT_HOP of our IPv4 routes; the connection's local address when `None` and it
    /// is IPv4.
    pub next_hop: Option<IpAddr>,
    /// Next hop of our IPv6 routes (MP_REACH_NLRI); the connection's local address when
    /// `None` and it is IPv6.
    pub next_hop_ipv6: Option<Ipv6Addr>,
    /// Only accept connections; never connect.
    pub passive: bool,
    /// Time between connection attempts.
    pub connect_retry: Duration,
}

/// Our graceful restart capability (RFC 4724).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrConfig {
    /// Restart time in seconds, 1..=4095.
    pub restart_time: u16,
    /// R bit: this daemon has just restarted (it took over from the previous one).
    pub restart_state: bool,
    /// F bit for IPv4 and IPv6 unicast: the data plane kept forwarding through the restart.
    pub forwarding_state: bool,
}

/// Session states of RFC 4271 8.2.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started, or stopped.
    Idle,
    /// Connecting to the peer.
    Connect,
    /// Waiting for the peer to connect (or for the next attempt).
    Active,
    /// Our OPEN is sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for the first KEEPALIVE.
    OpenConfirm,
    /// Up: routes are exchanged.
    Established,
}

impl State {
    /// The state's name as RFC 4271 writes it.
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

/// Hold time offered while waiting for the peer's OPEN (RFC 4271 suggests 4 minutes).
const LARGE_HOLD: Duration = Duration::from_secs(240);

/// One peer's session.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    /// Routes we want announced, by prefix.
    desired: BTreeMap<Prefix, Route>,
    /// Routes the peer has from us in this session.
    announced: BTreeMap<Prefix, Route>,
    local: Option<IpAddr>,
    link_local: Option<Ipv6Addr>,
    last_error: Option<String>,
    peer_open: Option<Open>,
}

impl Session {
    /// A session in Idle, waiting for [`Event::Start`].
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            state: State::Idle,
            desired: BTreeMap::new(),
            announced: BTreeMap::new(),
            local: None,
            link_local: None,
            last_error: None,
            peer_open: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Why the session last went down, when it did.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The prefixes the peer has from us.
    pub fn announced(&self) -> Vec<Prefix> {
        self.announced.keys().copied().collect()
    }

    /// The peer's OPEN of the current session.
    pub fn peer_open(&self) -> Option<&Open> {
        self.peer_open.as_ref()
    }

    /// Whether a new connection may be taken now; later ones are closed (see the module
    /// documentation on collisions).
    pub fn accepts_connection(&self) -> bool {
        matches!(self.state, State::Connect | State::Active)
    }

    /// Applies `event`; the actions are to be carried out in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => {
                if self.state == State::Idle {
                    self.retry(&mut out);
                    if !self.config.passive {
                        out.push(Action::Connect);
                    }
                }
            }
            Event::Stop(cease) => self.stop(cease, &mut out),
            Event::TcpUp { local, link_local } => self.tcp_up(local, link_local, &mut out),
            Event::TcpDown => {
                if self.state != State::Idle {
                    self.down("connection closed by the peer".to_owned(), &mut out);
                }
            }
            Event::Received(message) => self.received(message, &mut out),
            Event::Malformed(notification) => {
                if self.state != State::Idle {
                    self.last_error = Some(format!("sent {notification}"));
                    out.push(Action::Send(Message::Notification(notification)));
                    self.close(&mut out);
                }
            }
            Event::TimerFired(timer) => self.timer(timer, &mut out),
            Event::Routes(routes) => {
                self.desired = routes.into_iter().map(|r| (r.prefix, r)).collect();
                if self.state == State::Established {
                    self.sync_routes(false, &mut out);
                }
            }
        }
        out
    }

    fn tcp_up(&mut self, local: IpAddr, link_local: Option<Ipv6Addr>, out: &mut Vec<Action>) {
        if !self.accepts_connection() {
            out.push(Action::Close);
            return;
        }
        self.local = Some(local);
        self.link_local = link_local;
        out.push(Action::StopTimer(Timer::ConnectRetry));
        out.push(Action::Send(Message::Open(self.open())));
        out.push(Action::StartTimer(Timer::Hold, LARGE_HOLD));
        self.state = State::OpenSent;
    }

    fn received(&mut self, message: Message, out: &mut Vec<Action>) {
        match (self.state, message) {
            (State::Idle | State::Connect | State::Active, _) => {}
            (_, Message::Notification(n)) => {
                self.last_error = Some(format!("received {n}"));
                out.push(Action::Close);
                self.down_without_error(out);
            }
            (State::OpenSent, Message::Open(open)) => self.peer_opened(open, out),
            (State::OpenConfirm, Message::Keepalive) => {
                self.state = State::Established;
                self.last_error = None;
                // The R bit is for the first session after a restart only.
                if let Some(gr) = &mut self.config.graceful_restart {
                    gr.restart_state = false;
                }
                self.restart_hold(out);
                self.sync_routes(true, out);
            }
            (State::Established, Message::Keepalive | Message::Update(_)) => self.restart_hold(out),
            (State::Established, Message::RouteRefresh { afi, safi }) => {
                self.restart_hold(out);
                if safi == SAFI_UNICAST && self.negotiated(afi) {
                    self.announced.retain(|p, _| afi_of(p) != afi);
                    self.sync_routes(false, out);
                }
            }
            (state, message) => {
                let subcode = match state {
                    State::OpenSent => 1,
                    State::OpenConfirm => 2,
                    _ => 3,
                };
                let n = Notification::with_data(error::FSM, subcode, [kind_of(&message)]);
                self.fail(n, out);
            }
        }
    }

    fn peer_opened(&mut self, open: Open, out: &mut Vec<Action>) {
        if open.asn() != self.config.peer_asn {
            let data = open.my_as.to_be_bytes();
            let n = Notification::with_data(error::OPEN, 2, data);
            self.last_error = Some(format!(
                "the peer opened with AS {}, configured {}",
                open.asn(),
                self.config.peer_asn
            ));
            out.push(Action::Send(Message::Notification(n)));
            self.close(out);
            return;
        }
        if !open.has(|c| matches!(c, Capability::FourOctetAs(_))) {
            // Our AS_PATHs are 4-octet only; every router in use today supports them.
            let n = Notification::with_data(error::OPEN, 7, [65, 4, 0, 0, 0, 0]);
            self.fail(n, out);
            return;
        }
        let hold = self.config.hold_time.min(open.hold_time);
        self.peer_open = Some(open);
        out.push(Action::Send(Message::Keepalive));
        if hold == 0 {
            out.push(Action::StopTimer(Timer::Hold));
        } else {
            out.push(Action::StartTimer(
                Timer::Hold,
                Duration::from_secs(hold.into()),
            ));
            out.push(Action::StartTimer(
                Timer::Keepalive,
                Duration::from_secs((hold / 3).max(1).into()),
            ));
        }
        self.state = State::OpenConfirm;
    }

    fn timer(&mut self, timer: Timer, out: &mut Vec<Action>) {
        match (timer, self.state) {
            (Timer::ConnectRetry, State::Connect | State::Active) => {
                self.retry(out);
                if !self.config.passive {
                    out.push(Action::Connect);
                }
            }
            (Timer::Hold, State::OpenSent | State::OpenConfirm | State::Established) => {
                self.fail(Notification::new(error::HOLD_TIMER, 0), out);
            }
            (Timer::Keepalive, State::OpenConfirm | State::Established) => {
                out.push(Action::Send(Message::Keepalive));
                if let Some(hold) = self.negotiated_hold() {
                    out.push(Action::StartTimer(Timer::Keepalive, hold / 3));
                }
            }
            _ => {}
        }
    }

    fn stop(&mut self, cease: Option<u8>, out: &mut Vec<Action>) {
        if let Some(subcode) = cease {
            if self.state == State::Established && !self.announced.is_empty() {
                let withdrawn = self.announced.keys().copied().collect();
                out.push(Action::Send(Message::Update(Update {
                    withdrawn,
                    ..Update::default()
                })));
            }
            if matches!(
                self.state,
                State::OpenSent | State::OpenConfirm | State::Established
            ) {
                let n = Notification::new(error::CEASE, subcode);
                out.push(Action::Send(Message::Notification(n)));
            }
        }
        self.announced.clear();
        for timer in [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive] {
            out.push(Action::StopTimer(timer));
        }
        out.push(Action::Close);
        self.state = State::Idle;
        self.peer_open = None;
    }

    /// Sends `n`, closes, and goes back to waiting.
    fn fail(&mut self, n: Notification, out: &mut Vec<Action>) {
        self.last_error = Some(format!("sent {n}"));
        out.push(Action::Send(Message::Notification(n)));
        self.close(out);
    }

    fn close(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Close);
        self.down_without_error(out);
    }

    fn down(&mut self, why: String, out: &mut Vec<Action>) {
        self.last_error = Some(why);
        self.down_without_error(out);
    }

    fn down_without_error(&mut self, out: &mut Vec<Action>) {
        out.push(Action::StopTimer(Timer::Hold));
        out.push(Action::StopTimer(Timer::Keepalive));
        self.announced.clear();
        self.peer_open = None;
        self.retry(out);
    }

    /// Waits for the next attempt: Connect for an active peer, Active for a passive one.
    fn retry(&mut self, out: &mut Vec<Action>) {
        self.state = if self.config.passive {
            State::Active
        } else {
            State::Connect
        };
        out.push(Action::StartTimer(
            Timer::ConnectRetry,
            self.config.connect_retry,
        ));
    }

    fn restart_hold(&self, out: &mut Vec<Action>) {
        if let Some(hold) = self.negotiated_hold() {
            out.push(Action::StartTimer(Timer::Hold, hold));
        }
    }

    fn negotiated_hold(&self) -> Option<Duration> {
        let theirs = self.peer_open.as_ref()?.hold_time;
        let hold = self.config.hold_time.min(theirs);
        (hold > 0).then(|| Duration::from_secs(hold.into()))
    }

    /// Makes what the peer has match what we want: withdrawals first, then one UPDATE per
    /// new or changed route, then End-of-RIB of each negotiated family on the first pass of
    /// a session. Routes the session cannot carry ([`Session::not_announced`]) are left out.
    fn sync_routes(&mut self, first: bool, out: &mut Vec<Action>) {
        let sendable: BTreeMap<Prefix, Route> = (self.desired.iter())
            .filter(|(_, r)| self.why_not(r).is_none())
            .map(|(p, r)| (*p, r.clone()))
            .collect();
        let withdrawn: Vec<Prefix> = (self.announced.keys())
            .filter(|p| !sendable.contains_key(p))
            .copied()
            .collect();
        if !withdrawn.is_empty() {
            for p in &withdrawn {
                self.announced.remove(p);
            }
            out.push(Action::Send(Message::Update(Update {
                withdrawn,
                ..Update::default()
            })));
        }
        let changed: Vec<Route> = (sendable.values())
            .filter(|r| self.announced.get(&r.prefix) != Some(r))
            .cloned()
            .collect();
        for route in changed {
            out.push(Action::Send(Message::Update(self.update_for(&route))));
            self.announced.insert(route.prefix, route);
        }
        if first {
            for afi in [AFI_IPV4, AFI_IPV6] {
                if self.negotiated(afi) {
                    out.push(Action::Send(Message::Update(Update::end_of_rib(afi))));
                }
            }
        }
    }

    /// Whether unicast of `afi` is usable with the peer: it offered the family, or, for
    /// IPv4, offered no multiprotocol capability at all (RFC 4760 section 8). We offer both.
    fn negotiated(&self, afi: u16) -> bool {
        let Some(open) = &self.peer_open else {
            return false;
        };
        let offered: Vec<(u16, u8)> = (open.capabilities.iter())
            .filter_map(|c| match c {
                Capability::MultiProtocol { afi, safi } => Some((*afi, *safi)),
                _ => None,
            })
            .collect();
        offered.contains(&(afi, SAFI_UNICAST)) || (afi == AFI_IPV4 && offered.is_empty())
    }

    /// The address families negotiated with the peer, as `ipv4-unicast` / `ipv6-unicast`.
    pub fn families(&self) -> Vec<&'static str> {
        [(AFI_IPV4, "ipv4-unicast"), (AFI_IPV6, "ipv6-unicast")]
            .into_iter()
            .filter(|(afi, _)| self.negotiated(*afi))
            .map(|(_, name)| name)
            .collect()
    }

    /// Desired routes this session does not carry, each with the reason; empty unless
    /// Established.
    pub fn not_announced(&self) -> Vec<(Prefix, String)> {
        if self.state != State::Established {
            return Vec::new();
        }
        (self.desired.values())
            .filter_map(|r| Some((r.prefix, self.why_not(r)?)))
            .collect()
    }

    /// Why `route` cannot go to this peer, if it cannot.
    fn why_not(&self, route: &Route) -> Option<String> {
        let afi = afi_of(&route.prefix);
        let (family, field) = match afi {
            AFI_IPV4 => ("IPv4", "the peer's next_hop"),
            _ => ("IPv6", "bgp.next_hop_ipv6"),
        };
        if !self.negotiated(afi) {
            return Some(format!("the peer did not offer {family} unicast"));
        }
        if self.next_hop(afi).is_none() {
            return Some(format!(
                "no {family} next hop: the session runs over {}, so set {field}",
                if afi == AFI_IPV4 { "IPv6" } else { "IPv4" }
            ));
        }
        None
    }

    /// Our next hop for routes of `afi`: configured, or the session's local address when it
    /// is of that family (a link-local IPv6 address is no global next hop).
    fn next_hop(&self, afi: u16) -> Option<IpAddr> {
        match afi {
            AFI_IPV4 => (self.config.next_hop.filter(IpAddr::is_ipv4))
                .or(self.local.filter(IpAddr::is_ipv4)),
            _ => (self.config.next_hop_ipv6.map(IpAddr::V6))
                .or(self.config.next_hop.filter(IpAddr::is_ipv6))
                .or(self.local.filter(|l| match l {
                    IpAddr::V6(a) => !a.is_unicast_link_local(),
                    IpAddr::V4(_) => false,
                })),
        }
    }

    fn ibgp(&self) -> bool {
        self.config.local_asn == self.config.peer_asn
    }

    fn update_for(&self, route: &Route) -> Update {
        let next_hop = self.next_hop(afi_of(&route.prefix));
        let attributes = PathAttributes {
            origin: 0,
            as_path: if self.ibgp() {
                Vec::new()
            } else {
                vec![self.config.local_asn]
            },
            next_hop,
            // Our link-local address only beside our own global one on this link.
            link_local_next_hop: self
                .link_local
                .filter(|_| next_hop.is_some_and(|h| h.is_ipv6()) && next_hop == self.local),
            med: route.med,
            local_pref: route.local_pref.filter(|_| self.ibgp()),
            communities: route.communities.clone(),
            large_communities: route.large_communities.clone(),
        };
        Update {
            withdrawn: Vec::new(),
            attributes: Some(attributes),
            nlri: vec![route.prefix],
            end_of_rib_afi: None,
        }
    }

    /// Our OPEN: 4-octet AS, IPv4 and IPv6 unicast, route refresh, graceful restart.
    pub fn open(&self) -> Open {
        let mut capabilities = vec![
            Capability::MultiProtocol {
                afi: AFI_IPV4,
                safi: SAFI_UNICAST,
            },
            Capability::MultiProtocol {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
            },
            Capability::RouteRefresh,
        ];
        if let Some(gr) = self.config.graceful_restart {
            capabilities.push(Capability::GracefulRestart(GracefulRestart {
                restart_state: gr.restart_state,
                notification: false,
                restart_time: gr.restart_time,
                families: [AFI_IPV4, AFI_IPV6]
                    .map(|afi| GrFamily {
                        afi,
                        safi: SAFI_UNICAST,
                        forwarding: gr.forwarding_state,
                    })
                    .to_vec(),
            }));
        }
        capabilities.push(Capability::FourOctetAs(self.config.local_asn));
        Open {
            version: 4,
            my_as: u16::try_from(self.config.local_asn).unwrap_or(23456),
            hold_time: self.config.hold_time,
            router_id: self.config.router_id,
            capabilities,
        }
    }
}

fn afi_of(prefix: &Prefix) -> u16 {
    if prefix.address.is_ipv4() {
        AFI_IPV4
    } else {
        AFI_IPV6
    }
}

fn kind_of(message: &Message) -> u8 {
    match message {
        Message::Open(_) => 1,
        Message::Update(_) => 2,
        Message::Notification(_) => 3,
        Message::Keepalive => 4,
        Message::RouteRefresh { .. } => 5,
    }
}

#[cfg(test)]
mod tests;
