//! Top talkers in the daemon: the owner samples the data plane's per-prefix counts every
//! tick into a watch that `GET /api/v1/top-talkers`, `/metrics` and the console read.

use std::{collections::HashMap, sync::Arc, time::Instant};

use fulcrum::{Balancer, ServiceId, TalkerSampling};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics::Exposition;

/// What `GET /api/v1/top-talkers` returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopTalkersStatus {
    /// 1 in this many packets is counted (0: off, and `services` stays empty).
    pub sample: u32,
    /// Prefixes kept per service and prefix length.
    pub top: u32,
    pub ipv4_prefixes: Vec<u8>,
    pub ipv6_prefixes: Vec<u8>,
    /// Services with traffic in the last interval, by name.
    pub services: Vec<ServiceTalkersStatus>,
}

/// One service's busiest prefixes, per prefix length busiest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceTalkersStatus {
    pub service: String,
    pub talkers: Vec<TalkerStatus>,
}

/// A client prefix's estimated rates (counts are sampled and scaled).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TalkerStatus {
    /// Like `10.1.2.0/24`.
    pub prefix: String,
    pub packets_per_second: f64,
    pub new_flows_per_second: f64,
}

/// The owner's side: the rates' state and where they are published.
pub(crate) struct Sampler {
    rates: fulcrum::TopTalkers,
    base: TopTalkersStatus,
    pub(crate) view: watch::Sender<Arc<TopTalkersStatus>>,
}

impl Sampler {
    pub(crate) fn new(config: &fulcrum_config::TopTalkers) -> Self {
        let base = TopTalkersStatus {
            sample: config.sample,
            top: config.top,
            ipv4_prefixes: config.ipv4_prefixes.clone(),
            ipv6_prefixes: config.ipv6_prefixes.clone(),
            services: Vec::new(),
        };
        Self {
            rates: fulcrum::TopTalkers::new(
                config.ipv4_prefixes.clone(),
                config.ipv6_prefixes.clone(),
                config.top as usize,
            ),
            view: watch::Sender::new(Arc::new(base.clone())),
            base,
        }
    }

    /// What the data plane is loaded to count for `config`.
    pub(crate) fn sampling(config: &fulcrum_config::TopTalkers) -> TalkerSampling {
        TalkerSampling {
            sample: config.sample,
            ipv4_prefix: config.ipv4_longest(),
            ipv6_prefix: config.ipv6_longest(),
        }
    }

    /// Reads the counts and publishes the rates since the last call.
    pub(crate) fn sample(&mut self, lb: &Balancer, names: &HashMap<ServiceId, String>) {
        if self.base.sample == 0 {
            return;
        }
        let counts = match lb.talker_counts() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading top talkers failed");
                return;
            }
        };
        let rates = self.rates.update(counts, Instant::now());
        let mut status = self.base.clone();
        status.services = rates
            .into_iter()
            .filter_map(|s| {
                Some(ServiceTalkersStatus {
                    service: names.get(&s.service)?.clone(),
                    talkers: (s.talkers.iter())
                        .map(|t| TalkerStatus {
                            prefix: format!("{}/{}", t.prefix, t.len),
                            packets_per_second: t.packets_per_second,
                            new_flows_per_second: t.new_flows_per_second,
                        })
                        .collect(),
                })
            })
            .collect();
        status.services.sort_by(|a, b| a.service.cmp(&b.service));
        self.view.send_replace(Arc::new(status));
    }
}

/// `fulcrum_top_talker_*`: at most `top` series per service, prefix length and family.
pub fn render(status: &TopTalkersStatus) -> String {
    let mut out = Exposition::default();
    if status.sample == 0 {
        return out.finish();
    }
    type Pick = fn(&TalkerStatus) -> f64;
    let families: [(&str, &str, Pick); 2] = [
        (
            "fulcrum_top_talker_packets_per_second",
            "Estimated packets per second from a client prefix, for the busiest prefixes of \
             each service (sampled).",
            |t| t.packets_per_second,
        ),
        (
            "fulcrum_top_talker_new_flows_per_second",
            "Estimated new flows per second from a client prefix, for the busiest prefixes \
             of each service (sampled).",
            |t| t.new_flows_per_second,
        ),
    ];
    for (name, help, pick) in families {
        out.family(name, "gauge", help);
        for s in &status.services {
            for t in &s.talkers {
                out.sample(
                    name,
                    &[("service", &s.service), ("prefix", &t.prefix)],
                    pick(t),
                );
            }
        }
    }
    out.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two services, one with an IPv4 /24 and /20 and an IPv6 /48.
    pub(crate) fn status() -> TopTalkersStatus {
        let t = |prefix: &str, pps, nfps| TalkerStatus {
            prefix: prefix.into(),
            packets_per_second: pps,
            new_flows_per_second: nfps,
        };
        TopTalkersStatus {
            sample: 16,
            top: 2,
            ipv4_prefixes: vec![24, 20],
            ipv6_prefixes: vec![48],
            services: vec![
                ServiceTalkersStatus {
                    service: "web".into(),
                    talkers: vec![
                        t("10.1.0.0/20", 900.0, 40.0),
                        t("10.1.1.0/24", 800.0, 32.0),
                        t("10.1.2.0/24", 100.0, 8.0),
                        t("2001:db8:11::/48", 16.0, 0.0),
                    ],
                },
                ServiceTalkersStatus {
                    service: "dns \"udp\"".into(),
                    talkers: vec![t("192.0.2.0/24", 48.0, 48.0)],
                },
            ],
        }
    }

    #[test]
    fn one_series_per_reported_prefix() {
        let text = render(&status());
        assert!(text.contains(
            "fulcrum_top_talker_packets_per_second{service=\"web\",prefix=\"10.1.1.0/24\"} 800\n"
        ));
        assert!(text.contains(
            "fulcrum_top_talker_new_flows_per_second{service=\"dns \\\"udp\\\"\",prefix=\"192.0.2.0/24\"} 48\n"
        ));
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(series, 2 * 5);
    }

    #[test]
    fn off_renders_nothing() {
        assert_eq!(render(&TopTalkersStatus::default()), "");
    }
}
