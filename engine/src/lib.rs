//! FlushGuard's brain: policy model and matcher, decisions, statistics, the
//! event ring and the port message handler. The driver (`no_std` + `alloc`,
//! `default-features = false`) and flushctl (`std`) run this same code, so what
//! an administrator checks offline (`flushctl policy explain`, `replay`) is what
//! the kernel does.
//!
//! Feature `std` (default): TOML policy files ([`policy_file`]). Feature `sim`:
//! [`plain_callback_data`], the operation record of the Filter Managers that run the
//! callbacks outside the kernel (the host tests' fake, flushctl's simulator).
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod callback_counters;
pub mod callbacks;
pub mod decision;
pub mod events;
pub mod exemption;
pub mod group_commit;
pub mod handler;
pub mod locks;
pub mod matcher;
pub mod path;
#[cfg(feature = "sim")]
pub mod plain_callback_data;
pub mod policy;
#[cfg(feature = "std")]
pub mod policy_file;
pub mod state;
pub mod stats;
pub mod vocabulary;

pub use flushguard_protocol as protocol;

pub use decision::{
    decide, Decision, FlushPoint, FlushRequest, MajorFunction, OperationView, Phase, PreOp,
};
pub use handler::{handle, handle_at, handle_persisting, handle_vec, Outcome, PolicyStore, State};
pub use matcher::{CachedRule, CompiledPolicy, Exemption, Explanation, FileKey, Mismatch, RuleRef};
pub use path::FileName;
pub use policy::{
    Action, FileProvider, FlushMethod, Matcher, Mode, Policy, PolicyError, ProviderSelector, Rule,
};
pub use stats::{Counters, Stats, StatsSnapshot};
