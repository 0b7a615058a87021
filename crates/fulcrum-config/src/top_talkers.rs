//! `top_talkers:`: which client prefixes are counted per service, and how often a packet
//! is sampled; kept apart from the rest of the file like `flow_sharing`.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::validate::Checker;

/// Top talkers: the busiest client prefixes per service, in packets and new flows per
/// second. On by default; `sample: 0` turns the counting off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopTalkers {
    /// `ipv4_prefixes` (`[24, 20]`): IPv4 prefix lengths reported, 1 to 32, each once.
    /// The data plane counts at the longest; shorter ones are sums of it.
    pub ipv4_prefixes: Vec<u8>,
    /// `ipv6_prefixes` (`[48]`): IPv6 prefix lengths, 1 to 128, likewise.
    pub ipv6_prefixes: Vec<u8>,
    /// `top` (`10`): prefixes kept per service and prefix length, which bounds the
    /// series in `/metrics`.
    pub top: u32,
    /// `sample` (`16`): 1 in this many forwarded packets is counted and the counts
    /// scaled back; 0 counts nothing. Fixed when the program is loaded: a change takes a
    /// restart.
    pub sample: u32,
}

impl TopTalkers {
    /// `top` when not given.
    pub const DEFAULT_TOP: u32 = 10;
    /// `sample` when not given.
    pub const DEFAULT_SAMPLE: u32 = 16;
    /// Most `top` allowed: each is a series per service and length in `/metrics`.
    pub const MAX_TOP: u32 = 100;

    /// The longest IPv4 prefix, which the data plane counts by (24 when none is listed).
    pub fn ipv4_longest(&self) -> u8 {
        self.ipv4_prefixes.iter().copied().max().unwrap_or(24)
    }

    /// The longest IPv6 prefix (48 when none is listed).
    pub fn ipv6_longest(&self) -> u8 {
        self.ipv6_prefixes.iter().copied().max().unwrap_or(48)
    }
}

impl Default for TopTalkers {
    fn default() -> Self {
        Self {
            ipv4_prefixes: vec![24, 20],
            ipv6_prefixes: vec![48],
            top: Self::DEFAULT_TOP,
            sample: Self::DEFAULT_SAMPLE,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTopTalkers {
    ipv4_prefixes: Option<Vec<Spanned<u8>>>,
    ipv6_prefixes: Option<Vec<Spanned<u8>>>,
    top: Option<Spanned<u32>>,
    sample: Option<Spanned<u32>>,
}

impl Checker<'_> {
    pub(crate) fn top_talkers(&mut self, raw: &Spanned<RawTopTalkers>) -> Option<TopTalkers> {
        let t = &raw.value;
        let d = TopTalkers::default();
        let v4 = self.prefixes(
            t.ipv4_prefixes.as_ref(),
            "ipv4_prefixes",
            32,
            d.ipv4_prefixes,
        );
        let v6 = self.prefixes(
            t.ipv6_prefixes.as_ref(),
            "ipv6_prefixes",
            128,
            d.ipv6_prefixes,
        );
        let top = match &t.top {
            None => Some(TopTalkers::DEFAULT_TOP),
            Some(n) if (1..=TopTalkers::MAX_TOP).contains(&n.value) => Some(n.value),
            Some(n) => self.report(
                &n.referenced,
                "top_talkers.top",
                format!(
                    "{} is out of range; keep 1 to {} prefixes per service, like 10",
                    n.value,
                    TopTalkers::MAX_TOP
                ),
            ),
        };
        Some(TopTalkers {
            ipv4_prefixes: v4?,
            ipv6_prefixes: v6?,
            top: top?,
            sample: t
                .sample
                .as_ref()
                .map_or(TopTalkers::DEFAULT_SAMPLE, |s| s.value),
        })
    }

    fn prefixes(
        &mut self,
        raw: Option<&Vec<Spanned<u8>>>,
        field: &str,
        max: u8,
        default: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let Some(raw) = raw else {
            return Some(default);
        };
        let mut ok = true;
        let mut out = Vec::new();
        for (i, len) in raw.iter().enumerate() {
            let path = format!("top_talkers.{field}[{i}]");
            if !(1..=max).contains(&len.value) {
                ok = false;
                self.report::<()>(
                    &len.referenced,
                    path,
                    format!("/{} is not a prefix length; give 1 to {max}", len.value),
                );
            } else if out.contains(&len.value) {
                ok = false;
                self.report::<()>(
                    &len.referenced,
                    path,
                    format!("/{} is already listed; name each length once", len.value),
                );
            } else {
                out.push(len.value);
            }
        }
        ok.then_some(out)
    }
}
