//! The [`Port`] trait: what every way of reaching FlushGuard (driver port, in-process
//! engine, unsupported OS) provides.

use super::error::PortError;

/// One request/reply exchange with FlushGuard.
pub trait Port {
    /// Sends `request` (a [`RequestHeader`](flushguard_protocol::RequestHeader) and
    /// body) and writes the reply (a [`ReplyHeader`](flushguard_protocol::ReplyHeader)
    /// and body) into `reply`, whose start is
    /// [`REPLY_ALIGNMENT`](flushguard_protocol::REPLY_ALIGNMENT)-aligned.
    /// Returns the number of reply bytes written.
    ///
    /// # Errors
    /// [`PortError`] when the message could not be delivered; a delivered request that
    /// the driver rejects comes back as a reply with a failure status, not as an error.
    fn send(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, PortError>;

    /// What this port talks to (`driver` or `in-process engine`).
    fn describe(&self) -> &'static str;
}
