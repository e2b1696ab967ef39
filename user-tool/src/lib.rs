//! flushctl: the FlushGuard administrator CLI, as a library (the binary is a thin shell).
//!
//! `unsafe` is denied everywhere but in the Windows port module (`port::win`), the one
//! place that calls fltlib.dll.
#![deny(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod durability;
pub mod error;
pub mod exit;
pub mod gen;
pub mod output;
pub mod port;
// flushctl's MSRV is 1.91 (smb2); replay.rs, under change elsewhere, still uses `%`.
#[allow(clippy::manual_is_multiple_of)]
pub mod replay;
pub mod sim_fltmgr;
pub mod trace;
