//! [`Client`]: builds requests and checks replies with the `flushguard-protocol`
//! encoders and decoders (the ones the driver uses) over any [`Port`].

use flushguard_engine::StatsSnapshot;
use flushguard_protocol::codec::{Reader, Writer};
use flushguard_protocol::events::{EventRecord, EventsReplyHeader};
use flushguard_protocol::stats::{
    StatsReplyHeader, CALLBACK_COUNTER_COUNT, COUNTER_COUNT, LATENCY_BUCKETS,
};
use flushguard_protocol::{
    Command, DecodeError, EventsRequest, NtStatus, ReplyHeader, RequestFlags, RequestHeader,
    SetPolicyResult, StatsRequest, StatusInfo, VersionInfo, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
    REPLY_ALIGNMENT,
};

use super::error::PortError;
use super::transport::Port;

/// The decoded GetStats reply.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatsReply {
    /// Policy generation the counters belong to.
    pub generation: u64,
    /// Global counters, indexed by [`flushguard_protocol::stats::Counter`].
    pub global: Vec<u64>,
    /// Counters of the default action.
    pub default_rule: Vec<u64>,
    /// Flush latency histogram; bucket i counts flushes of `[2^(i-1), 2^i)` µs.
    pub latency: Vec<u64>,
    /// Group-commit flushes by writers acknowledged; bucket i: `[2^(i-1), 2^i)` writers.
    pub group_batch: Vec<u64>,
    /// Group-commit writers by time waited; bucket i: `[2^(i-1), 2^i)` µs.
    pub group_wait: Vec<u64>,
    /// Flush failures by status: `(NTSTATUS bits, count)`; status 0 = any other status.
    pub failures: Vec<(u32, u64)>,
    /// Callback-layer counters (every fail-open and skip cause), indexed by
    /// [`flushguard_protocol::stats::CallbackCounter`]; `None` when the driver did
    /// not return the section although flushctl asked for it
    /// (`RequestFlags::CALLBACK_COUNTERS`), i.e. a driver built before it existed.
    pub callbacks: Option<Vec<u64>>,
    /// Per-rule counters, rule order.
    pub rules: Vec<Vec<u64>>,
}

/// The decoded GetEvents reply.
#[derive(Debug, Clone)]
pub struct EventsReply {
    /// Sequence number the next event will get.
    pub next_seq: u64,
    /// Events overwritten before anyone read them.
    pub dropped: u64,
    /// The events, oldest first.
    pub events: Vec<EventRecord>,
}

/// Typed commands over a [`Port`].
pub struct Client {
    port: Box<dyn Port>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("port", &self.port.describe())
            .finish()
    }
}

fn command_name(c: Command) -> &'static str {
    match c {
        Command::GetVersion => "GetVersion",
        Command::GetStatus => "GetStatus",
        Command::GetPolicy => "GetPolicy",
        Command::SetPolicy => "SetPolicy",
        Command::GetStats => "GetStats",
        Command::ResetStats => "ResetStats",
        Command::GetEvents => "GetEvents",
    }
}

impl Client {
    /// A client over `port`; [`super::open`] checks the driver's version before handing
    /// it out.
    pub(super) fn new(port: Box<dyn Port>) -> Client {
        Client { port }
    }

    /// How often [`Client::stats`] starts over when the policy changes while it
    /// pages through the per-rule counters.
    pub const STATS_RESTARTS: u32 = 3;

    /// What the client talks to.
    pub fn describe(&self) -> &'static str {
        self.port.describe()
    }

    /// Sends `command` with `body`; returns the reply body on a success status.
    fn call(
        &mut self,
        command: Command,
        flags: RequestFlags,
        body: &[u8],
        reply_capacity: usize,
    ) -> Result<Vec<u8>, PortError> {
        let name = command_name(command);
        let bad = |error| PortError::BadReply {
            command: name,
            error,
        };
        let total = RequestHeader::SIZE + body.len();
        let mut request = vec![0u8; total];
        {
            let mut w = Writer::new(&mut request);
            RequestHeader {
                command,
                flags,
                length: u32::try_from(total).map_err(|_| {
                    bad(DecodeError::TooLong {
                        max: MAX_MESSAGE_BYTES,
                        got: u32::MAX,
                    })
                })?,
            }
            .write(&mut w)
            .map_err(bad)?;
            w.bytes(body).map_err(bad)?;
        }
        // The driver requires an aligned reply buffer: over-allocate and start at the
        // first aligned byte.
        let align = REPLY_ALIGNMENT as usize;
        let mut storage = vec![0u8; ReplyHeader::SIZE + reply_capacity + align];
        let off = storage.as_ptr().align_offset(align).min(align);
        let reply = &mut storage[off..off + ReplyHeader::SIZE + reply_capacity];
        let n = self.port.send(&request, reply).map_err(|e| match e {
            // The driver's message callback failed the request: name the command.
            PortError::Driver { status, .. } if status == NtStatus::REVISION_MISMATCH => {
                PortError::VersionMismatch {
                    client: PROTOCOL_VERSION,
                    driver: None,
                }
            }
            PortError::Driver { status, .. } => PortError::Driver {
                command: name,
                status,
            },
            PortError::Os {
                call: "FilterSendMessage",
                detail,
            } => PortError::Rejected {
                command: name,
                detail,
            },
            e => e,
        })?;
        let reply = reply.get(..n).ok_or_else(|| {
            bad(DecodeError::TooLong {
                max: u32::try_from(reply.len()).unwrap_or(u32::MAX),
                got: u32::try_from(n).unwrap_or(u32::MAX),
            })
        })?;
        let (header, body) = match ReplyHeader::decode(reply) {
            Ok(x) => x,
            Err(DecodeError::UnknownVersion { expected, got }) => {
                return Err(PortError::VersionMismatch {
                    client: expected,
                    driver: Some(got),
                })
            }
            Err(e) => return Err(bad(e)),
        };
        if !header.status.is_success() {
            if header.status == NtStatus::REVISION_MISMATCH {
                return Err(PortError::VersionMismatch {
                    client: PROTOCOL_VERSION,
                    driver: None,
                });
            }
            return Err(PortError::Driver {
                command: name,
                status: header.status,
            });
        }
        Ok(body.to_vec())
    }

    /// GetVersion.
    ///
    /// # Errors
    /// [`PortError`] as the exchange fails.
    pub fn version(&mut self) -> Result<VersionInfo, PortError> {
        let body = self.call(
            Command::GetVersion,
            RequestFlags::empty(),
            &[],
            VersionInfo::SIZE,
        )?;
        VersionInfo::decode(&body).map_err(|error| PortError::BadReply {
            command: "GetVersion",
            error,
        })
    }

    /// GetStatus.
    ///
    /// # Errors
    /// [`PortError`] as the exchange fails.
    pub fn status(&mut self) -> Result<StatusInfo, PortError> {
        let body = self.call(
            Command::GetStatus,
            RequestFlags::empty(),
            &[],
            StatusInfo::SIZE,
        )?;
        StatusInfo::decode(&body).map_err(|error| PortError::BadReply {
            command: "GetStatus",
            error,
        })
    }

    /// GetPolicy: the active policy blob.
    ///
    /// # Errors
    /// [`PortError`] as the exchange fails.
    pub fn get_policy(&mut self) -> Result<Vec<u8>, PortError> {
        self.call(
            Command::GetPolicy,
            RequestFlags::empty(),
            &[],
            flushguard_protocol::policy::MAX_POLICY_BYTES as usize,
        )
    }

    /// SetPolicy (all or nothing), optionally persisted to the registry.
    ///
    /// # Errors
    /// [`PortError::Driver`] with the validation status when the driver rejects the blob.
    pub fn set_policy(&mut self, blob: &[u8], persist: bool) -> Result<SetPolicyResult, PortError> {
        let flags = if persist {
            RequestFlags::PERSIST
        } else {
            RequestFlags::empty()
        };
        let body = self.call(Command::SetPolicy, flags, blob, SetPolicyResult::SIZE)?;
        SetPolicyResult::decode(&body).map_err(|error| PortError::BadReply {
            command: "SetPolicy",
            error,
        })
    }

    /// ResetStats.
    ///
    /// # Errors
    /// [`PortError`] as the exchange fails.
    pub fn reset_stats(&mut self) -> Result<(), PortError> {
        self.call(Command::ResetStats, RequestFlags::empty(), &[], 0)
            .map(drop)
    }

    /// GetStats for every rule (several requests when there are many rules). The
    /// first request sets `RequestFlags::CALLBACK_COUNTERS`, so the reply carries the
    /// callback-layer counters ([`StatsReply::callbacks`]); later pages only add
    /// per-rule counters.
    ///
    /// # Errors
    /// [`PortError`] as the exchange fails; [`PortError::BadReply`] when a reply
    /// does not decode ([`StatsSnapshot::decode`]). When a later page answers for
    /// another policy generation than the first (the policy changed between the
    /// requests) it starts over, at most [`Self::STATS_RESTARTS`] times, and then
    /// fails with [`PortError::BadReply`] (`BadValue` naming the generation field).
    pub fn stats(&mut self) -> Result<StatsReply, PortError> {
        const PAGE: u32 = 256;
        let mut out: Option<StatsReply> = None;
        let mut first = 0u32;
        let mut restarts = 0u32;
        loop {
            let mut req = [0u8; StatsRequest::SIZE];
            let bad = |error| PortError::BadReply {
                command: "GetStats",
                error,
            };
            StatsRequest {
                first_rule: first,
                max_rules: PAGE,
            }
            .write(&mut Writer::new(&mut req))
            .map_err(bad)?;
            let (flags, callbacks) = if out.is_none() {
                (
                    RequestFlags::CALLBACK_COUNTERS,
                    CALLBACK_COUNTER_COUNT as u32,
                )
            } else {
                (RequestFlags::empty(), 0)
            };
            let cap = StatsReplyHeader::body_len_with(PAGE, callbacks).unwrap_or(usize::MAX / 2);
            let body = self.call(Command::GetStats, flags, &req, cap)?;
            let snap = StatsSnapshot::decode(&body).map_err(bad)?;
            let total = snap.total_rules;
            let page = StatsReply::from(snap);
            let returned = page.rules.len() as u32;
            match &mut out {
                None => out = Some(page),
                Some(acc) if acc.generation != page.generation => {
                    if restarts == Self::STATS_RESTARTS {
                        return Err(bad(DecodeError::BadValue {
                            field: "StatsReplyHeader.generation (changed between pages)",
                            value: u32::try_from(page.generation).unwrap_or(u32::MAX),
                        }));
                    }
                    restarts += 1;
                    out = None;
                    first = 0;
                    continue;
                }
                Some(acc) => acc.rules.extend(page.rules),
            }
            first = first.saturating_add(returned);
            if returned == 0 || first >= total {
                break;
            }
        }
        Ok(out.unwrap_or_else(|| StatsReply {
            generation: 0,
            global: vec![0; COUNTER_COUNT],
            default_rule: vec![0; COUNTER_COUNT],
            latency: vec![0; LATENCY_BUCKETS],
            group_batch: vec![0; LATENCY_BUCKETS],
            group_wait: vec![0; LATENCY_BUCKETS],
            failures: Vec::new(),
            callbacks: None,
            rules: Vec::new(),
        }))
    }

    /// GetEvents after sequence number `after_seq` (0 = from the oldest kept).
    ///
    /// # Errors
    /// [`PortError`] as the exchange fails.
    pub fn events(&mut self, after_seq: u64) -> Result<EventsReply, PortError> {
        let max = flushguard_protocol::events::MAX_EVENTS_PER_REPLY;
        let mut req = [0u8; EventsRequest::SIZE];
        let bad = |error| PortError::BadReply {
            command: "GetEvents",
            error,
        };
        EventsRequest {
            after_seq,
            max_events: max,
        }
        .write(&mut Writer::new(&mut req))
        .map_err(bad)?;
        let cap = EventsReplyHeader::SIZE + max as usize * EventRecord::SIZE;
        let body = self.call(Command::GetEvents, RequestFlags::empty(), &req, cap)?;
        let mut r = Reader::new(&body);
        let h = EventsReplyHeader::read(&mut r).map_err(bad)?;
        let mut events = Vec::with_capacity(h.count as usize);
        for _ in 0..h.count {
            events.push(EventRecord::read(&mut r).map_err(bad)?);
        }
        Ok(EventsReply {
            next_seq: h.next_seq,
            dropped: h.dropped,
            events,
        })
    }
}

impl From<StatsSnapshot> for StatsReply {
    /// One decoded GetStats page ([`StatsSnapshot::decode`], the engine's own decoder
    /// of the layout in [`flushguard_protocol::stats`]) in flushctl's form.
    fn from(s: StatsSnapshot) -> Self {
        StatsReply {
            generation: s.generation,
            global: s.global.to_vec(),
            default_rule: s.default_rule.to_vec(),
            latency: s.latency.to_vec(),
            group_batch: s.group_batch.to_vec(),
            group_wait: s.group_wait.to_vec(),
            failures: s
                .failures
                .iter()
                .map(|(st, n)| (st.to_bits(), *n))
                .collect(),
            callbacks: s.callbacks.map(|c| c.to_vec()),
            rules: s.rules.iter().map(|r| r.to_vec()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port that answers every request with `reply` (or fails with `error`).
    struct FakePort {
        reply: Vec<u8>,
        error: Option<NtStatus>,
    }

    impl Port for FakePort {
        fn send(&mut self, _request: &[u8], reply: &mut [u8]) -> Result<usize, PortError> {
            if let Some(status) = self.error {
                return Err(PortError::Driver {
                    command: "request",
                    status,
                });
            }
            reply[..self.reply.len()].copy_from_slice(&self.reply);
            Ok(self.reply.len())
        }
        fn describe(&self) -> &'static str {
            "fake"
        }
    }

    fn client(reply: Vec<u8>, error: Option<NtStatus>) -> Client {
        Client {
            port: Box::new(FakePort { reply, error }),
        }
    }

    fn reply_with(version: u32, status: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&version.to_le_bytes());
        v.extend_from_slice(&status.to_le_bytes());
        v.extend_from_slice(&((ReplyHeader::SIZE + body.len()) as u32).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn driver_errors_name_the_command() {
        let e = client(Vec::new(), Some(NtStatus::INVALID_PARAMETER))
            .status()
            .unwrap_err();
        assert!(
            matches!(
                e,
                PortError::Driver {
                    command: "GetStatus",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("0xC000000D"), "{e}");
        let e = client(Vec::new(), Some(NtStatus::REVISION_MISMATCH))
            .version()
            .unwrap_err();
        assert!(matches!(e, PortError::VersionMismatch { .. }), "{e}");
    }

    #[test]
    fn a_reply_of_another_version_names_both() {
        let e = client(reply_with(PROTOCOL_VERSION + 1, 0, &[0; 16]), None)
            .version()
            .unwrap_err();
        match e {
            PortError::VersionMismatch { client, driver } => {
                assert_eq!(
                    (client, driver),
                    (PROTOCOL_VERSION, Some(PROTOCOL_VERSION + 1))
                );
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn malformed_replies_are_rejected() {
        // Declared length differs from the bytes returned.
        let mut r = reply_with(PROTOCOL_VERSION, 0, &[0; 16]);
        r.truncate(20);
        assert!(matches!(
            client(r, None).version().unwrap_err(),
            PortError::BadReply {
                command: "GetVersion",
                ..
            }
        ));
        // A body of the wrong size for the command.
        assert!(matches!(
            client(reply_with(PROTOCOL_VERSION, 0, &[0; 8]), None)
                .status()
                .unwrap_err(),
            PortError::BadReply {
                command: "GetStatus",
                ..
            }
        ));
        // A failure status in the reply header.
        assert!(matches!(
            client(reply_with(PROTOCOL_VERSION, 0xC000_0022, &[]), None)
                .status()
                .unwrap_err(),
            PortError::Driver {
                command: "GetStatus",
                ..
            }
        ));
    }

    /// A port that answers each request with `answer(request header, request body)`.
    struct ScriptedPort<F>(F);

    impl<F: FnMut(RequestHeader, &[u8]) -> Vec<u8>> Port for ScriptedPort<F> {
        fn send(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, PortError> {
            let (h, body) = RequestHeader::decode(request).unwrap();
            let r = (self.0)(h, body);
            reply[..r.len()].copy_from_slice(&r);
            Ok(r.len())
        }
        fn describe(&self) -> &'static str {
            "scripted"
        }
    }

    /// A GetStats reply body for rules `first..first+n` of `total`, every per-rule
    /// counter set to its rule index, callback counter i = 100 + i when `callbacks`.
    fn stats_body(generation: u64, total: u32, first: u32, n: u32, callbacks: bool) -> Vec<u8> {
        use flushguard_protocol::stats::{FAILURE_STATUSES, STATUS_SLOTS};
        let mut failures = Box::new([(NtStatus::SUCCESS, 0u64); STATUS_SLOTS]);
        for (slot, st) in failures.iter_mut().zip(FAILURE_STATUSES) {
            slot.0 = st;
        }
        let snap = StatsSnapshot {
            generation,
            total_rules: total,
            first_rule: first,
            global: Box::new([7; COUNTER_COUNT]),
            default_rule: Box::new([0; COUNTER_COUNT]),
            latency: Box::new([0; LATENCY_BUCKETS]),
            group_batch: Box::new([0; LATENCY_BUCKETS]),
            group_wait: Box::new([0; LATENCY_BUCKETS]),
            failures,
            callbacks: callbacks.then(|| Box::new(std::array::from_fn(|i| 100 + i as u64))),
            rules: (first..first + n)
                .map(|i| [u64::from(i); COUNTER_COUNT])
                .collect(),
        };
        let mut body = vec![0u8; snap.encoded_len().unwrap()];
        snap.write(&mut Writer::new(&mut body)).unwrap();
        reply_with(PROTOCOL_VERSION, 0, &body)
    }

    fn stats_request(h: RequestHeader, body: &[u8]) -> StatsRequest {
        assert_eq!(h.command, Command::GetStats);
        StatsRequest::decode(body).unwrap()
    }

    #[test]
    fn stats_asks_for_the_callback_counters_on_the_first_page_only() {
        let flags_seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = flags_seen.clone();
        let mut c = Client {
            port: Box::new(ScriptedPort(move |h: RequestHeader, body: &[u8]| {
                let req = stats_request(h, body);
                seen.lock().unwrap().push((req.first_rule, h.flags));
                let n = 300u32.saturating_sub(req.first_rule).min(req.max_rules);
                let with = h.flags.contains(RequestFlags::CALLBACK_COUNTERS);
                stats_body(4, 300, req.first_rule, n, with)
            })),
        };
        let s = c.stats().unwrap();
        assert_eq!(
            *flags_seen.lock().unwrap(),
            [
                (0, RequestFlags::CALLBACK_COUNTERS),
                (256, RequestFlags::empty())
            ]
        );
        assert_eq!(s.generation, 4);
        assert_eq!(s.rules.len(), 300);
        assert_eq!(s.rules[299][0], 299);
        let cb = s.callbacks.unwrap();
        assert_eq!(cb.len(), CALLBACK_COUNTER_COUNT);
        assert_eq!(cb[32], 132);
    }

    #[test]
    fn stats_from_a_driver_without_the_section_has_no_callback_counters() {
        let mut c = Client {
            port: Box::new(ScriptedPort(|h: RequestHeader, body: &[u8]| {
                let req = stats_request(h, body);
                stats_body(1, 2, req.first_rule, 2, false)
            })),
        };
        let s = c.stats().unwrap();
        assert!(s.callbacks.is_none());
        assert_eq!(s.global[0], 7);
        assert_eq!(s.rules, [vec![0; COUNTER_COUNT], vec![1; COUNTER_COUNT]]);
    }

    #[test]
    fn stats_starts_over_when_the_generation_changes_between_pages() {
        let mut calls = 0u32;
        let mut c = Client {
            port: Box::new(ScriptedPort(move |h: RequestHeader, body: &[u8]| {
                let req = stats_request(h, body);
                calls += 1;
                // The second request answers for generation 6: the policy changed.
                let generation = if calls == 1 { 5 } else { 6 };
                let n = 300u32.saturating_sub(req.first_rule).min(req.max_rules);
                let with = h.flags.contains(RequestFlags::CALLBACK_COUNTERS);
                stats_body(generation, 300, req.first_rule, n, with)
            })),
        };
        let s = c.stats().unwrap();
        assert_eq!(s.generation, 6);
        assert_eq!(s.rules.len(), 300);
        // A policy that keeps changing fails after STATS_RESTARTS attempts.
        let mut generation = 0u64;
        let mut c = Client {
            port: Box::new(ScriptedPort(move |h: RequestHeader, body: &[u8]| {
                let req = stats_request(h, body);
                generation += 1;
                let n = 300u32.saturating_sub(req.first_rule).min(req.max_rules);
                let with = h.flags.contains(RequestFlags::CALLBACK_COUNTERS);
                stats_body(generation, 300, req.first_rule, n, with)
            })),
        };
        assert!(matches!(
            c.stats().unwrap_err(),
            PortError::BadReply {
                command: "GetStats",
                error: DecodeError::BadValue { .. }
            }
        ));
    }

    #[test]
    fn stats_replies_that_do_not_decode_are_rejected() {
        // The callback section announced but missing (body cut after the failures).
        let mut c = Client {
            port: Box::new(ScriptedPort(|h: RequestHeader, body: &[u8]| {
                let req = stats_request(h, body);
                let mut r = stats_body(1, 0, req.first_rule, 0, true);
                r.truncate(r.len() - 8);
                let len = r.len() as u32;
                r[8..12].copy_from_slice(&len.to_le_bytes());
                r
            })),
        };
        assert!(matches!(
            c.stats().unwrap_err(),
            PortError::BadReply {
                command: "GetStats",
                error: DecodeError::TooShort { .. }
            }
        ));
    }
}
