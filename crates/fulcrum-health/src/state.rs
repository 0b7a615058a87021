//! The pure part of health checking: results go in, transitions come out. No clock, no socket,
//! so every rule below is tested by feeding results.
//!
//! A check counts consecutive results: it turns [`CheckStatus::Up`] after `rise` successes in a
//! row and [`CheckStatus::Down`] after `fall` failures in a row; before either it is
//! [`CheckStatus::Unknown`]. A backend combines its checks with a [`Rule`] and hysteresis:
//!
//! * it starts **unhealthy** (untested): a new backend gets no traffic before it has proven
//!   itself, unless it has no checks at all, in which case it is healthy from the start;
//! * it turns healthy when at least `need` checks are Up;
//! * it turns unhealthy when so many checks are Down that `need` can no longer be met, even if
//!   every Unknown check came up. So a check added by a reload does not take a healthy backend
//!   out while it has not yet been decided.
//!
//! When no check is Unknown the two conditions meet: healthy exactly when `need` checks are Up.
//!
//! A result that failed for a local reason ([`ProbeError::is_local`]: out of descriptors,
//! memory, ports) is no evidence about the backend: it is remembered and counted, but moves
//! neither the counters nor the status.

use std::time::Duration;

use crate::{ProbeError, Rule};

/// Where one check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// Neither `rise` successes nor `fall` failures in a row yet.
    Unknown,
    /// Passed `rise` times in a row, and not failed `fall` times in a row since.
    Up,
    /// Failed `fall` times in a row, and not passed `rise` times in a row since.
    Down,
}

/// One check's counters and memory.
#[derive(Debug, Clone)]
pub struct CheckState {
    name: String,
    rise: u32,
    fall: u32,
    status: CheckStatus,
    successes: u32,
    failures: u32,
    last_error: Option<String>,
    last_latency: Option<Duration>,
    local_error: Option<String>,
    local_failures: u64,
}

impl CheckState {
    /// A check that has not run yet; `name` labels it in reasons (see `CheckSpec`'s Display).
    pub fn new(name: impl Into<String>, rise: u32, fall: u32) -> Self {
        Self {
            name: name.into(),
            rise,
            fall,
            status: CheckStatus::Unknown,
            successes: 0,
            failures: 0,
            last_error: None,
            last_latency: None,
            local_error: None,
            local_failures: 0,
        }
    }

    /// A check taken as Up from the start (a daemon adopting a backend that was serving):
    /// it needs `fall` failures in a row to go Down.
    pub fn assumed_up(name: impl Into<String>, rise: u32, fall: u32) -> Self {
        Self {
            status: CheckStatus::Up,
            ..Self::new(name, rise, fall)
        }
    }

    /// Counts one result; returns whether the status changed. A local failure changes
    /// nothing but [`local_error`](Self::local_error) and the local count.
    pub fn record(&mut self, result: &Result<Duration, ProbeError>) -> bool {
        let before = self.status;
        if let Err(e) = result
            && e.is_local()
        {
            let text = e.to_string();
            self.last_error = Some(text.clone());
            self.local_error = Some(text);
            self.local_failures = self.local_failures.saturating_add(1);
            return false;
        }
        self.local_error = None;
        match result {
            Ok(latency) => {
                self.last_latency = Some(*latency);
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                if self.successes >= self.rise {
                    self.status = CheckStatus::Up;
                }
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                if self.failures >= self.fall {
                    self.status = CheckStatus::Down;
                }
            }
        }
        self.status != before
    }

    /// Changes the thresholds (on reload) keeping status and counters; they apply from the
    /// next result on.
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise;
        self.fall = fall;
    }

    /// The check's label.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Where the check stands.
    pub fn status(&self) -> CheckStatus {
        self.status
    }
    /// Successes in a row so far (0 after a failure).
    pub fn successes(&self) -> u32 {
        self.successes
    }
    /// Failures in a row so far (0 after a success).
    pub fn failures(&self) -> u32 {
        self.failures
    }
    /// The reason of the most recent failure, kept after recovery so an operator can see what
    /// went wrong last.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
    /// The latency of the most recent success.
    pub fn last_latency(&self) -> Option<Duration> {
        self.last_latency
    }
    /// The local error of the latest probe, if it could not run at all; cleared by the next
    /// probe that ran.
    pub fn local_error(&self) -> Option<&str> {
        self.local_error.as_deref()
    }
    /// Probes that could not run for a local reason, since the check started.
    pub fn local_failures(&self) -> u64 {
        self.local_failures
    }
}

/// A change of a backend's verdict, with a reason fit for a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new verdict.
    pub healthy: bool,
    /// Why, e.g. `http :80 /: status 503 (want 200); 0 of 1 checks up, need 1`.
    pub reason: String,
}

/// A backend's checks and verdict.
#[derive(Debug, Clone)]
pub struct BackendState {
    rule: Rule,
    checks: Vec<CheckState>,
    healthy: bool,
}

impl BackendState {
    /// A backend not yet checked: unhealthy, unless there is nothing to check.
    pub fn new(rule: Rule, checks: Vec<CheckState>) -> Self {
        let healthy = rule.required(checks.len()) == 0;
        Self::with_verdict(rule, checks, healthy)
    }

    /// A backend whose verdict is known from elsewhere: a previous configuration, or a
    /// backend adopted as serving (with [`CheckState::assumed_up`] checks). Call
    /// [`reconfigure`](Self::reconfigure) to reconcile the verdict with the checks.
    pub fn with_verdict(rule: Rule, checks: Vec<CheckState>, healthy: bool) -> Self {
        Self {
            rule,
            checks,
            healthy,
        }
    }

    /// Counts one result of check `index`; returns the backend's transition if there is one.
    /// An index out of range is ignored.
    pub fn record(
        &mut self,
        index: usize,
        result: &Result<Duration, ProbeError>,
    ) -> Option<Transition> {
        let check = self.checks.get_mut(index)?;
        if !check.record(result) {
            return None;
        }
        let cause = match result {
            Ok(_) => None,
            Err(e) => Some(format!("{}: {e}", check.name)),
        };
        self.evaluate(cause)
    }

    /// Replaces the rule and the checks (hot reload; the caller carries over the states of the
    /// checks it keeps). Returns a transition if the verdict changes with the new set.
    pub fn reconfigure(&mut self, rule: Rule, checks: Vec<CheckState>) -> Option<Transition> {
        self.rule = rule;
        self.checks = checks;
        self.evaluate(Some("reconfigured".to_owned()))
    }

    fn evaluate(&mut self, cause: Option<String>) -> Option<Transition> {
        let total = self.checks.len();
        let need = self.rule.required(total);
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        let (up, down) = (count(CheckStatus::Up), count(CheckStatus::Down));
        let healthy = if self.healthy {
            down <= total - need
        } else {
            up >= need
        };
        if healthy == self.healthy {
            return None;
        }
        self.healthy = healthy;
        let tally = self.tally();
        let reason = match cause {
            Some(cause) => format!("{cause}; {tally}"),
            None => tally,
        };
        Some(Transition { healthy, reason })
    }

    /// How the checks stand, e.g. `1 of 2 checks up, need 1`.
    pub fn tally(&self) -> String {
        let total = self.checks.len();
        let need = self.rule.required(total);
        let up = self.checks.iter().filter(|c| c.status == CheckStatus::Up);
        format!("{} of {total} checks up, need {need}", up.count())
    }

    /// The verdict: whether the backend should receive new flows.
    pub fn healthy(&self) -> bool {
        self.healthy
    }
    /// The rule in force.
    pub fn rule(&self) -> Rule {
        self.rule
    }
    /// The checks, in configuration order.
    pub fn checks(&self) -> &[CheckState] {
        &self.checks
    }
    /// Takes the checks out (to carry some over into a [`reconfigure`](Self::reconfigure)).
    pub fn take_checks(&mut self) -> Vec<CheckState> {
        std::mem::take(&mut self.checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Result<Duration, ProbeError> = Ok(Duration::from_millis(3));
    const KO: Result<Duration, ProbeError> = Err(ProbeError::ConnectRefused);

    fn backend(rule: Rule, checks: usize, rise: u32, fall: u32) -> BackendState {
        let checks = (0..checks)
            .map(|i| CheckState::new(format!("tcp :{}", 80 + i), rise, fall))
            .collect();
        BackendState::new(rule, checks)
    }

    /// Feeds results to check `i`, returning the transitions in order.
    fn feed(
        b: &mut BackendState,
        i: usize,
        results: &[&Result<Duration, ProbeError>],
    ) -> Vec<bool> {
        results
            .iter()
            .filter_map(|r| b.record(i, r))
            .map(|t| t.healthy)
            .collect()
    }

    #[test]
    fn check_counts_consecutive_results() {
        let mut c = CheckState::new("tcp :80", 3, 2);
        assert_eq!(c.status(), CheckStatus::Unknown);
        assert!(!c.record(&OK));
        assert!(!c.record(&OK));
        assert!(c.record(&OK), "third success reaches rise");
        assert_eq!(c.status(), CheckStatus::Up);
        assert!(!c.record(&KO));
        assert!(!c.record(&OK), "a success resets the failure count");
        assert!(!c.record(&KO));
        assert!(c.record(&KO));
        assert_eq!(c.status(), CheckStatus::Down);
        assert_eq!(c.last_error(), Some("connect refused"));
        assert_eq!(c.last_latency(), Some(Duration::from_millis(3)));
        assert_eq!((c.successes(), c.failures()), (0, 2));
        assert!(!c.record(&KO), "staying down is not a change");
    }

    #[test]
    fn unknown_check_can_go_straight_down() {
        let mut c = CheckState::new("tcp :80", 2, 1);
        assert!(c.record(&KO));
        assert_eq!(c.status(), CheckStatus::Down);
    }

    #[test]
    fn new_backend_waits_for_rise() {
        let mut b = backend(Rule::All, 1, 2, 3);
        assert!(!b.healthy(), "untested backends get no traffic");
        assert_eq!(feed(&mut b, 0, &[&OK]), Vec::<bool>::new());
        let t = b.record(0, &OK).expect("second success turns it healthy");
        assert_eq!(t.reason, "1 of 1 checks up, need 1");
        assert!(b.healthy());
    }

    #[test]
    fn no_checks_means_always_healthy() {
        let mut b = backend(Rule::All, 0, 2, 2);
        assert!(b.healthy());
        assert_eq!(b.record(0, &KO), None, "out of range is ignored");
        assert!(b.healthy());
    }

    #[test]
    fn fall_then_rise_with_reasons() {
        let mut b = backend(Rule::All, 1, 2, 2);
        feed(&mut b, 0, &[&OK, &OK]);
        assert_eq!(b.record(0, &KO), None);
        let down = b.record(0, &KO).expect("second failure turns it unhealthy");
        assert_eq!(
            down,
            Transition {
                healthy: false,
                reason: "tcp :80: connect refused; 0 of 1 checks up, need 1".into()
            }
        );
        assert_eq!(feed(&mut b, 0, &[&OK, &OK]), [true]);
    }

    #[test]
    fn flapping_never_flips() {
        let mut b = backend(Rule::All, 1, 2, 2);
        feed(&mut b, 0, &[&OK, &OK]);
        let flaps: Vec<_> = (0..20).flat_map(|_| feed(&mut b, 0, &[&KO, &OK])).collect();
        assert!(flaps.is_empty(), "{flaps:?}");
        assert!(b.healthy());
    }

    #[test]
    fn events_only_on_transitions() {
        let mut b = backend(Rule::All, 1, 1, 1);
        let seq = [&OK, &OK, &OK, &KO, &KO, &OK, &KO, &KO, &KO, &OK];
        assert_eq!(feed(&mut b, 0, &seq), [true, false, true, false, true]);
    }

    #[test]
    fn all_rule_needs_every_check() {
        let mut b = backend(Rule::All, 3, 1, 1);
        assert_eq!(feed(&mut b, 0, &[&OK]), Vec::<bool>::new());
        assert_eq!(feed(&mut b, 1, &[&OK]), Vec::<bool>::new());
        assert_eq!(feed(&mut b, 2, &[&OK]), [true]);
        let t = b.record(1, &KO).expect("one failing check is enough");
        assert_eq!(
            t.reason,
            "tcp :81: connect refused; 2 of 3 checks up, need 3"
        );
    }

    #[test]
    fn n_of_m_rule() {
        let mut b = backend(Rule::AtLeast(2), 3, 1, 1);
        assert_eq!(feed(&mut b, 0, &[&OK]), Vec::<bool>::new());
        assert_eq!(feed(&mut b, 2, &[&KO]), Vec::<bool>::new());
        assert_eq!(feed(&mut b, 1, &[&OK]), [true], "2 of 3 is enough");
        assert_eq!(feed(&mut b, 0, &[&KO]), [false], "1 of 3 is not");
        assert_eq!(feed(&mut b, 2, &[&OK]), [true]);
    }

    #[test]
    fn healthy_backend_survives_an_undecided_new_check() {
        let mut b = backend(Rule::All, 1, 1, 1);
        feed(&mut b, 0, &[&OK]);
        let mut checks = b.take_checks();
        checks.push(CheckState::new("http :80 /", 2, 2));
        assert_eq!(b.reconfigure(Rule::All, checks), None);
        assert!(b.healthy(), "an Unknown check does not take it out");
        assert_eq!(feed(&mut b, 1, &[&KO]), Vec::<bool>::new());
        assert_eq!(feed(&mut b, 1, &[&KO]), [false]);
    }

    #[test]
    fn reconfigure_can_flip() {
        let mut b = backend(Rule::All, 2, 1, 1);
        feed(&mut b, 0, &[&OK]);
        feed(&mut b, 1, &[&KO]);
        assert!(!b.healthy());
        let t = b.reconfigure(Rule::AtLeast(1), b.checks().to_vec());
        assert_eq!(
            t,
            Some(Transition {
                healthy: true,
                reason: "reconfigured; 1 of 2 checks up, need 1".into()
            })
        );
    }

    #[test]
    fn local_failures_are_no_evidence() {
        let local: Result<Duration, ProbeError> = Err(ProbeError::Local {
            op: "socket",
            reason: "too many open files".into(),
        });
        let mut b = backend(Rule::All, 1, 1, 2);
        feed(&mut b, 0, &[&OK]);
        assert_eq!(feed(&mut b, 0, &[&local; 10]), Vec::<bool>::new());
        let c = &b.checks()[0];
        assert_eq!(c.status(), CheckStatus::Up);
        assert_eq!(
            (c.successes(), c.failures(), c.local_failures()),
            (1, 0, 10)
        );
        assert_eq!(c.local_error(), Some("local: too many open files (socket)"));
        assert_eq!(feed(&mut b, 0, &[&KO]), Vec::<bool>::new(), "fall is 2");
        assert_eq!(b.checks()[0].local_error(), None, "a probe ran");
        assert_eq!(feed(&mut b, 0, &[&KO]), [false]);
    }

    #[test]
    fn assumed_up_needs_fall_failures() {
        let checks = vec![CheckState::assumed_up("tcp :80", 3, 2)];
        let mut b = BackendState::with_verdict(Rule::All, checks, true);
        assert_eq!(b.reconfigure(Rule::All, b.checks().to_vec()), None);
        assert!(b.healthy());
        assert_eq!(feed(&mut b, 0, &[&KO]), Vec::<bool>::new());
        assert_eq!(feed(&mut b, 0, &[&KO]), [false]);
    }

    #[test]
    fn thresholds_change_keeps_counts() {
        let mut c = CheckState::new("tcp :80", 5, 5);
        c.record(&OK);
        c.record(&OK);
        c.set_thresholds(3, 3);
        assert!(c.record(&OK), "2 kept + 1 reaches the new rise");
    }
}
