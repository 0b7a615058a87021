//! Reload, all or nothing: the new file is validated, and its capacity, the routes of its
//! new backends and its VIPs are checked before anything changes. On any problem the
//! running configuration and its whole view stay, and the problem (FILE:LINE:COL: field)
//! stays reported until a reload succeeds; the same broken file reports it again.

use std::{collections::HashSet, net::IpAddr, time::Instant};

use fulcrum_config::{Config, ConfigDiff};
use tracing::{error, info, warn};

use crate::{
    api::ControlError,
    daemon::chain,
    owner::{Leaving, Owner},
    targets::{self, service_id},
};

impl Owner {
    /// Reads the configuration file again and applies the difference, or nothing.
    pub(crate) fn reload(&mut self) -> Result<(), ControlError> {
        match self.try_reload() {
            Ok(summary) => {
                self.reload_error = None;
                info!(change = %summary, "reloaded");
                self.event("", None, format!("reloaded: {summary}"));
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                error!(error = %message, "reload refused; the running configuration stays");
                self.reload_error = Some(message.clone());
                self.event("", None, format!("reload refused: {message}"));
                Err(e)
            }
        }
    }

    fn try_reload(&mut self) -> Result<String, ControlError> {
        let new = fulcrum_config::load(&self.config_path)
            .map_err(|e| ControlError::Rejected(e.to_string()))?;
        let diff = fulcrum_config::diff(&self.config, &new);
        if diff.instance_changed
            || diff.interfaces_changed
            || diff.xdp_mode_changed
            || diff.api_changed
            || diff.flow_table_changed
            || diff.top_talkers_changed
        {
            return Err(ControlError::Rejected(
                "instance, interfaces, xdp_mode, api, flow_table and top_talkers take effect \
                 at restart only; reload refused"
                    .into(),
            ));
        }
        let mut problems = self.preflight(&new, &diff);
        if diff.flow_sharing_changed {
            problems.extend(crate::flow_sharing::reload_problem(
                self.config.flow_sharing.as_ref(),
                new.flow_sharing.as_ref(),
            ));
        }
        if !problems.is_empty() {
            return Err(ControlError::Rejected(problems.join("\n")));
        }
        let vias = targets::probe_vias(&mut self.lb, &new)
            .map_err(|e| ControlError::Internal(chain(&e)))?;
        // The checker takes all the targets or none.
        if let Err(e) = self.checker.set_targets(targets::targets(&new, &vias)) {
            // The probes of the running configuration go back to how they were.
            if let Err(e) = targets::probe_vias(&mut self.lb, &self.config) {
                warn!(error = %chain(&e), "health probes not restored");
            }
            return Err(ControlError::Rejected(format!("health checks: {e}")));
        }
        let old = std::mem::replace(&mut self.config, new);
        self.reindex();
        self.read_health();
        self.plan_leaving(&old, &diff);
        self.apply_diff(&old, &diff)
            .map_err(|e| ControlError::Internal(chain(&e)))?;
        if diff.flow_sharing_changed
            && let (Some(restart), Some(settings)) = (&self.flow_restart, &self.config.flow_sharing)
        {
            let _ = restart.send(settings.clone());
        }
        Ok(describe(&diff))
    }

    /// Everything that would make applying `new` fail halfway, found before it starts.
    fn preflight(&mut self, new: &Config, diff: &ConfigDiff) -> Vec<String> {
        let mut problems = crate::host::local_vip_problems(new);
        let services = self.lb.service_capacity();
        if new.services.len() > services {
            problems.push(
                new.vip_problem(
                    services,
                    format!(
                        "{} services, but the data plane was loaded with room for {services}; \
                         restart the daemon to grow it",
                        new.services.len()
                    ),
                )
                .to_string(),
            );
        }
        let slots = self.lb.destination_capacity();
        let leaving: usize = self.leaving.values().map(|l| l.len()).sum();
        let mut used = leaving;
        let added: HashSet<&str> = diff.added.iter().map(String::as_str).collect();
        for (i, service) in new.services.iter().enumerate() {
            // Backends already in the data plane were checked when they came, unless the
            // mode they are reached by changes.
            let known: HashSet<IpAddr> = match self.service(&service.name) {
                Some(old)
                    if !added.contains(service.name.as_str())
                        && old.forwarding == service.forwarding =>
                {
                    old.backends.iter().map(|b| b.address).collect()
                }
                _ => HashSet::new(),
            };
            // Each backend by its service's rule: on link for L2 DSR, routed when tunnelled.
            let lib_service = crate::targets::service(service);
            for (j, b) in service.backends.iter().enumerate() {
                used += 1;
                if used == slots + 1 {
                    problems.push(
                        new.backend_problem(
                            i,
                            j,
                            format!(
                                "more backends than the {slots} the data plane was loaded \
                                 with room for"
                            ),
                        )
                        .to_string(),
                    );
                }
                if !known.contains(&b.address)
                    && let Err(e) = self.lb.check_destination(&lib_service, b.address)
                {
                    problems.push(new.backend_problem(i, j, chain(&e)).to_string());
                }
            }
        }
        problems
    }

    /// Removed backends of services with a drain period start leaving; backends configured
    /// again stop leaving; removed services take their leaving backends with them.
    fn plan_leaving(&mut self, old: &Config, diff: &ConfigDiff) {
        for name in &diff.removed {
            self.leaving.remove(name);
            self.unresolved.remove(name);
            self.drained_by_api.retain(|(s, _)| s != name);
        }
        let now = Instant::now();
        for change in &diff.changed {
            let (Some(new), Some(before)) = (
                self.service(&change.name).cloned(),
                old.services.iter().find(|s| s.name == change.name),
            ) else {
                continue;
            };
            let id = service_id(&new);
            let starting: Vec<Leaving> = match new.drain_period.is_zero() {
                true => Vec::new(),
                false => (change.backends_removed.iter())
                    .filter(|a| self.lb.is_drained(&id, **a).is_ok())
                    .filter_map(|a| before.backends.iter().find(|b| b.address == *a))
                    .map(|b| Leaving {
                        backend: b.clone(),
                        until: now + new.drain_period,
                    })
                    .collect(),
            };
            let leaving = self.leaving.entry(change.name.clone()).or_default();
            for address in &change.backends_added {
                leaving.remove(address);
            }
            for l in starting {
                leaving.insert(l.backend.address, l);
            }
            for address in &change.backends_removed {
                self.drained_by_api.remove(&(change.name.clone(), *address));
            }
        }
        self.leaving.retain(|_, l| !l.is_empty());
    }

    /// Removed services go, added ones come, changed ones are synced; services that did not
    /// change are not touched.
    fn apply_diff(
        &mut self,
        old: &Config,
        diff: &ConfigDiff,
    ) -> Result<(), fulcrum::BalancerError> {
        for name in &diff.removed {
            if let Some(service) = old.services.iter().find(|s| &s.name == name) {
                self.lb.remove_service(&service_id(service))?;
            }
        }
        for name in &diff.added {
            if let Some(service) = self.service(name).cloned() {
                self.lb.add_service(targets::service(&service))?;
            }
            self.sync(name)?;
        }
        for change in &diff.changed {
            if (change.scheduler_changed || change.forwarding_changed || change.icmp_echo_changed)
                && let Some(service) = self.service(&change.name).cloned()
            {
                self.lb.update_service(targets::service(&service))?;
            }
            self.sync(&change.name)?;
        }
        Ok(())
    }
}

fn describe(diff: &ConfigDiff) -> String {
    if diff.is_empty() {
        return "no change".into();
    }
    let mut parts = Vec::new();
    if !diff.added.is_empty() {
        parts.push(format!("added {}", diff.added.join(", ")));
    }
    if !diff.removed.is_empty() {
        parts.push(format!("removed {}", diff.removed.join(", ")));
    }
    if diff.bgp_changed {
        parts.push("bgp reconfigured".to_owned());
    }
    if diff.flow_sharing_changed {
        parts.push("flow sharing restarted".into());
    }
    for c in &diff.changed {
        let mut part = format!(
            "{}: +{} -{} backends",
            c.name,
            c.backends_added.len(),
            c.backends_removed.len()
        );
        if c.forwarding_changed {
            part.push_str(", forwarding changed");
        }
        if c.icmp_echo_changed {
            part.push_str(", icmp_echo changed");
        }
        parts.push(part);
    }
    parts.join("; ")
}
