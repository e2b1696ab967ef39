//! `flushctl status`: driver and protocol version, capabilities, policy generation,
//! instances and event ring state.

use flushguard_engine::protocol::{StatusFlags, PROTOCOL_VERSION};
use serde::Serialize;

use crate::error::CliError;
use crate::exit;
use crate::outln;
use crate::output::{kv_table, print_json};
use crate::port::{self, PortOptions};

#[derive(Serialize)]
struct StatusJson {
    port: &'static str,
    driver_version: String,
    protocol_version: u32,
    client_protocol_version: u32,
    capabilities: Vec<&'static str>,
    policy_generation: u64,
    rules: u32,
    policy_loaded: bool,
    policy_from_registry: bool,
    attach_local_volumes: bool,
    instances: u32,
    next_event_seq: u64,
    events_dropped: u64,
}

pub(super) fn status(opts: &PortOptions, json: bool) -> Result<u8, CliError> {
    let mut c = port::open(opts)?;
    let v = c.version()?;
    let s = c.status()?;
    let caps: Vec<&'static str> = v
        .capabilities
        .iter_names()
        .map(|(n, _)| match n {
            "FLT_FLUSH_BUFFERS2" => "FltFlushBuffers2",
            _ => "unknown",
        })
        .collect();
    let out = StatusJson {
        port: c.describe(),
        driver_version: format!("{}.{}.{}", v.major, v.minor, v.patch),
        protocol_version: v.protocol_version,
        client_protocol_version: PROTOCOL_VERSION,
        capabilities: caps,
        policy_generation: s.generation,
        rules: s.rule_count,
        policy_loaded: s.flags.contains(StatusFlags::POLICY_LOADED),
        policy_from_registry: s.flags.contains(StatusFlags::FROM_REGISTRY),
        attach_local_volumes: s.flags.contains(StatusFlags::ATTACH_LOCAL_VOLUMES),
        instances: s.instances,
        next_event_seq: s.next_event_seq,
        events_dropped: s.events_dropped,
    };
    if json {
        print_json(&out).map_err(CliError::io_while("stdout"))?;
        return Ok(exit::OK);
    }
    let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
    outln!(
        "{}",
        kv_table(&[
            ("FlushGuard", format!("loaded ({})", out.port)),
            ("Driver version", out.driver_version.clone()),
            (
                "Protocol version",
                format!("{} (flushctl {})", out.protocol_version, PROTOCOL_VERSION)
            ),
            (
                "Capabilities",
                if out.capabilities.is_empty() {
                    "-".into()
                } else {
                    out.capabilities.join(", ")
                }
            ),
            (
                "Policy",
                format!(
                    "generation {}, {} rule(s){}",
                    out.policy_generation,
                    out.rules,
                    if out.policy_loaded {
                        ""
                    } else {
                        " (pass-through: no policy applied)"
                    }
                )
            ),
            ("Loaded from registry", yes(out.policy_from_registry)),
            ("Local volumes attached", yes(out.attach_local_volumes)),
            ("Instances", out.instances.to_string()),
            (
                "Events",
                format!(
                    "next sequence {}, {} dropped",
                    out.next_event_seq, out.events_dropped
                )
            ),
        ])
    );
    Ok(exit::OK)
}
