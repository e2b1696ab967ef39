//! Allocation windows for the failing-allocator test (`tests/tests/alloc_failure.rs`).
//!
//! The harness marks two kinds of regions and reports them to an installed
//! [`Gate`]:
//! - an **engine window**: one call of a `Filter` callback (pre-/post-operation,
//!   the deferred post-write) made by the simulated Filter Manager ([`engine`]);
//! - a **Filter Manager scope**: one call of a `FilterManager` method of the fake
//!   ([`fm_scope`]), made from inside the engine.
//!
//! The failing-allocator test limits allocations inside one engine window and lifts
//! the limit inside the Filter Manager scopes nested in it, so exactly the engine's
//! own allocations meet the limit (the fake's bookkeeping is test machinery, and the
//! real Filter Manager allocates from its own pools). Without an installed gate
//! (every other test) both are no-ops; neither allocates.

use std::sync::OnceLock;

/// Receives the window boundaries. Implementations must not allocate.
pub trait Gate: Sync {
    /// An engine callback starts.
    fn enter_engine(&self);
    /// The engine callback returned.
    fn leave_engine(&self);
    /// The engine calls into the fake Filter Manager.
    fn enter_fm(&self);
    /// The Filter Manager call returned to the engine.
    fn leave_fm(&self);
}

static GATE: OnceLock<&'static dyn Gate> = OnceLock::new();

/// Installs the process-wide gate (once; later calls return `false`).
pub fn install(gate: &'static dyn Gate) -> bool {
    GATE.set(gate).is_ok()
}

/// Runs one engine callback inside an engine window.
pub fn engine<R>(call: impl FnOnce() -> R) -> R {
    match GATE.get() {
        Some(g) => {
            g.enter_engine();
            let r = call();
            g.leave_engine();
            r
        }
        None => call(),
    }
}

/// Marks a fake Filter Manager call until dropped.
#[must_use]
pub struct FmScope(Option<&'static dyn Gate>);

/// Enters a Filter Manager scope (left when the returned value drops).
pub fn fm_scope() -> FmScope {
    let g = GATE.get().copied();
    if let Some(g) = g {
        g.enter_fm();
    }
    FmScope(g)
}

impl Drop for FmScope {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.leave_fm();
        }
    }
}
