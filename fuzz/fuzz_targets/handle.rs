//! The port handler on arbitrary requests and reply sizes: must not panic, must
//! never report more reply bytes than the buffer holds, and a failed request
//! must leave the policy (generation and blob) and the counters unchanged.
#![no_main]

use flushguard_engine::protocol::message::encode_request;
use flushguard_engine::protocol::{Command, RequestFlags};
use flushguard_engine::{handle, Policy, State};
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
[default]
mode = "audit"
audit-mode = "flush-on-close"

[[rule]]
name = "db"
provider = "smb"
share = '\\fs1\data'
path = "**/*.db"
mode = "write-through"

[[rule]]
name = "logs"
extensions = ["log"]
mode = "flush-after-write"
method = "native"
flush = "no-sync"
"#;

fn clock() -> u64 {
    1
}

fn blob() -> &'static [u8] {
    static BLOB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BLOB.get_or_init(|| Policy::from_toml_str(POLICY).unwrap().encode().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let st = State::with_event_capacity(clock, (0, 1, 0), 4);
    st.load_registry_policy(blob()).unwrap();
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let cap = [0usize, 8, 16, 20, 32, 56, 64, 300, 4096, 65536][usize::from(sel % 10)];
    // Half the inputs get a valid header around the rest (deeper coverage).
    let req = if sel & 0x80 != 0 {
        let cmd = Command::from_code(u16::from(sel >> 4 & 0x7) % 7).unwrap();
        let flags = RequestFlags::from_bits_retain(u16::from(sel >> 3 & 1));
        let mut out = vec![0u8; 16 + rest.len()];
        match encode_request(cmd, flags, rest, &mut out) {
            Ok(n) => out[..n].to_vec(),
            Err(_) => return,
        }
    } else {
        rest.to_vec()
    };
    let before = (
        st.policy().generation(),
        st.policy().blob().to_vec(),
        st.snapshot(0, 16).ok(),
    );
    let mut reply = vec![0u8; cap];
    match handle(&st, &req, &mut reply) {
        Ok(out) => assert!(out.reply_len <= cap),
        Err(_) => {
            let after = (
                st.policy().generation(),
                st.policy().blob().to_vec(),
                st.snapshot(0, 16).ok(),
            );
            assert_eq!(before, after, "failed request changed state");
        }
    }
});
