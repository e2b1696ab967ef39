//! flushguard.sys: the kernel shell of FlushGuard.
#![cfg_attr(windows, no_std)]
