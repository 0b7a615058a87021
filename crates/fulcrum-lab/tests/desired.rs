//! The declarative destination set through the real program (BPF_PROG_TEST_RUN): drain is
//! part of the set, so a drained backend that is re-added or re-applied never takes a new
//! flow, and a backend the data plane cannot reach is left out while the rest is applied.

use std::net::Ipv4Addr;

use fulcrum::{BalancerError, DesiredDestination, Destination, Service};
use fulcrum_lab::{
    fixture::{Fixture, VIP, backend, client, to, web},
    frame::FrameBuilder,
};

struct Lab(Fixture);

impl Lab {
    fn new() -> Self {
        let mut f = Fixture::new();
        f.lb.add_service(Service::new(web())).expect("service");
        Self(f)
    }

    /// Sends a SYN from each of `ports` and returns the backends they went to.
    fn syns(&self, ports: std::ops::Range<u16>) -> Vec<u8> {
        ports
            .map(|port| {
                let syn = FrameBuilder::tcp(client(port), to(VIP, 80)).syn().build();
                self.0.expect_forwarded(&syn, &[1, 2, 3])
            })
            .collect()
    }

    fn set(&mut self, wanted: &[(u8, u32, bool)]) -> Vec<fulcrum::Unresolved> {
        let wanted: Vec<DesiredDestination> = wanted
            .iter()
            .map(|(n, weight, drained)| {
                DesiredDestination::new(
                    Destination::new(backend(*n)).with_weight(*weight),
                    *drained,
                )
            })
            .collect();
        self.0.lb.set_desired(&web(), &wanted).expect("set_desired")
    }
}

#[test]
fn a_drained_backend_that_is_re_added_or_re_applied_takes_no_new_flow() {
    let mut lab = Lab::new();
    assert!(
        lab.set(&[(1, 1, false), (2, 1, true), (3, 1, false)])
            .is_empty()
    );
    assert!(!lab.syns(1000..1300).contains(&2), "drained from the start");
    assert!(lab.0.lb.is_drained(&web(), backend(2)).expect("known"));

    // Leaves (health down), comes back drained (health up): one rebuild, drained all along.
    assert!(lab.set(&[(1, 1, false), (3, 1, false)]).is_empty());
    assert!(
        lab.set(&[(1, 1, false), (2, 1, true), (3, 1, false)])
            .is_empty()
    );
    assert!(!lab.syns(2000..2300).contains(&2), "re-added drained");

    // A reload that reweighs everything keeps it drained.
    assert!(
        lab.set(&[(1, 2, false), (2, 3, true), (3, 1, false)])
            .is_empty()
    );
    assert!(!lab.syns(3000..3300).contains(&2), "re-applied drained");

    // The test can see backend 2: undrained, it takes new flows.
    assert!(
        lab.set(&[(1, 1, false), (2, 1, false), (3, 1, false)])
            .is_empty()
    );
    assert!(lab.syns(4000..4300).contains(&2), "undrained");
}

#[test]
fn a_backend_without_a_route_is_left_out_and_the_rest_is_applied() {
    let mut lab = Lab::new();
    assert!(lab.set(&[(1, 1, false)]).is_empty());
    let unresolved = lab.0.lb.set_desired(
        &web(),
        &[
            DesiredDestination::new(Destination::new(backend(1)), false),
            DesiredDestination::new(Destination::new(backend(3)), false),
            DesiredDestination::new(Destination::new(Ipv4Addr::new(10, 86, 0, 9)), false),
        ],
    );
    let unresolved = unresolved.expect("the service is applied");
    assert_eq!(unresolved.len(), 1);
    assert!(
        matches!(unresolved[0].error, BalancerError::NoRoute(a) if a == Ipv4Addr::new(10, 86, 0, 9)),
        "{:?}",
        unresolved[0].error
    );
    let chosen = lab.syns(5000..5200);
    assert!(chosen.contains(&1) && chosen.contains(&3), "{chosen:?}");
    assert!(
        lab.0
            .lb
            .check_destination(&Service::new(web()), Ipv4Addr::new(10, 86, 0, 9))
            .is_err()
            && lab
                .0
                .lb
                .check_destination(&Service::new(web()), backend(2))
                .is_ok()
    );

    // A dead backend still leaves while the unreachable one is still wanted.
    let unresolved = lab.0.lb.set_desired(
        &web(),
        &[
            DesiredDestination::new(Destination::new(backend(3)), false),
            DesiredDestination::new(Destination::new(Ipv4Addr::new(10, 86, 0, 9)), false),
        ],
    );
    assert_eq!(unresolved.expect("applied").len(), 1);
    assert!(lab.syns(6000..6100).iter().all(|n| *n == 3));
}
