//! `top_talkers:`: defaults, every field, and the problems of each.

use super::{EXAMPLE, problem, valid};
use crate::TopTalkers;

#[test]
fn on_by_default() {
    let t = valid(EXAMPLE).top_talkers;
    assert_eq!(t, TopTalkers::default());
    assert_eq!((t.ipv4_prefixes, t.ipv6_prefixes), (vec![24, 20], vec![48]));
    assert_eq!((t.top, t.sample), (10, 16));
}

#[test]
fn every_field_is_read() {
    let t = valid(&format!(
        "{EXAMPLE}top_talkers:\n  ipv4_prefixes: [16, 28]\n  ipv6_prefixes: [56, 32]\n  \
         top: 3\n  sample: 0\n"
    ))
    .top_talkers;
    assert_eq!(
        t,
        TopTalkers {
            ipv4_prefixes: vec![16, 28],
            ipv6_prefixes: vec![56, 32],
            top: 3,
            sample: 0,
        }
    );
    assert_eq!((t.ipv4_longest(), t.ipv6_longest()), (28, 56));
}

#[test]
fn problems_name_the_line() {
    let lines = EXAMPLE.lines().count();
    let at = |text: &str| problem(&format!("{EXAMPLE}top_talkers:\n{text}"));
    assert_eq!(
        at("  ipv4_prefixes: [24, 33]\n"),
        format!(
            "f.yaml:{}:23: top_talkers.ipv4_prefixes[1]: /33 is not a prefix length; give 1 \
             to 32",
            lines + 2
        )
    );
    assert_eq!(
        at("  ipv6_prefixes: [48, 48]\n"),
        format!(
            "f.yaml:{}:23: top_talkers.ipv6_prefixes[1]: /48 is already listed; name each \
             length once",
            lines + 2
        )
    );
    assert_eq!(
        at("  top: 0\n"),
        format!(
            "f.yaml:{}:8: top_talkers.top: 0 is out of range; keep 1 to 100 prefixes per \
             service, like 10",
            lines + 2
        )
    );
}
