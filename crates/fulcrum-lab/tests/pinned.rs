//! Pinned state: a balancer that leaves its data plane pinned keeps forwarding, and the
//! next one adopts services, destinations and flows; stopping removes everything; a
//! layout this binary cannot read is refused, never reinitialised.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
};

use aya::maps::{Array, Map, MapData};
use fulcrum::{
    AttachMode, Balancer, BalancerError, Counter, Destination, Protocol, Service, ServiceId,
};
use fulcrum_common::{Layout, maps};
use fulcrum_lab::{
    frame::FrameBuilder,
    netns::{NetNs, NsGuard, unique_prefix},
    testrun::{action, run_frame},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 89, 99, 1);

fn backend(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 89, 0, 10 + n)
}

fn backend_mac(n: u8) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, 1, n]
}

fn web() -> ServiceId {
    ServiceId::new(VIP, 80, Protocol::Tcp)
}

/// A namespace with `px0` and backends 1..=3 as permanent neighbours; the pin directory
/// is removed on drop whatever happened.
struct Lab {
    dir: PathBuf,
    _guard: NsGuard,
    ns: NetNs,
}

impl Lab {
    fn new() -> Self {
        let prefix = unique_prefix("p");
        let ns = NetNs::create(&format!("{prefix}-pin")).expect("create netns");
        ns.ip(&["link", "add", "px0", "type", "veth", "peer", "name", "px1"])
            .expect("veth");
        ns.ip(&["addr", "add", "10.89.0.1/24", "dev", "px0"])
            .expect("address");
        for l in ["px0", "px1"] {
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
                "px0",
                "nud",
                "permanent",
            ])
            .expect("neighbour");
        }
        let guard = ns.enter().expect("enter netns");
        Self {
            dir: fulcrum::pin::instance_dir(&format!("test-{prefix}")),
            _guard: guard,
            ns,
        }
    }

    fn balancer(&self) -> Result<Balancer, BalancerError> {
        let mut lb = Balancer::builder()
            .max_services(4)
            .max_backends(32)
            .max_flows(1024)
            .flow_cache(256)
            .pin(&self.dir)
            .build()?;
        lb.attach("px0", AttachMode::Native)?;
        Ok(lb)
    }

    fn has_xdp(&self) -> bool {
        self.ns
            .ip(&["-d", "link", "show", "px0"])
            .expect("ip link")
            .contains("xdp")
    }

    /// Whether the XDP program leaves the interface within two seconds: the kernel frees
    /// an unpinned link from a work queue, not at once.
    fn detached(&self) -> bool {
        (0..200).any(|_| {
            let gone = !self.has_xdp();
            if !gone {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            gone
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("name");
    // SAFETY: valid C string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Runs a frame of `port`'s flow and returns the backend it went to.
fn forwarded_to(lb: &Balancer, port: u16, syn: bool) -> u8 {
    let mut frame = FrameBuilder::tcp(
        SocketAddrV4::new(Ipv4Addr::new(10, 89, 50, 7), port),
        SocketAddrV4::new(VIP, 80),
    );
    if syn {
        frame = frame.syn();
    }
    let ran = run_frame(
        lb.program().expect("program"),
        &frame.build(),
        ifindex("px0"),
    )
    .expect("test run");
    assert_eq!(ran.action, action::TX, "VIP traffic is forwarded");
    let dst: [u8; 6] = ran.frame[0..6].try_into().expect("6 bytes");
    (1..=3)
        .find(|n| backend_mac(*n) == dst)
        .expect("a backend's MAC")
}

#[test]
fn a_restart_adopts_services_destinations_and_flows_and_a_stop_removes_them() {
    let lab = Lab::new();
    let mut lb = lab.balancer().expect("first balancer");
    assert!(!lb.adopted(), "nothing was pinned yet");
    lb.add_service(Service::new(web())).expect("service");
    let dests: Vec<_> = (1..=3).map(|n| Destination::new(backend(n))).collect();
    lb.set_destinations(&web(), &dests).expect("destinations");
    // 24 established flows, then backend 3 drained: a restart must keep both.
    let mut pinned = Vec::new();
    for port in 40000..40024 {
        let n = forwarded_to(&lb, port, true);
        assert_eq!(forwarded_to(&lb, port, false), n, "handshake ACK");
        pinned.push((port, n));
    }
    lb.drain(&web(), backend(3)).expect("drain");
    let flows = lb.flow_count().expect("flows");
    lb.leave_pinned();
    assert!(
        lab.has_xdp(),
        "the data plane stays attached after the process lets go"
    );

    let lb = lab.balancer().expect("second balancer adopts");
    assert!(lb.adopted());
    let services = lb.services().expect("services");
    assert_eq!(services.len(), 1);
    let adopted: Vec<(std::net::IpAddr, bool)> = services[0]
        .destinations
        .iter()
        .map(|d| (d.destination.address, d.drained))
        .collect();
    assert_eq!(
        adopted,
        vec![
            (backend(1).into(), false),
            (backend(2).into(), false),
            (backend(3).into(), true)
        ],
        "destinations and their drain state are adopted"
    );
    assert_eq!(lb.flow_count().expect("flows"), flows, "every flow is kept");
    for (port, n) in &pinned {
        assert_eq!(
            forwarded_to(&lb, *port, false),
            *n,
            "flow {port} keeps its backend"
        );
    }
    // New flows avoid the drained backend, as before the restart.
    for port in 41000..41030 {
        assert_ne!(
            forwarded_to(&lb, port, true),
            3,
            "drained backend got a new flow"
        );
    }
    drop(lb);
    assert!(!lab.dir.exists(), "stopping removes the pinned state");
    assert!(lab.detached(), "stopping detaches");
}

#[test]
fn interfaces_no_longer_attached_are_released_at_adoption() {
    let lab = Lab::new();
    lab.balancer().expect("first").leave_pinned();
    let mut lb = Balancer::builder()
        .pin(&lab.dir)
        .build()
        .expect("adopt without attaching");
    assert!(lab.has_xdp(), "still attached until released");
    lb.release_unclaimed().expect("release");
    assert!(lab.detached(), "released");
}

#[test]
fn a_layout_of_another_version_is_refused_and_left_alone() {
    let lab = Lab::new();
    lab.balancer().expect("first").leave_pinned();
    let path = lab.dir.join(maps::LAYOUT);
    let data = MapData::from_pin(&path).expect("open the layout");
    let mut layout: Array<MapData, Layout> = Array::try_from(Map::Array(data)).expect("array");
    let mut found = layout.get(&0, 0).expect("read");
    found.version += 1;
    layout.set(0, found, 0).expect("write");

    let message = match lab.balancer() {
        Ok(_) => panic!("a layout of another version was adopted"),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains(&lab.dir.display().to_string()) && message.contains("rm -r"),
        "the error names the directory and what to do: {message}"
    );
    assert!(path.exists(), "nothing was reinitialised");
    assert!(lab.has_xdp(), "the running data plane was not touched");
    remove(&lab.dir);
    assert!(lab.detached());
}

/// Flow sharing added a pinned map (its counters) but left every map pinned before it
/// as it was: state pinned by a binary without flow sharing is adopted, and the new
/// program, sharing, reports flows from then on.
#[test]
fn state_pinned_before_flow_sharing_is_adopted_with_sharing_on() {
    let lab = Lab::new();
    let mut lb = lab.balancer().expect("first balancer");
    lb.add_service(Service::new(web())).expect("service");
    let dests: Vec<_> = (1..=3).map(|n| Destination::new(backend(n))).collect();
    lb.set_destinations(&web(), &dests).expect("destinations");
    let n = forwarded_to(&lb, 40100, true);
    assert_eq!(forwarded_to(&lb, 40100, false), n, "handshake ACK");
    lb.leave_pinned();
    // What a binary from before flow sharing leaves behind.
    std::fs::remove_file(lab.dir.join(maps::FLOW_EVENT_STATS)).expect("unpin");

    let mut lb = Balancer::builder()
        .pin(&lab.dir)
        .share_flows(true)
        .build()
        .expect("adopt");
    lb.attach("px0", AttachMode::Native).expect("attach");
    assert!(lb.adopted());
    let mut events = lb.flow_events().expect("the event ring");
    assert_eq!(forwarded_to(&lb, 40100, false), n, "the flow is kept");
    // A flow without a SYN is pinned, and reported, by its second packet.
    forwarded_to(&lb, 40101, false);
    forwarded_to(&lb, 40101, false);
    let mut got = Vec::new();
    events.drain(&mut got);
    let records = lb.flow_records(&got);
    assert_eq!(records.len(), 1, "the new flow is reported: {records:?}");
    assert_eq!(records[0].client.port(), 40101);
    assert_eq!(
        lb.stats().expect("stats").get(Counter::FlowEventsEmitted),
        1
    );
    assert!(
        lab.dir.join(maps::FLOW_EVENT_STATS).exists(),
        "the new map is pinned with the rest"
    );
}

#[test]
fn a_second_balancer_on_a_busy_interface_is_told_so() {
    let lab = Lab::new();
    let _first = lab.balancer().expect("first");
    let mut other = Balancer::builder()
        .max_services(2)
        .max_backends(4)
        .max_flows(16)
        .flow_cache(16)
        .build()
        .expect("second");
    let message = other
        .attach("px0", AttachMode::Native)
        .expect_err("the interface is taken")
        .to_string();
    assert!(
        message.contains("already has an XDP program") && !message.contains("generic"),
        "{message}"
    );
}

fn remove(dir: &Path) {
    std::fs::remove_dir_all(dir).expect("remove the pin directory");
}

#[test]
fn a_restart_adopts_ipv6_services_their_echo_setting_and_flows() {
    let lab = Lab::new();
    let backend6 =
        |n: u8| std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x89, 0, 0, 0, 0, 0x10 + u16::from(n));
    lab.ns
        .ip(&["addr", "add", "2001:db8:89::1/64", "dev", "px0", "nodad"])
        .expect("IPv6 address");
    for n in 1..=3 {
        let mac = backend_mac(n).map(|b| format!("{b:02x}")).join(":");
        lab.ns
            .ip(&[
                "neigh",
                "replace",
                &backend6(n).to_string(),
                "lladdr",
                &mac,
                "dev",
                "px0",
                "nud",
                "permanent",
            ])
            .expect("neighbour");
    }
    let vip6 = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x89, 0x99, 0, 0, 0, 1);
    let web6 = ServiceId::new(vip6, 80, Protocol::Tcp);
    let forwarded_to6 = |lb: &Balancer, port: u16, syn: bool| -> u8 {
        let mut frame = FrameBuilder::tcp(
            std::net::SocketAddrV6::new("2001:db8:89:50::7".parse().expect("addr"), port, 0, 0),
            std::net::SocketAddrV6::new(vip6, 80, 0, 0),
        );
        if syn {
            frame = frame.syn();
        }
        let ran = run_frame(
            lb.program().expect("program"),
            &frame.build(),
            ifindex("px0"),
        )
        .expect("test run");
        assert_eq!(ran.action, action::TX, "IPv6 VIP traffic is forwarded");
        (1..=3)
            .find(|n| ran.frame[0..6] == backend_mac(*n))
            .expect("a backend's MAC")
    };

    let mut lb = lab.balancer().expect("first balancer");
    let mut service = Service::new(web6);
    service.icmp_echo = false;
    lb.add_service(service).expect("service");
    let dests: Vec<_> = (1..=3).map(|n| Destination::new(backend6(n))).collect();
    lb.set_destinations(&web6, &dests).expect("destinations");
    let mut pinned = Vec::new();
    for port in 40000..40012 {
        let n = forwarded_to6(&lb, port, true);
        assert_eq!(forwarded_to6(&lb, port, false), n, "handshake ACK");
        pinned.push((port, n));
    }
    lb.leave_pinned();

    let lb = lab.balancer().expect("second balancer adopts");
    assert!(lb.adopted());
    let services = lb.services().expect("services");
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].service.id, web6, "the IPv6 service is adopted");
    assert!(!services[0].service.icmp_echo, "echo stays off");
    let adopted: Vec<std::net::IpAddr> = services[0]
        .destinations
        .iter()
        .map(|d| d.destination.address)
        .collect();
    let want: Vec<std::net::IpAddr> = (1..=3).map(|n| backend6(n).into()).collect();
    assert_eq!(adopted, want, "IPv6 destinations are adopted");
    assert_eq!(
        lb.flow_count().expect("flows"),
        pinned.len(),
        "IPv6 flows are kept"
    );
    for (port, n) in &pinned {
        assert_eq!(
            forwarded_to6(&lb, *port, false),
            *n,
            "flow {port} keeps its backend"
        );
    }
}
