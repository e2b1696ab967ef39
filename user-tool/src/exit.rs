//! Process exit codes (also printed by `flushctl --help`).

/// Success.
pub const OK: u8 = 0;
/// The operation failed (I/O error, the driver returned an error status).
pub const FAILED: u8 = 1;
/// Usage error (clap's own code).
pub const USAGE: u8 = 2;
/// The driver is not loaded / its communication port does not exist.
pub const NOT_LOADED: u8 = 3;
/// Access denied: not elevated.
pub const ACCESS_DENIED: u8 = 4;
/// Protocol version mismatch between flushctl and the driver.
pub const VERSION_MISMATCH: u8 = 5;
/// Not supported on this operating system.
pub const UNSUPPORTED: u8 = 6;
/// Invalid input: a policy file rejected, a trace rejected as a whole (empty, UTF-16,
/// not a Process Monitor CSV), or a malformed trace line with `--strict`.
pub const INVALID_INPUT: u8 = 7;
/// `durability verify`: acknowledged records were lost (missing, torn, stale or corrupt).
pub const LOST: u8 = 8;
