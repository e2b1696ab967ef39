//! flushctl: the FlushGuard administrator CLI, as a library (the binary is a thin shell).
#![deny(unsafe_code)]

pub mod trace;
