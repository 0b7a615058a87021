//! The start-up sync: a starting balancer asks its peers for their flows and is `ready` (may
//! announce its VIPs) once every unicast peer has answered with a complete dump, once the
//! first dump arrived over multicast (where the peers are not known), or once
//! `sync_timeout` has passed, whichever comes first. Pure: fed events, returns actions.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

/// The start-up sync of one balancer.
#[derive(Debug)]
pub struct StartupSync {
    pending: BTreeSet<SocketAddr>,
    multicast: bool,
    deadline: Instant,
    retry_every: Duration,
    next_retry: Instant,
    ready: bool,
}

/// What the caller must do after an event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Send a sync request to these peers (again).
    pub request: Vec<SocketAddr>,
    /// Send one to the multicast group (again).
    pub request_group: bool,
    /// `ready` just became true.
    pub became_ready: bool,
}

impl StartupSync {
    /// Starts a sync at `now` with these unicast peers and, if `multicast`, a group. With
    /// neither it is ready at once (nobody to wait for). The returned actions are the first
    /// requests. Requests are sent again every fifth of the timeout to peers that have not
    /// answered, so a peer that was restarting at our start is still heard from.
    pub fn start(
        peers: &[SocketAddr],
        multicast: bool,
        now: Instant,
        timeout: Duration,
    ) -> (Self, Actions) {
        let retry_every = (timeout / 5).max(Duration::from_millis(100));
        let mut sync = Self {
            pending: peers.iter().copied().collect(),
            multicast,
            deadline: now + timeout,
            retry_every,
            next_retry: now + retry_every,
            ready: false,
        };
        let actions = if sync.pending.is_empty() && !multicast {
            sync.ready = true;
            Actions {
                became_ready: true,
                ..Actions::default()
            }
        } else {
            Actions {
                request: sync.pending.iter().copied().collect(),
                request_group: multicast,
                became_ready: false,
            }
        };
        (sync, actions)
    }

    /// Whether the balancer knows enough flows to take traffic.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// When [`StartupSync::on_tick`] should be called next; `None` once ready.
    pub fn next_wakeup(&self) -> Option<Instant> {
        (!self.ready).then(|| self.deadline.min(self.next_retry))
    }

    /// A peer's dump ended (its sync-done message arrived), `from` its source address.
    pub fn on_done(&mut self, from: SocketAddr) -> Actions {
        if self.ready {
            return Actions::default();
        }
        let known = self.pending.remove(&from);
        let ready = if self.multicast {
            // Over multicast any peer's complete dump is the fleet's flows.
            true
        } else {
            known && self.pending.is_empty()
        };
        self.become_ready_if(ready)
    }

    /// Time passed: gives up waiting at the deadline, re-requests before it.
    pub fn on_tick(&mut self, now: Instant) -> Actions {
        if self.ready {
            return Actions::default();
        }
        if now >= self.deadline {
            return self.become_ready_if(true);
        }
        if now < self.next_retry {
            return Actions::default();
        }
        self.next_retry = now + self.retry_every;
        Actions {
            request: self.pending.iter().copied().collect(),
            request_group: self.multicast,
            became_ready: false,
        }
    }

    /// The peers that have not answered yet.
    pub fn pending(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.pending.iter().copied()
    }

    fn become_ready_if(&mut self, ready: bool) -> Actions {
        if ready {
            self.ready = true;
        }
        Actions {
            became_ready: ready,
            ..Actions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn ready_once_every_unicast_peer_answered() {
        let now = Instant::now();
        let (a, b) = (addr("10.0.0.1:7946"), addr("10.0.0.2:7946"));
        let (mut s, first) = StartupSync::start(&[a, b], false, now, TIMEOUT);
        assert_eq!(first.request, vec![a, b]);
        assert!(!first.request_group && !s.is_ready());
        assert!(!s.on_done(a).became_ready);
        // A stranger's done or a repeated one does not count.
        assert!(!s.on_done(addr("10.0.0.9:7946")).became_ready);
        assert!(!s.on_done(a).became_ready);
        assert!(s.on_done(b).became_ready);
        assert!(s.is_ready());
        assert_eq!(s.next_wakeup(), None);
        assert_eq!(s.on_done(b), Actions::default());
    }

    #[test]
    fn ready_at_the_timeout_when_a_peer_is_down_and_requests_are_retried() {
        let now = Instant::now();
        let (a, b) = (addr("10.0.0.1:7946"), addr("10.0.0.2:7946"));
        let (mut s, _) = StartupSync::start(&[a, b], false, now, TIMEOUT);
        s.on_done(a);
        assert_eq!(s.on_tick(now + Duration::from_secs(1)), Actions::default());
        let retry = s.on_tick(now + Duration::from_secs(2));
        assert_eq!(retry.request, vec![b]);
        assert!(!retry.became_ready);
        assert_eq!(s.next_wakeup(), Some(now + Duration::from_secs(4)));
        assert!(
            !s.on_tick(now + TIMEOUT - Duration::from_millis(1))
                .became_ready
        );
        assert!(s.on_tick(now + TIMEOUT).became_ready);
        assert!(s.is_ready());
    }

    #[test]
    fn multicast_is_ready_at_the_first_done() {
        let now = Instant::now();
        let (mut s, first) = StartupSync::start(&[], true, now, TIMEOUT);
        assert!(first.request_group && first.request.is_empty());
        assert!(s.on_done(addr("10.0.0.7:7946")).became_ready);
    }

    #[test]
    fn nobody_to_ask_is_ready_at_once() {
        let (s, first) = StartupSync::start(&[], false, Instant::now(), TIMEOUT);
        assert!(first.became_ready && s.is_ready());
    }
}
