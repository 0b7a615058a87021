//! The failover test of a fleet: 120 keep-alive connections over two balancers behind a
//! BIRD router, a backend added, one balancer killed (SIGKILL, machine gone) or stopped
//! (SIGTERM). With flow sharing, no connection breaks, and a restarted balancer learns the
//! flows before it announces; without, some break: the feature is what saves them.

use std::{path::Path, sync::Mutex};

use fulcrum_lab::failover::{Death, Outcome, run};

const FULCRUM: &str = env!("CARGO_BIN_EXE_fulcrum");
const CONNECTIONS: usize = 120;

/// One scenario at a time: they measure timers, and the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn scenario(tag: &str, sharing: bool, death: Death, restart: bool) -> Outcome {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = run(
        tag,
        Path::new(FULCRUM),
        sharing,
        death,
        CONNECTIONS,
        restart,
    )
    .unwrap_or_else(|e| panic!("{tag}: {e:#}"));
    eprintln!(
        "{tag}: sharing {sharing}, {death:?}: victim carried {} of {}; broken at failover {}, \
         at restart {:?}; withdrawn after {:?}, carried after {:?}",
        outcome.victim_flows,
        outcome.connections,
        outcome.broken_at_failover.len(),
        outcome.broken_at_restart.as_ref().map(Vec::len),
        outcome.withdrawn_after,
        outcome.carried_after,
    );
    assert!(
        outcome.victim_flows > 0,
        "the router sent the victim some flows"
    );
    outcome
}

#[test]
fn with_flow_sharing_a_crashed_balancer_breaks_no_connection_and_comes_back_synced() {
    let outcome = scenario("fk", true, Death::Crash, true);
    assert_eq!(
        outcome.broken_at_failover,
        Vec::<String>::new(),
        "no connection breaks when a balancer dies"
    );
    assert!(
        !outcome.announced_before_synced,
        "the restarted balancer announced before it had its peer's flows"
    );
    assert_eq!(
        outcome.broken_at_restart,
        Some(Vec::new()),
        "no connection breaks when the router sends the restarted balancer its share"
    );
}

#[test]
fn with_flow_sharing_a_stopped_balancer_breaks_no_connection() {
    let outcome = scenario("fs", true, Death::Stop, false);
    assert_eq!(
        outcome.broken_at_failover,
        Vec::<String>::new(),
        "no connection breaks when a balancer stops"
    );
}

#[test]
fn without_flow_sharing_a_crashed_balancer_breaks_connections() {
    let outcome = scenario("nk", false, Death::Crash, false);
    assert!(
        !outcome.broken_at_failover.is_empty(),
        "without flow sharing, the survivor re-hashes the dead balancer's flows over three \
         backends and some land elsewhere"
    );
}

#[test]
fn without_flow_sharing_a_stopped_balancer_breaks_connections() {
    let outcome = scenario("ns", false, Death::Stop, false);
    assert!(
        !outcome.broken_at_failover.is_empty(),
        "without flow sharing, a clean stop moves flows too"
    );
}
