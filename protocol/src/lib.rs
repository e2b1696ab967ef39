//! Wire format shared by flushguard.sys and flushctl.
#![forbid(unsafe_code)]
