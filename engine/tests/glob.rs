//! The path glob matcher against a naive recursive reference.
#![allow(missing_docs)]

use flushguard_engine::path::{glob_component, PathGlob};
use proptest::prelude::*;

/// Reference: one component, `*` and `?`, by plain recursion.
fn ref_comp(p: &[char], s: &[char]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some(('*', rest)) => (0..=s.len()).any(|i| ref_comp(rest, &s[i..])),
        Some(('?', rest)) => !s.is_empty() && ref_comp(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && ref_comp(rest, &s[1..]),
    }
}

/// Reference: components, `**` = zero or more components.
fn ref_path(p: &[&str], s: &[&str]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((&"**", rest)) => (0..=s.len()).any(|i| ref_path(rest, &s[i..])),
        Some((c, rest)) => {
            !s.is_empty() && {
                let pc: Vec<char> = c.chars().collect();
                let sc: Vec<char> = s[0].chars().collect();
                ref_comp(&pc, &sc) && ref_path(rest, &s[1..])
            }
        }
    }
}

fn comp_pat() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("**".to_string()),
        6 => "[ab.*?]{1,4}".prop_filter("no ** inside, no dot-only", |s| !s.contains("**") && !s.chars().all(|c| c == '.')),
    ]
}

fn comp_name() -> impl Strategy<Value = String> {
    "[ab.]{1,4}".prop_filter("not dot-only, no trailing dot", |s| {
        !s.chars().all(|c| c == '.') && !s.ends_with('.')
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn component_glob_matches_reference(p in "[ab*?]{0,6}", s in "[ab]{0,6}") {
        let pc: Vec<char> = p.chars().collect();
        let sc: Vec<char> = s.chars().collect();
        prop_assert_eq!(glob_component(&p, &s), ref_comp(&pc, &sc));
    }

    #[test]
    fn path_glob_matches_reference(
        pat in prop::collection::vec(comp_pat(), 1..5),
        path in prop::collection::vec(comp_name(), 0..5),
    ) {
        let pattern = pat.join("/");
        let trimmed: Vec<&str> = pat.iter().map(|c| c.trim_end_matches('.')).collect();
        prop_assume!(trimmed.iter().all(|c| !c.is_empty()));
        let g = PathGlob::new(&pattern).unwrap();
        let rel = path.join("\\");
        let comps: Vec<&str> = path.iter().map(String::as_str).collect();
        prop_assert_eq!(g.matches(&rel), ref_path(&trimmed, &comps), "{} vs {}", pattern, rel);
    }
}
