//! The port message handler: request bytes in, reply bytes out.
//!
//! `handle` is what the driver's MessageNotifyCallback calls on the kernel copy
//! of the user buffers (DESIGN §3: copied in and out once through the SEH shim),
//! and what flushctl's in-process port calls in tests, replay and explain.
//! Validation order: request length, header, body, reply buffer size; only then
//! does a command run. Every error leaves policy, generation, counters and the
//! event ring unchanged; SetPolicy is all or nothing.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use flushguard_protocol::codec::Writer;
use flushguard_protocol::events::{EventKind, EventRecord, EventsReplyHeader};
use flushguard_protocol::message::check_output_buffer;
use flushguard_protocol::stats::{StatsReplyHeader, CALLBACK_COUNTER_COUNT};
use flushguard_protocol::{
    Capabilities, Command, DecodeError, EventsRequest, NtStatus, ReplyHeader, RequestFlags,
    RequestHeader, SetPolicyResult, StatsRequest, StatusInfo, VersionInfo, PROTOCOL_VERSION,
};

use crate::matcher::CompiledPolicy;

pub use crate::state::{PolicyStore, State};

/// What the driver must do after a successful `handle`.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Bytes written to the reply buffer (`ReturnOutputBufferLength`).
    pub reply_len: usize,
    /// SetPolicy with [`RequestFlags::PERSIST`] succeeded: the policy now in force.
    /// [`handle_persisting`] has already stored its [`CompiledPolicy::blob`] (before
    /// publishing it); after [`handle`] the caller still has to store it
    /// (`flushguard_protocol::REGISTRY_POLICY_VALUE`, PASSIVE_LEVEL), and a failure
    /// then can no longer undo the change.
    pub persist: Option<Arc<CompiledPolicy>>,
}

fn too_small(needed: usize, got: usize) -> NtStatus {
    DecodeError::OutputTooSmall {
        needed: needed as u32,
        got: got as u32,
    }
    .ntstatus()
}

/// Handles one request. `reply` is the (kernel copy of the) output buffer.
///
/// Stores nothing: for a persisted SetPolicy the new policy is in force on return
/// and [`Outcome::persist`] is what the caller must store. The driver uses
/// [`handle_persisting`] instead, which stores first and publishes only then.
///
/// Returns the reply length and, for a persisted SetPolicy, the policy to store.
/// Errors (state unchanged): every [`DecodeError`] class of the request via
/// [`DecodeError::ntstatus`]; `STATUS_BUFFER_TOO_SMALL` when `reply` cannot hold
/// the reply; any policy error status for SetPolicy; `STATUS_INSUFFICIENT_RESOURCES`
/// when SetPolicy's decoded / compiled policy or GetStats' snapshot could not be
/// allocated. IRQL: PASSIVE_LEVEL.
pub fn handle(state: &State, request: &[u8], reply: &mut [u8]) -> Result<Outcome, NtStatus> {
    handle_inner(state, request, reply, None)
}

/// [`handle`], with a persisted SetPolicy made all or nothing: after validation
/// the blob goes to `store` (the driver's registry write), and only if that
/// succeeds does the new policy take effect (generation bumped, `PolicyChanged`
/// event). `store` is called for nothing else.
///
/// Errors: as [`handle`]; and the status `store` returns, in which case the policy,
/// generation and reply buffer are unchanged, a `RegistryPolicyRejected` event
/// (`value` = [`flushguard_protocol::events::REGISTRY_STORE`]) is recorded and
/// `CallbackCounter::PolicyStoreFailed` counted. IRQL: PASSIVE_LEVEL.
pub fn handle_persisting(
    state: &State,
    request: &[u8],
    reply: &mut [u8],
    store: PolicyStore<'_>,
) -> Result<Outcome, NtStatus> {
    handle_inner(state, request, reply, Some(store))
}

fn handle_inner(
    state: &State,
    request: &[u8],
    reply: &mut [u8],
    store: Option<PolicyStore<'_>>,
) -> Result<Outcome, NtStatus> {
    let (hdr, body) = RequestHeader::decode(request).map_err(|e| e.ntstatus())?;
    if reply.len() < ReplyHeader::SIZE {
        return Err(too_small(ReplyHeader::SIZE, reply.len()));
    }
    let room = reply.len() - ReplyHeader::SIZE;
    let mut persist = None;
    let body_len = {
        let (_, out) = reply.split_at_mut(ReplyHeader::SIZE);
        let mut w = Writer::new(out);
        let res: Result<(), DecodeError> = match hdr.command {
            Command::GetVersion => {
                if room < VersionInfo::SIZE {
                    return Err(too_small(
                        ReplyHeader::SIZE + VersionInfo::SIZE,
                        reply_len_of(room),
                    ));
                }
                VersionInfo {
                    protocol_version: PROTOCOL_VERSION,
                    major: state.version.0,
                    minor: state.version.1,
                    patch: state.version.2,
                    capabilities: Capabilities::from_bits_truncate(
                        state.capabilities.load(Ordering::Relaxed),
                    ),
                }
                .write(&mut w)
            }
            Command::GetStatus => {
                if room < StatusInfo::SIZE {
                    return Err(too_small(
                        ReplyHeader::SIZE + StatusInfo::SIZE,
                        reply_len_of(room),
                    ));
                }
                state.status_info().write(&mut w)
            }
            Command::GetPolicy => {
                let p = state.policy();
                if room < p.blob().len() {
                    return Err(too_small(
                        ReplyHeader::SIZE + p.blob().len(),
                        reply_len_of(room),
                    ));
                }
                w.bytes(p.blob())
            }
            Command::SetPolicy => {
                if room < SetPolicyResult::SIZE {
                    return Err(too_small(
                        ReplyHeader::SIZE + SetPolicyResult::SIZE,
                        reply_len_of(room),
                    ));
                }
                let want_persist = hdr.flags.contains(RequestFlags::PERSIST);
                let store = if want_persist { store } else { None };
                let compiled = state
                    .install(body, want_persist, store)
                    .map_err(|e| e.ntstatus())?;
                if want_persist {
                    persist = Some(compiled.clone());
                }
                SetPolicyResult {
                    generation: compiled.generation(),
                    rule_count: compiled.rule_count() as u32,
                    persist: want_persist,
                }
                .write(&mut w)
            }
            Command::GetStats => {
                let req = StatsRequest::decode(body).map_err(|e| e.ntstatus())?;
                let with_callbacks = hdr.flags.contains(RequestFlags::CALLBACK_COUNTERS);
                let p = state.policy();
                let available = (p.rule_count() as u32)
                    .saturating_sub(req.first_rule)
                    .min(req.max_rules);
                let callback_counters = if with_callbacks {
                    CALLBACK_COUNTER_COUNT as u32
                } else {
                    0
                };
                let need = StatsReplyHeader::body_len_with(available, callback_counters)
                    .unwrap_or(usize::MAX);
                if room < need {
                    return Err(too_small(
                        ReplyHeader::SIZE.saturating_add(need),
                        reply_len_of(room),
                    ));
                }
                drop(p);
                let mut snap = state
                    .snapshot(req.first_rule, available)
                    .map_err(|_| NtStatus::INSUFFICIENT_RESOURCES)?;
                if !with_callbacks {
                    snap.callbacks = None;
                }
                snap.write(&mut w)
            }
            Command::ResetStats => {
                state.stats.reset();
                state.callback_counters.reset();
                state.policy().reset_counters();
                let gen = state.policy().generation();
                state.events.push(
                    EventRecord::new(EventKind::StatsReset, NtStatus::SUCCESS, gen, 0),
                    (state.clock)(),
                );
                Ok(())
            }
            Command::GetEvents => {
                let req = EventsRequest::decode(body).map_err(|e| e.ntstatus())?;
                if room < EventsReplyHeader::SIZE {
                    return Err(too_small(
                        ReplyHeader::SIZE + EventsReplyHeader::SIZE,
                        reply_len_of(room),
                    ));
                }
                state
                    .events
                    .write_reply(req.after_seq, req.max_events as usize, &mut w, room)
                    .map(|_| ())
            }
        };
        res.map_err(|e| e.ntstatus())?;
        w.position()
    };
    let total = ReplyHeader::SIZE + body_len;
    let mut w = Writer::new(reply);
    ReplyHeader {
        status: NtStatus::SUCCESS,
        length: total as u32,
    }
    .write(&mut w)
    .map_err(|e| e.ntstatus())?;
    Ok(Outcome {
        reply_len: total,
        persist,
    })
}

fn reply_len_of(room: usize) -> usize {
    room + ReplyHeader::SIZE
}

/// [`handle`] for the driver: first checks the caller's output buffer address
/// alignment ([`flushguard_protocol::REPLY_ALIGNMENT`]) and minimum size.
/// Errors: `STATUS_DATATYPE_MISALIGNMENT`, `STATUS_BUFFER_TOO_SMALL`, then as `handle`.
pub fn handle_at(
    state: &State,
    request: &[u8],
    reply: &mut [u8],
    reply_address: u64,
) -> Result<Outcome, NtStatus> {
    check_output_buffer(
        reply_address,
        u32::try_from(reply.len()).unwrap_or(u32::MAX),
        ReplyHeader::SIZE as u32,
    )
    .map_err(|e| e.ntstatus())?;
    handle(state, request, reply)
}

/// [`handle`] with an owned reply sized for the request (in-process port).
/// The buffer is as large as the largest reply the request can produce.
pub fn handle_vec(
    state: &State,
    request: &[u8],
) -> Result<(Vec<u8>, Option<Arc<CompiledPolicy>>), NtStatus> {
    let cap = match RequestHeader::decode(request) {
        Ok((h, _)) => match h.command {
            Command::GetPolicy => ReplyHeader::SIZE + state.policy().blob().len(),
            Command::GetStats => {
                ReplyHeader::SIZE
                    + StatsReplyHeader::body_len_with(
                        state.policy().rule_count() as u32,
                        CALLBACK_COUNTER_COUNT as u32,
                    )
                    .unwrap_or(0)
            }
            Command::GetEvents => {
                ReplyHeader::SIZE
                    + EventsReplyHeader::SIZE
                    + flushguard_protocol::events::MAX_EVENTS_PER_REPLY as usize * EventRecord::SIZE
            }
            _ => 256,
        },
        Err(_) => ReplyHeader::SIZE,
    };
    let mut buf = vec![0u8; cap];
    let out = handle(state, request, &mut buf)?;
    buf.truncate(out.reply_len);
    Ok((buf, out.persist))
}
