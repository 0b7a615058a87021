//! `flow_table:` as the operator writes it: the default, a value, and the messages.

use super::*;

fn with(section: &str) -> Result<Config, Vec<String>> {
    parse(&format!("interfaces: [eth0]\n{section}"), "f.yaml")
        .map_err(|e| e.problems().iter().map(ToString::to_string).collect())
}

#[test]
fn without_the_section_the_budget_is_the_default() {
    let config = with("").expect("valid");
    assert_eq!(config.flow_table.insert_budget, 10_000);
    assert_eq!(config.flow_table, FlowTable::default());
}

#[test]
fn a_budget_is_taken_as_written() {
    let config = with("flow_table:\n  insert_budget: 2500\n").expect("valid");
    assert_eq!(config.flow_table.insert_budget, 2500);
    let config = with("flow_table: {}\n").expect("valid");
    assert_eq!(config.flow_table.insert_budget, 10_000);
}

#[test]
fn a_zero_budget_is_refused_at_its_line() {
    let problems = with("flow_table:\n  insert_budget: 0\n").expect_err("rejected");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("f.yaml:3:")
            && problems[0].contains("flow_table.insert_budget")
            && problems[0].contains("never pin"),
        "{}",
        problems[0]
    );
}

#[test]
fn unknown_fields_and_bad_values_are_refused_with_their_place() {
    for (section, want) in [
        ("flow_table:\n  insert_budgets: 5\n", "insert_budgets"),
        ("flow_table:\n  insert_budget: -1\n", "f.yaml:3"),
        ("flow_table:\n  insert_budget: lots\n", "f.yaml:3"),
    ] {
        let problems = with(section).expect_err(section);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{section}: {problems:#?}"
        );
    }
}

#[test]
fn a_changed_budget_is_a_difference_a_reload_sees() {
    let old = with("").expect("valid");
    let new = with("flow_table:\n  insert_budget: 500\n").expect("valid");
    assert!(diff(&old, &new).flow_table_changed);
    assert!(diff(&old, &old).is_empty());
    let talkers = with("top_talkers:\n  sample: 4\n").expect("valid");
    assert!(diff(&old, &talkers).top_talkers_changed);
    assert!(!diff(&old, &talkers).flow_table_changed);
}
