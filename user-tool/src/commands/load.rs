//! `flushctl load` / `flushctl unload`: `FilterLoad` / `FilterUnload` of the FlushGuard
//! service, like `fltmc load FlushGuard`.

use serde::Serialize;

use crate::error::CliError;
use crate::exit;
use crate::outln;
use crate::output::print_json;
use crate::port::{self, PortOptions};

/// Loads (`loading`) or unloads the driver and says so.
///
/// # Errors
/// The port's [`CliError`] (not supported, access denied, ...), stdout errors.
pub(super) fn load_unload(opts: &PortOptions, loading: bool, json: bool) -> Result<u8, CliError> {
    if loading {
        port::load(opts)?;
    } else {
        port::unload(opts)?;
    }
    if json {
        #[derive(Serialize)]
        struct LoadJson {
            service: &'static str,
            loaded: bool,
            offline: bool,
        }
        print_json(&LoadJson {
            service: flushguard_engine::protocol::SERVICE_NAME,
            loaded: loading,
            offline: opts.offline,
        })
        .map_err(CliError::io_while("stdout"))?;
    } else {
        outln!(
            "FlushGuard {}{}.",
            if loading { "loaded" } else { "unloaded" },
            opts.offline_note()
        );
    }
    Ok(exit::OK)
}
