//! The top talkers lines of `fulcrum status`, from `GET /api/v1/top-talkers`: where a
//! flood comes from, without leaving the terminal.

use std::fmt::Write as _;

use serde_json::Value;

use super::table::si;

/// Prefixes shown per service and prefix length; the API and `/metrics` have them all.
const SHOWN: usize = 3;

/// A heading, then per service with traffic the busiest prefixes of each length; nothing
/// when no service has any (or counting is off).
pub fn render(talkers: &Value) -> String {
    let mut out = String::new();
    for service in list(talkers, "services") {
        let rows = list(service, "talkers");
        if rows.is_empty() {
            continue;
        }
        let name = service
            .get("service")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let _ = writeln!(out, "  {name}");
        // The API lists each prefix length busiest first, one length after another.
        let mut shown_of_length = (None, 0);
        for t in rows {
            let prefix = t.get("prefix").and_then(Value::as_str).unwrap_or("?");
            let length = prefix.rsplit_once('/').map(|(_, l)| l);
            if shown_of_length.0 != Some(length) {
                shown_of_length = (Some(length), 0);
            }
            shown_of_length.1 += 1;
            if shown_of_length.1 > SHOWN {
                continue;
            }
            let rate = |k: &str| si(t.get(k).and_then(Value::as_f64).unwrap_or(0.0));
            let _ = writeln!(
                out,
                "    {prefix:<24} {:>6} pkt/s {:>6} new flows/s",
                rate("packets_per_second"),
                rate("new_flows_per_second"),
            );
        }
    }
    if out.is_empty() {
        return out;
    }
    let sample = talkers.get("sample").and_then(Value::as_u64).unwrap_or(0);
    format!("\ntop talkers (1 in {sample} packets sampled; GET /api/v1/top-talkers for all)\n{out}")
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_prefixes_of_each_length_per_service() {
        let talkers: Value = serde_json::from_str(
            r#"{"sample":16,"top":10,"ipv4_prefixes":[24,20],"ipv6_prefixes":[48],
                "services":[{"service":"web","talkers":[
                  {"prefix":"10.200.5.0/24","packets_per_second":120000.0,"new_flows_per_second":119000.0},
                  {"prefix":"10.201.7.0/24","packets_per_second":900.0,"new_flows_per_second":3.0},
                  {"prefix":"10.202.7.0/24","packets_per_second":80.0,"new_flows_per_second":0.0},
                  {"prefix":"10.203.7.0/24","packets_per_second":16.0,"new_flows_per_second":0.0},
                  {"prefix":"10.200.0.0/20","packets_per_second":120000.0,"new_flows_per_second":119000.0}]},
                 {"service":"dns","talkers":[]}]}"#,
        )
        .unwrap();
        let text = render(&talkers);
        let want = "
top talkers (1 in 16 packets sampled; GET /api/v1/top-talkers for all)
  web
    10.200.5.0/24              120k pkt/s   119k new flows/s
    10.201.7.0/24               900 pkt/s    3.0 new flows/s
    10.202.7.0/24                80 pkt/s      0 new flows/s
    10.200.0.0/20              120k pkt/s   119k new flows/s
";
        assert_eq!(text, want);
    }

    #[test]
    fn nothing_without_traffic() {
        let talkers: Value =
            serde_json::from_str(r#"{"sample":16,"services":[{"service":"web","talkers":[]}]}"#)
                .unwrap();
        assert_eq!(render(&talkers), "");
        assert_eq!(render(&Value::Null), "");
    }
}
