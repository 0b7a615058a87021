//! Defect 4: probes that fail for a reason of this host (here: out of file descriptors) are
//! no evidence against the backend. Its own binary, since it lowers RLIMIT_NOFILE of the
//! process and then uses up every descriptor.
use std::{
    fs::File,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use fulcrum_health::{
    BackendId, CheckSpec, CheckStatus, Checker, CheckerConfig, Probe, Rule, Target,
};
use tokio::net::TcpListener;

const INTERVAL: Duration = Duration::from_millis(50);

/// Polls `what` until it holds, for at most 10 s.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens /dev/null until the process is out of descriptors.
fn exhaust_descriptors() -> Vec<File> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(256);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    let mut files = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return files,
            Err(e) => panic!("open /dev/null: {e}"),
        }
    }
}

#[tokio::test]
async fn out_of_descriptors_keeps_the_backend_up() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok(_) => {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    });

    let (checker, mut rx) = Checker::new(CheckerConfig::default()).expect("runtime");
    let id = BackendId {
        service: "web".into(),
        address: addr.ip(),
    };
    let spec = CheckSpec {
        probe: Probe::Tcp,
        port: addr.port(),
        interval: INTERVAL,
        timeout: Duration::from_millis(300),
        rise: 1,
        fall: 2,
    };
    checker
        .set_targets(vec![Target {
            backend: id.clone(),
            checks: vec![spec],
            rule: Rule::All,
            via: None,
        }])
        .expect("valid");
    let up = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("up within 5 s");
    assert!(up.is_some_and(|e| e.healthy));

    let files = exhaust_descriptors();
    let check = || checker.snapshot()[0].checks[0].clone();
    // Many times `fall`: the old code took the backend down after two.
    wait_for("ten local failures", || check().local_failures >= 10).await;
    let snap = &checker.snapshot()[0];
    assert!(snap.healthy, "{snap:?}");
    assert_eq!(snap.checks[0].status, CheckStatus::Up);
    assert_eq!(
        snap.checks[0].local_error.as_deref(),
        Some("local: too many open files (socket)")
    );
    assert_eq!(
        snap.checks[0].last_error, snap.checks[0].local_error,
        "the status shows why"
    );
    assert!(checker.local_failures() >= 10);
    assert!(rx.try_recv().is_err(), "no transition");

    drop(files);
    let before = accepted.load(Ordering::SeqCst);
    wait_for("probes to run again", || {
        check().local_error.is_none() && accepted.load(Ordering::SeqCst) > before + 2
    })
    .await;
    let snap = &checker.snapshot()[0];
    assert!(snap.healthy && snap.checks[0].successes >= 2, "{snap:?}");
    assert!(rx.try_recv().is_err(), "still no transition");
}
