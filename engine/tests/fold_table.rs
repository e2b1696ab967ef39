//! `flushguard_engine::path::fold_char` (a table of runs, engine/src/path/fold_table.rs)
//! against the same folding computed from Rust's own Unicode case mappings, for every
//! code point; and, ignored, the generator of that table.
//!
//! Regenerate: `cargo test -p flushguard-engine --test fold_table -- --ignored
//! --nocapture` and paste the printed runs into fold_table.rs.

use flushguard_engine::path::fold_char;

/// The reference: the lowercase of the uppercase, each only when it is one character.
fn fold_std(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut up = c.to_uppercase();
    let u = match (up.next(), up.next()) {
        (Some(u), None) => u,
        _ => c,
    };
    let mut lo = u.to_lowercase();
    match (lo.next(), lo.next()) {
        (Some(l), None) => l,
        _ => u,
    }
}

#[test]
fn the_table_folds_every_code_point_as_unicode_does() {
    let mut differ = 0u32;
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        assert_eq!(fold_char(c), fold_std(c), "U+{:04X}", u32::from(c));
        if fold_std(c) != c {
            differ += 1;
        }
    }
    // Not a vacuous check: about 1 400 characters fold to another one.
    assert!(differ > 1_000, "{differ}");
}

#[test]
#[ignore = "generator: prints the runs of fold_table.rs"]
fn print_fold_runs() {
    let mut runs: Vec<(u32, u32, u32, i64)> = Vec::new(); // start, len, stride, delta
    for cp in 0x80u32..=0x10FFFF {
        let Some(c) = char::from_u32(cp) else {
            continue;
        };
        let f = u32::from(fold_std(c));
        if f == cp {
            continue;
        }
        let delta = i64::from(f) - i64::from(cp);
        if let Some(last) = runs.last_mut() {
            let (s, l, st, d) = *last;
            if d == delta {
                if l == 1 && (cp == s + 1 || cp == s + 2) {
                    last.1 = 2;
                    last.2 = cp - s;
                    continue;
                }
                if l > 1 && cp == s + l * st {
                    last.1 += 1;
                    continue;
                }
            }
        }
        runs.push((cp, 1, 1, delta));
    }
    println!("{} runs", runs.len());
    for (s, l, st, d) in &runs {
        println!("    FoldRun::new(0x{s:04X}, {l}, {st}, {d}),");
    }
}
