//! The channel to FlushGuard: a [`Port`] carries one request and its reply.
//!
//! Implementations, selected in [`open`]:
//! - `win` (Windows only): the driver's filter communication port through fltlib
//!   (`FilterConnectCommunicationPort` with the [`ConnectContext`], `FilterSendMessage`),
//!   plus `FilterLoad` / `FilterUnload`. It is the only module of flushctl with `unsafe`.
//! - [`inproc`]: the engine's own message handler in this process (`--offline`), with its
//!   state kept in a file between invocations.
//! - `unsupported` (every other OS): fails with [`PortError::Unsupported`].
//!
//! Above the trait, [`Client`] (`client.rs`) builds requests and checks replies with the
//! `flushguard-protocol` encoders and decoders, the same ones the driver uses. Failures
//! are [`PortError`]s (`error.rs`); the trait itself is in `transport.rs`. This module
//! picks the port ([`open`], [`load`], [`unload`]).

mod client;
mod error;
pub mod inproc;
mod transport;
#[cfg(not(windows))]
mod unsupported;
#[cfg(windows)]
#[allow(unsafe_code)]
mod win;

#[cfg(not(windows))]
use unsupported as imp;
#[cfg(windows)]
use win as imp;

use flushguard_protocol::{ConnectContext, PROTOCOL_VERSION, SERVICE_NAME};

pub use client::{Client, EventsReply, StatsReply};
use error::PROBE_MAX_VERSION;
pub use error::{classify_hresult, FltlibCall, PortError, WORKS_WITHOUT_DRIVER};
pub use transport::Port;

/// Options that pick and configure the port.
#[derive(Debug, Clone, Default)]
pub struct PortOptions {
    /// Use the in-process engine.
    pub offline: bool,
    /// Its state file.
    pub state: Option<std::path::PathBuf>,
    /// Test hook (see [`inproc::Simulation`]).
    pub simulate: Option<String>,
    /// The command being run (for [`PortError::Unsupported`]).
    pub command: String,
}

impl PortOptions {
    /// `" (in-process engine, --offline)"` with `--offline`, else empty: appended to
    /// messages that say what happened.
    pub fn offline_note(&self) -> &'static str {
        if self.offline {
            " (in-process engine, --offline)"
        } else {
            ""
        }
    }
}

/// Opens the port selected by `opts` and checks that both sides speak the same protocol.
///
/// # Errors
/// [`PortError::NotLoaded`], [`PortError::AccessDenied`], [`PortError::VersionMismatch`],
/// [`PortError::Unsupported`] and the rest, as the connection fails.
pub fn open(opts: &PortOptions) -> Result<Client, PortError> {
    let port: Box<dyn Port> = if opts.offline {
        Box::new(inproc::InProcessPort::open(
            opts.state.as_deref(),
            opts.simulate.as_deref(),
        )?)
    } else {
        match imp::connect(&ConnectContext::current(), &opts.command) {
            Ok(p) => p,
            Err(PortError::VersionMismatch {
                client,
                driver: None,
            }) => {
                return Err(PortError::VersionMismatch {
                    client,
                    driver: probe_driver_version(&opts.command),
                })
            }
            Err(e) => return Err(e),
        }
    };
    let mut client = Client::new(port);
    let v = client.version()?;
    if v.protocol_version != PROTOCOL_VERSION {
        return Err(PortError::VersionMismatch {
            client: PROTOCOL_VERSION,
            driver: Some(v.protocol_version),
        });
    }
    Ok(client)
}

/// After the driver refused our connect context with `STATUS_REVISION_MISMATCH`, finds
/// the version it accepts by connecting with each other version (1 ..=
/// [`PROBE_MAX_VERSION`]) and closing the connection at once: the connect context is the
/// only thing checked, and no request is sent. `None` when no version is accepted.
fn probe_driver_version(command: &str) -> Option<u32> {
    (1..=PROBE_MAX_VERSION)
        .filter(|v| *v != PROTOCOL_VERSION)
        .find(|&version| {
            imp::connect(
                &ConnectContext {
                    magic: flushguard_protocol::CONNECT_MAGIC,
                    version,
                },
                command,
            )
            .is_ok()
        })
}

/// `FilterLoad` of the FlushGuard service (or the offline engine's "loaded" flag).
///
/// # Errors
/// [`PortError::AccessDenied`] when not elevated, [`PortError::NotLoaded`] when the service
/// is not installed, [`PortError::Unsupported`] off Windows, [`PortError::Os`] otherwise.
pub fn load(opts: &PortOptions) -> Result<(), PortError> {
    if opts.offline {
        inproc::set_loaded(opts.state.as_deref(), opts.simulate.as_deref(), true)
    } else {
        imp::filter_load(SERVICE_NAME, &opts.command)
    }
}

/// `FilterUnload` of the FlushGuard service (or clears the offline engine's flag).
///
/// # Errors
/// As [`load`]; unloading a driver that is not loaded is [`PortError::NotLoaded`].
pub fn unload(opts: &PortOptions) -> Result<(), PortError> {
    if opts.offline {
        inproc::set_loaded(opts.state.as_deref(), opts.simulate.as_deref(), false)
    } else {
        imp::filter_unload(SERVICE_NAME, &opts.command)
    }
}
