//! Property tests of the trace parsers: numbers in every locale's grouping read back
//! exactly, and no input makes the Detail parsers or the CSV reader panic.

use flushctl::trace::detail::{parse_create, parse_grouped_int, parse_rename, parse_write};
use flushctl::trace::{Item, TraceReader};
use proptest::prelude::*;

fn grouped(n: u64, sep: char) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

proptest! {
    #[test]
    fn grouped_numbers_round_trip(n in 0u64..=i64::MAX as u64, sep in prop::sample::select(vec![',', '.', '\'', ' ', '\u{a0}', '\u{202f}'])) {
        prop_assert_eq!(parse_grouped_int("Length", &grouped(n, sep)).unwrap(), n as i64);
    }

    #[test]
    fn write_details_round_trip(off in 0u64..1u64 << 50, len in 0u64..1u64 << 32, paging in any::<bool>(), wt in any::<bool>()) {
        let mut flags = Vec::new();
        if paging { flags.push("Non-cached"); flags.push("Paging I/O"); }
        if wt { flags.push("Write Through"); }
        let mut d = format!("Offset: {}, Length: {}", grouped(off, ','), grouped(len, '\u{a0}'));
        if !flags.is_empty() {
            d.push_str(", I/O Flags: ");
            d.push_str(&flags.join(", "));
        }
        d.push_str(", Priority: Normal");
        let w = parse_write(&d).unwrap();
        prop_assert_eq!((w.offset, w.length), (off as i64, len));
        prop_assert_eq!(w.irp_flags & 0x2 != 0, paging);
        prop_assert_eq!(w.operation_flags & 0x4 != 0, wt);
    }

    #[test]
    fn detail_parsers_never_panic(s in ".{0,200}") {
        let _ = parse_write(&s);
        let _ = parse_create(&s);
        let _ = parse_rename(&s);
        let _ = parse_grouped_int("Offset", &s);
    }

    #[test]
    fn reader_never_panics_and_numbers_lines(body in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut input = b"\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\r\n".to_vec();
        input.extend_from_slice(&body);
        let mut r = TraceReader::new(&input[..]).unwrap();
        let lines = input.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        while let Ok(Some(item)) = r.next_event() {
            match item {
                Item::Malformed(m) => prop_assert!(m.line >= 2 && m.line <= lines),
                Item::Event(e) => prop_assert!(e.line >= 2 && e.line <= lines),
                Item::Other => {}
            }
        }
    }
}
