//! `SMB2_GLOBAL_CAP_ENCRYPTION` on the wire, which `smb2` 0.39 does not send.
//!
//! `smb2` offers its ciphers in the SMB 3.1.1 NEGOTIATE encryption context but leaves
//! the Capabilities field of its NEGOTIATE request at `DFS | LEASING | LARGE_MTU`, and
//! Samba (4.17) then selects no cipher and refuses a session or share that requires
//! encryption with STATUS_ACCESS_DENIED. The crate has everything else (key derivation,
//! TRANSFORM headers, activation from the session flags or the share flags), so
//! flushctl fixes the one bit below `smb2`, on the transport:
//!
//! 1. [`CapSend`] wraps the TCP transport's send half and sets
//!    [`SMB2_GLOBAL_CAP_ENCRYPTION`] in every NEGOTIATE request it carries
//!    ([`with_encryption_capability`]; nothing else is touched), recording the bytes
//!    `smb2` serialized and the bytes actually sent in a [`NegotiateLog`].
//! 2. [`CapReceive`] wraps the receive half and records the NEGOTIATE response.
//! 3. After `Connection::negotiate`, [`rehash`] replaces the connection's preauth
//!    integrity hash: `smb2` computed it over the request it serialized, the server
//!    over the request it received, and SMB 3.1.1 derives the session keys from it
//!    (MS-SMB2 3.2.5.3.1), so it is recomputed over the bytes on the wire, after
//!    checking that `smb2`'s value is the one the recorded bytes give (if a later
//!    `smb2` hashed something else, flushctl stops instead of guessing keys).

use std::sync::{Arc, Mutex, PoisonError};

use smb2::crypto::kdf::PreauthHasher;
use smb2::transport::{ReceiveProgress, TransportReceive, TransportSend};

/// NEGOTIATE request Capabilities bit: the client supports encryption (MS-SMB2 2.2.3,
/// `SMB2_GLOBAL_CAP_ENCRYPTION`).
pub const SMB2_GLOBAL_CAP_ENCRYPTION: u32 = 0x0000_0040;

/// ProtocolId of an SMB2 header: 0xFE 'S' 'M' 'B' (MS-SMB2 2.2.1).
pub const SMB2_PROTOCOL_ID: [u8; 4] = [0xFE, b'S', b'M', b'B'];

/// Command code of NEGOTIATE in the SMB2 header (MS-SMB2 2.2.1.2, `SMB2 NEGOTIATE`).
pub const SMB2_NEGOTIATE: u16 = 0x0000;

/// SMB2 header Flags bit set in responses (MS-SMB2 2.2.1.2,
/// `SMB2_FLAGS_SERVER_TO_REDIR`).
pub const SMB2_FLAGS_SERVER_TO_REDIR: u32 = 0x0000_0001;

/// Size of the SMB2 header (MS-SMB2 2.2.1.2: StructureSize 64).
const HEADER: usize = 64;

/// Offset of Command in the SMB2 header (MS-SMB2 2.2.1.2).
const COMMAND_AT: usize = 12;

/// Offset of Flags in the SMB2 header (MS-SMB2 2.2.1.2).
const FLAGS_AT: usize = 16;

/// Offset of NextCommand in the SMB2 header (MS-SMB2 2.2.1.2).
const NEXT_COMMAND_AT: usize = 20;

/// Offset of Capabilities in a NEGOTIATE request, from the start of the SMB2 header:
/// the header, then StructureSize (2), DialectCount (2), SecurityMode (2) and
/// Reserved (2) (MS-SMB2 2.2.3). The transport's `send` gets the message without the
/// 4-byte direct-TCP length prefix (MS-SMB2 2.1), so this is the offset in its buffer.
pub const NEGOTIATE_CAPABILITIES_AT: usize = HEADER + 8;

/// Smallest NEGOTIATE request: the header and the fixed 36-byte body (MS-SMB2 2.2.3:
/// StructureSize 36, dialects follow).
const NEGOTIATE_REQUEST_MIN: usize = HEADER + 36;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Whether `msg` (one SMB2 message, no transport prefix) is a NEGOTIATE request
/// (`response` false) or response (`response` true): the plain SMB2 ProtocolId, Command
/// `SMB2_NEGOTIATE`, the Flags bit `SMB2_FLAGS_SERVER_TO_REDIR` as asked, and no
/// NextCommand (MS-SMB2 2.2.1.2; NEGOTIATE is never compounded, 3.2.4.1.4).
pub fn is_negotiate(msg: &[u8], response: bool) -> bool {
    msg.len() >= HEADER
        && msg[..4] == SMB2_PROTOCOL_ID
        && u16_at(msg, COMMAND_AT) == SMB2_NEGOTIATE
        && (u32_at(msg, FLAGS_AT) & SMB2_FLAGS_SERVER_TO_REDIR != 0) == response
        && u32_at(msg, NEXT_COMMAND_AT) == 0
}

/// `msg` with [`SMB2_GLOBAL_CAP_ENCRYPTION`] set in its Capabilities, if it is a
/// NEGOTIATE request ([`is_negotiate`]) long enough to have the field and the bit is
/// not set yet; `None` otherwise (the message goes out unchanged). No other byte
/// changes.
pub fn with_encryption_capability(msg: &[u8]) -> Option<Vec<u8>> {
    if !is_negotiate(msg, false) || msg.len() < NEGOTIATE_REQUEST_MIN {
        return None;
    }
    let caps = u32_at(msg, NEGOTIATE_CAPABILITIES_AT);
    if caps & SMB2_GLOBAL_CAP_ENCRYPTION != 0 {
        return None;
    }
    let mut out = msg.to_vec();
    out[NEGOTIATE_CAPABILITIES_AT..NEGOTIATE_CAPABILITIES_AT + 4]
        .copy_from_slice(&(caps | SMB2_GLOBAL_CAP_ENCRYPTION).to_le_bytes());
    Some(out)
}

/// One NEGOTIATE exchange as [`CapSend`] and [`CapReceive`] saw it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NegotiateExchange {
    /// The request as `smb2` serialized it (what `smb2` fed its preauth hash).
    pub serialized: Vec<u8>,
    /// The request as sent (with [`SMB2_GLOBAL_CAP_ENCRYPTION`]).
    pub sent: Vec<u8>,
    /// The response as received (one SMB2 message, no transport prefix).
    pub response: Option<Vec<u8>>,
}

/// The NEGOTIATE exchange of one connection, shared by its [`CapSend`] and
/// [`CapReceive`]: the last request sent and the response received after it.
#[derive(Debug, Default, Clone)]
pub struct NegotiateLog(Arc<Mutex<Option<NegotiateExchange>>>);

impl NegotiateLog {
    fn with<R>(&self, f: impl FnOnce(&mut Option<NegotiateExchange>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The exchange recorded so far (`None` before a NEGOTIATE request went out).
    pub fn exchange(&self) -> Option<NegotiateExchange> {
        self.with(|e| e.clone())
    }
}

/// The send half of a transport, setting [`SMB2_GLOBAL_CAP_ENCRYPTION`] in NEGOTIATE
/// requests (module docs).
pub struct CapSend<T> {
    inner: Arc<T>,
    log: NegotiateLog,
}

impl<T> CapSend<T> {
    /// Wraps `inner`, recording into `log`.
    pub fn new(inner: Arc<T>, log: NegotiateLog) -> Self {
        CapSend { inner, log }
    }
}

#[async_trait::async_trait]
impl<T: TransportSend + 'static> TransportSend for CapSend<T> {
    async fn send(&self, data: &[u8]) -> smb2::Result<()> {
        if !is_negotiate(data, false) {
            return self.inner.send(data).await;
        }
        let sent = with_encryption_capability(data).unwrap_or_else(|| data.to_vec());
        self.log.with(|e| {
            *e = Some(NegotiateExchange {
                serialized: data.to_vec(),
                sent: sent.clone(),
                response: None,
            });
        });
        self.inner.send(&sent).await
    }
}

/// The receive half of a transport, recording the NEGOTIATE response (module docs).
pub struct CapReceive<T> {
    inner: Arc<T>,
    log: NegotiateLog,
}

impl<T> CapReceive<T> {
    /// Wraps `inner`, recording into `log`.
    pub fn new(inner: Arc<T>, log: NegotiateLog) -> Self {
        CapReceive { inner, log }
    }
}

#[async_trait::async_trait]
impl<T: TransportReceive + 'static> TransportReceive for CapReceive<T> {
    async fn receive(&self) -> smb2::Result<Vec<u8>> {
        let frame = self.inner.receive().await?;
        if is_negotiate(&frame, true) {
            self.log.with(|e| {
                if let Some(e) = e.as_mut().filter(|e| e.response.is_none()) {
                    e.response = Some(frame.clone());
                }
            });
        }
        Ok(frame)
    }

    fn receive_progress(&self) -> Option<Arc<ReceiveProgress>> {
        self.inner.receive_progress()
    }
}

/// The SMB 3.1.1 preauth integrity hash over `messages`, in order: 64 zero bytes,
/// then `SHA-512(previous || message)` per message (MS-SMB2 3.2.4.2.2.2 for the
/// NEGOTIATE request, 3.2.5.2 for its response).
pub fn preauth_hash<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> PreauthHasher {
    let mut h = PreauthHasher::new();
    for m in messages {
        h.update(m);
    }
    h
}

/// Why [`rehash`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RehashError {
    /// No NEGOTIATE request, or no response, passed through the transport.
    #[error("no NEGOTIATE {0} was seen on the transport")]
    NotSeen(&'static str),
    /// The connection's hash is not the one over the recorded request and response:
    /// `smb2` hashed other bytes than flushctl assumes.
    #[error(
        "the SMB client's preauth integrity hash is not SHA-512 over the NEGOTIATE \
         request it serialized and the response received (MS-SMB2 3.2.5.2); flushctl \
         cannot correct it for the request it sent with SMB2_GLOBAL_CAP_ENCRYPTION \
         (a different smb2 version?)"
    )]
    Unexpected,
}

/// Replaces `hasher` (the connection's preauth integrity hash right after NEGOTIATE)
/// by the hash over the request as sent and the response, after checking that it is
/// the hash over the request as serialized and the response (module docs).
///
/// # Errors
/// [`RehashError`]; `hasher` is then unchanged.
pub fn rehash(hasher: &mut PreauthHasher, log: &NegotiateLog) -> Result<(), RehashError> {
    let e = log.exchange().ok_or(RehashError::NotSeen("request"))?;
    let resp = e.response.ok_or(RehashError::NotSeen("response"))?;
    let smb2s = preauth_hash([e.serialized.as_slice(), resp.as_slice()]);
    if smb2s.value() != hasher.value() {
        return Err(RehashError::Unexpected);
    }
    *hasher = preauth_hash([e.sent.as_slice(), resp.as_slice()]);
    Ok(())
}
