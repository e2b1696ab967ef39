//! Every OS but Windows: there is no driver to talk to.

use flushguard_protocol::ConnectContext;

use super::error::PortError;
use super::transport::Port;

/// Always [`PortError::Unsupported`].
pub(super) fn connect(_ctx: &ConnectContext, command: &str) -> Result<Box<dyn Port>, PortError> {
    Err(PortError::Unsupported {
        command: command.to_owned(),
    })
}

/// Always [`PortError::Unsupported`].
pub(super) fn filter_load(_service: &str, command: &str) -> Result<(), PortError> {
    connect(&ConnectContext::current(), command).map(drop)
}

/// Always [`PortError::Unsupported`].
pub(super) fn filter_unload(_service: &str, command: &str) -> Result<(), PortError> {
    connect(&ConnectContext::current(), command).map(drop)
}
