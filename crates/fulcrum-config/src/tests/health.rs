//! Health checks and the `health_rule` that counts them.

use super::{edit, problem, valid};
use crate::HealthRule;

#[test]
fn field_of_another_check_type() {
    assert_eq!(
        problem(&edit("        path: /\n", "        query: example.com\n")),
        "f.yaml:12:16: services[0].health[0].query: only dns checks take `query`, and this one \
         is http; remove it"
    );
}

#[test]
fn timeout_not_shorter_than_interval() {
    assert_eq!(
        problem(&edit("timeout: 500ms", "timeout: 2s")),
        "f.yaml:15:18: services[0].health[0].timeout: 2s must be shorter than interval (1s)"
    );
    assert_eq!(
        problem(&edit("        timeout: 500ms\n", "").replace("interval: 1s", "interval: 500ms")),
        "f.yaml:14:19: services[0].health[0].interval: 500ms must be longer than timeout \
         (500ms, the default)"
    );
    assert_eq!(
        problem(&edit("interval: 1s", "interval: often")),
        "f.yaml:14:19: services[0].health[0].interval: 'often' is not a duration; write a \
         number and a unit, like 500ms, 1s or 2m"
    );
}

#[test]
fn health_rule_out_of_range() {
    let rule = |rule: &str| {
        edit(
            "    backends:\n",
            &format!("    health_rule: {rule}\n    backends:\n"),
        )
    };
    assert_eq!(
        problem(&rule("2")),
        "f.yaml:18:18: services[0].health_rule: 2 is out of range; with 1 health check, use \
         `all` or 1"
    );
    assert_eq!(
        problem(&rule("0")),
        "f.yaml:18:18: services[0].health_rule: 0 is out of range; with 1 health check, use \
         `all` or 1"
    );
    assert_eq!(
        problem(&rule("most")),
        "f.yaml:18:18: services[0].health_rule: 'most' is not a health rule; with 1 health \
         check, use `all` or 1"
    );
    assert_eq!(
        valid(&rule("1")).services[0].health_rule,
        HealthRule::AtLeast(1)
    );
    assert_eq!(valid(&rule("all")).services[0].health_rule, HealthRule::All);
}

#[test]
fn dns_check_without_query() {
    assert_eq!(
        problem(&edit(
            "type: http\n        path: /\n        expect_status: 200\n",
            "type: dns\n"
        )),
        "f.yaml:11:9: services[0].health[0].query: missing; add it, like `query: example.com`"
    );
}

#[test]
fn port_0_with_a_check_that_names_no_port() {
    assert_eq!(
        problem(&edit("    port: 80\n", "    port: 0\n")),
        "f.yaml:11:9: services[0].health[0].port: missing; the service covers every port \
         (port 0), so the check must name the port to probe, like `port: 80`"
    );
    let config =
        valid(&edit("    port: 80\n", "").replace("fall: 2\n", "fall: 2\n        port: 8080\n"));
    assert_eq!(
        (config.services[0].port, config.services[0].health[0].port),
        (0, 8080)
    );
}

#[test]
fn health_rule_counts_the_checks_to_pass() {
    assert_eq!(HealthRule::All.required(3), 3);
    assert_eq!(HealthRule::AtLeast(2).required(3), 2);
    assert_eq!(HealthRule::All.required(0), 0, "no checks: always healthy");
}
