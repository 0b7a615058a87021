//! `flow_sharing:`: the model and its checking, kept apart from the rest of the file so
//! that other optional sections merge beside it.

use std::{
    collections::HashMap,
    net::{SocketAddr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::error::quote;
use crate::validate::Checker;

/// Flow sharing with other balancers: every flow this balancer pins is sent to its peers,
/// and theirs are imported, so any balancer can carry any connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSharing {
    /// `listen`: the UDP address records are received on and sent from. Peers list it.
    pub listen: SocketAddr,
    /// `peers` (none): unicast peers by their `listen` address. Datagrams from any other
    /// source are refused when no multicast group is configured.
    pub peers: Vec<SocketAddr>,
    /// `multicast` (none): a group to send to and receive from, instead of or besides
    /// `peers`.
    pub multicast: Option<FlowMulticast>,
    /// `key_file`: the shared secret (at least 16 bytes), the same on every balancer.
    pub key_file: PathBuf,
    /// `refresh_interval` (`30s`): every flow held is sent again this often, so a peer's
    /// copy never ages out while the connection lives.
    pub refresh_interval: Duration,
    /// `batch_delay` (`100ms`): new flows reach peers within this; they are held at most
    /// this long to fill a datagram.
    pub batch_delay: Duration,
    /// `max_rate` (`100000`): records sent per second at most, dumps and refreshes
    /// included.
    pub max_rate: u32,
    /// `sync_timeout` (`10s`): a starting balancer waits this long at most for its peers'
    /// flows before it announces its VIPs.
    pub sync_timeout: Duration,
}

/// `flow_sharing.multicast`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowMulticast {
    /// `group`: an IPv4 multicast address and port.
    pub group: SocketAddrV4,
    /// `interface`: where the group is joined and sent out of.
    pub interface: String,
}

impl FlowSharing {
    /// `refresh_interval` when not given.
    pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
    /// `batch_delay` when not given.
    pub const DEFAULT_BATCH_DELAY: Duration = Duration::from_millis(100);
    /// `max_rate` when not given.
    pub const DEFAULT_MAX_RATE: u32 = 100_000;
    /// `sync_timeout` when not given.
    pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(10);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlowSharing {
    listen: Option<Spanned<String>>,
    peers: Option<Vec<Spanned<String>>>,
    multicast: Option<Spanned<RawMulticast>>,
    key_file: Option<Spanned<String>>,
    refresh_interval: Option<Spanned<String>>,
    batch_delay: Option<Spanned<String>>,
    max_rate: Option<Spanned<u32>>,
    sync_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMulticast {
    group: Option<Spanned<String>>,
    interface: Option<Spanned<String>>,
}

const P: &str = "flow_sharing";

impl Checker<'_> {
    pub(crate) fn flow_sharing(&mut self, raw: &Spanned<RawFlowSharing>) -> Option<FlowSharing> {
        let (at, f) = (&raw.referenced, &raw.value);
        let listen = self
            .required(
                &f.listen,
                at,
                "flow_sharing.listen",
                "listen: 10.0.2.11:7946",
            )
            .and_then(|l| self.unicast(l, "flow_sharing.listen".into()));
        let mut seen: HashMap<SocketAddr, u64> = HashMap::new();
        let peers: Vec<_> = (f.peers.iter().flatten().enumerate())
            .map(|(i, p)| {
                let path = format!("{P}.peers[{i}]");
                let addr = self.unicast(p, path.clone())?;
                if Some(addr) == listen {
                    return self.report(
                        &p.referenced,
                        path,
                        format!("{addr} is this balancer's own listen address; list the others"),
                    );
                }
                if let Some(line) = crate::validate::earlier(&mut seen, addr, p.referenced.line()) {
                    return self.report(
                        &p.referenced,
                        path,
                        format!("{addr} is already listed (line {line}); name each peer once"),
                    );
                }
                Some(addr)
            })
            .collect();
        let multicast = f.multicast.as_ref().map(|m| self.multicast(m));
        if f.peers.as_ref().is_none_or(Vec::is_empty) && f.multicast.is_none() {
            self.report::<()>(
                at,
                P,
                "no peers and no multicast group, so nobody to share with; add `peers: \
                 [10.0.2.12:7946]` or `multicast: {group: 239.77.0.1:7946, interface: eth0}`"
                    .to_owned(),
            );
        }
        if let (Some(Some(_)), Some(SocketAddr::V6(_)), Some(l)) = (&multicast, listen, &f.listen) {
            self.report::<()>(
                &l.referenced,
                "flow_sharing.listen",
                "multicast groups are IPv4; listen on an IPv4 address with `multicast`".into(),
            );
        }
        let key_file = self
            .required(
                &f.key_file,
                at,
                "flow_sharing.key_file",
                "key_file: /etc/fulcrum/flow-key",
            )
            .and_then(|k| {
                if k.value.trim().is_empty() {
                    self.report(
                        &k.referenced,
                        "flow_sharing.key_file",
                        "empty; give the path of the file holding the shared key".into(),
                    )
                } else {
                    Some(PathBuf::from(&k.value))
                }
            });
        let refresh_interval = self.duration(
            P,
            "refresh_interval",
            &f.refresh_interval,
            FlowSharing::DEFAULT_REFRESH_INTERVAL,
        );
        let batch_delay = self.duration(
            P,
            "batch_delay",
            &f.batch_delay,
            FlowSharing::DEFAULT_BATCH_DELAY,
        );
        let sync_timeout = self.duration(
            P,
            "sync_timeout",
            &f.sync_timeout,
            FlowSharing::DEFAULT_SYNC_TIMEOUT,
        );
        let max_rate = match &f.max_rate {
            None => Some(FlowSharing::DEFAULT_MAX_RATE),
            Some(r) if r.value > 0 => Some(r.value),
            Some(r) => self.report(
                &r.referenced,
                "flow_sharing.max_rate",
                "0 would send nothing; give records per second, like 100000".into(),
            ),
        };
        if let (Some(b), Some(r), Some(raw)) = (batch_delay, refresh_interval, &f.batch_delay)
            && b >= r
        {
            self.report::<()>(
                &raw.referenced,
                "flow_sharing.batch_delay",
                format!(
                    "{} must be shorter than refresh_interval ({})",
                    quote(&raw.value),
                    humantime::format_duration(r)
                ),
            );
        }
        Some(FlowSharing {
            listen: listen?,
            peers: peers.into_iter().collect::<Option<_>>()?,
            multicast: match multicast {
                None => None,
                Some(m) => Some(m?),
            },
            key_file: key_file?,
            refresh_interval: refresh_interval?,
            batch_delay: batch_delay?,
            max_rate: max_rate?,
            sync_timeout: sync_timeout?,
        })
    }

    /// An address and port someone can send to: not a multicast address, not port 0.
    fn unicast(&mut self, text: &Spanned<String>, path: String) -> Option<SocketAddr> {
        match text.value.trim().parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && !a.ip().is_multicast() => Some(a),
            Ok(a) => self.report(
                &text.referenced,
                path,
                format!(
                    "{a} cannot receive records; use a unicast address and a port other than 0"
                ),
            ),
            Err(_) => self.report(
                &text.referenced,
                path,
                format!(
                    "{} is not an address and port; write one like 10.0.2.11:7946",
                    quote(&text.value)
                ),
            ),
        }
    }

    fn multicast(&mut self, raw: &Spanned<RawMulticast>) -> Option<FlowMulticast> {
        let (at, m): (&Location, _) = (&raw.referenced, &raw.value);
        let path = "flow_sharing.multicast";
        let group = self
            .required(
                &m.group,
                at,
                format_args!("{path}.group"),
                "group: 239.77.0.1:7946",
            )
            .and_then(|g| match g.value.trim().parse::<SocketAddrV4>() {
                Ok(a) if a.ip().is_multicast() && a.port() != 0 => Some(a),
                _ => self.report(
                    &g.referenced,
                    format_args!("{path}.group"),
                    format!(
                        "{} is not an IPv4 multicast group and port; use one in 224.0.0.0/4, \
                         like 239.77.0.1:7946",
                        quote(&g.value)
                    ),
                ),
            });
        let interface = self
            .required(
                &m.interface,
                at,
                format_args!("{path}.interface"),
                "interface: eth0",
            )
            .and_then(|i| {
                let n = i.value.trim();
                let ok = !n.is_empty()
                    && n.len() <= 15
                    && !n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
                if ok {
                    Some(n.to_owned())
                } else {
                    self.report(
                        &i.referenced,
                        format_args!("{path}.interface"),
                        format!(
                            "{} is not an interface name; Linux names have 1 to 15 \
                             characters, without '/', ':' or spaces",
                            quote(&i.value)
                        ),
                    )
                }
            });
        Some(FlowMulticast {
            group: group?,
            interface: interface?,
        })
    }
}
