//! The declarative destination set through the real program (BPF_PROG_TEST_RUN): drain is
//! part of the set, so a drained backend that is re-added or re-applied never takes a new
//! flow, and a backend the data plane cannot reach is left out while the rest is applied.

use std::net::{Ipv4Addr, SocketAddrV4};

use fulcrum::{
    AttachMode, Balancer, BalancerError, DesiredDestination, Destination, Protocol, Service,
    ServiceId,
};
use fulcrum_lab::{
    frame::FrameBuilder,
    netns::{NetNs, NsGuard, unique_prefix},
    testrun::{action, run_frame},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 87, 99, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 87, 50, 7);

fn backend(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 87, 0, 10 + n)
}

fn backend_mac(n: u8) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, 2, n]
}

fn web() -> ServiceId {
    ServiceId::new(VIP, 80, Protocol::Tcp)
}

/// A namespace with `dx0` and backends 1..=3 as permanent neighbours, a balancer attached,
/// and the test thread inside.
struct Lab {
    lb: Balancer,
    ifindex: u32,
    _guard: NsGuard,
    _ns: NetNs,
}

impl Lab {
    fn new() -> Self {
        let ns = NetNs::create(&format!("{}-dsr", unique_prefix("w"))).expect("netns");
        ns.ip(&["link", "add", "dx0", "type", "veth", "peer", "name", "dx1"])
            .expect("veth");
        ns.ip(&["addr", "add", "10.87.0.1/24", "dev", "dx0"])
            .expect("address");
        for l in ["dx0", "dx1"] {
            ns.ip(&["link", "set", l, "up"]).expect("up");
        }
        for n in 1..=3 {
            let mac = backend_mac(n).map(|b| format!("{b:02x}")).join(":");
            ns.ip(&[
                "neigh",
                "replace",
                &backend(n).to_string(),
                "lladdr",
                &mac,
                "dev",
                "dx0",
                "nud",
                "permanent",
            ])
            .expect("neighbour");
        }
        let guard = ns.enter().expect("enter netns");
        let mut lb = Balancer::builder()
            .max_services(4)
            .max_backends(16)
            .max_flows(4096)
            .build()
            .expect("load the balancer");
        lb.attach("dx0", AttachMode::Native).expect("attach");
        lb.add_service(Service::new(web())).expect("service");
        let c = std::ffi::CString::new("dx0").expect("name");
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        Self {
            lb,
            ifindex,
            _guard: guard,
            _ns: ns,
        }
    }

    /// Sends a SYN from each of `ports` and returns the backends they went to.
    fn syns(&self, ports: std::ops::Range<u16>) -> Vec<u8> {
        let program = self.lb.program().expect("program");
        ports
            .map(|port| {
                let syn =
                    FrameBuilder::tcp(SocketAddrV4::new(CLIENT, port), SocketAddrV4::new(VIP, 80))
                        .syn()
                        .build();
                let ran = run_frame(program, &syn, self.ifindex).expect("test run");
                assert_eq!(ran.action, action::TX, "a SYN to the VIP is forwarded");
                (1..=3)
                    .find(|n| ran.frame[0..6] == backend_mac(*n))
                    .expect("sent to one of the backends")
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
        self.lb.set_desired(&web(), &wanted).expect("set_desired")
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
    assert!(lab.lb.is_drained(&web(), backend(2)).expect("known"));

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
    let unresolved = lab.lb.set_desired(
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
        lab.lb
            .check_destination(Ipv4Addr::new(10, 86, 0, 9))
            .is_err()
            && lab.lb.check_destination(backend(2)).is_ok()
    );

    // A dead backend still leaves while the unreachable one is still wanted.
    let unresolved = lab.lb.set_desired(
        &web(),
        &[
            DesiredDestination::new(Destination::new(backend(3)), false),
            DesiredDestination::new(Destination::new(Ipv4Addr::new(10, 86, 0, 9)), false),
        ],
    );
    assert_eq!(unresolved.expect("applied").len(), 1);
    assert!(lab.syns(6000..6100).iter().all(|n| *n == 3));
}
