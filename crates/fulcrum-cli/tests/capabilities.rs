//! `fulcrum run` checks capabilities, not uid 0: an unprivileged user is told which ones are
//! missing, and the same user with exactly those gets past the check.

use std::process::{Command, Output};

const FULCRUM: &str = env!("CARGO_BIN_EXE_fulcrum");

/// `fulcrum run` as nobody, with `caps` (setpriv names, like `+bpf,+net_admin`) raised
/// as ambient capabilities, or none.
fn run_as_nobody(caps: Option<&str>) -> Output {
    let mut setpriv = Command::new("setpriv");
    setpriv.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    match caps {
        Some(caps) => setpriv.args([
            &format!("--inh-caps=-all,{caps}"),
            &format!("--ambient-caps=-all,{caps}"),
        ]),
        None => setpriv.args(["--inh-caps=-all"]),
    };
    setpriv
        .args([FULCRUM, "run", "--config", "/nonexistent/fulcrum.yaml"])
        .env("FULCRUM_LOG", "off")
        .output()
        .expect("run setpriv")
}

fn error_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn names_the_missing_capabilities() {
    let out = run_as_nobody(None);
    let stderr = error_text(&out);
    assert!(!out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    assert!(
        lines[0].starts_with("fulcrum: missing capabilities CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON:"),
        "{stderr}"
    );
}

#[test]
fn those_capabilities_are_enough() {
    let out = run_as_nobody(Some("+bpf,+net_admin,+perfmon"));
    let stderr = error_text(&out);
    // It gets as far as reading the (missing) configuration.
    assert!(!stderr.contains("missing capabilities"), "{stderr}");
    assert!(stderr.contains("/nonexistent/fulcrum.yaml"), "{stderr}");

    let out = run_as_nobody(Some("+bpf,+perfmon"));
    let stderr = error_text(&out);
    assert!(
        stderr.starts_with("fulcrum: missing capabilities CAP_NET_ADMIN:"),
        "{stderr}"
    );
    let out = run_as_nobody(Some("+sys_admin,+net_admin"));
    let stderr = error_text(&out);
    assert!(
        !stderr.contains("missing capabilities"),
        "CAP_SYS_ADMIN covers BPF: {stderr}"
    );
}
