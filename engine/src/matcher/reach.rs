//! [`Reach`]: what a policy can do, computed once when it is compiled.

use crate::policy::{Action, Mode, Policy, ProviderSelector};

/// What a policy can do to a file's operations, computed once when the policy is
/// compiled, so that a create on a share pays for classification (a normalized
/// `FltGetFileNameInformation`, `SeLocateProcessImageName`, a MUP provider query) only
/// when a rule could act on it (issue 9 finding 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// Some rule or the default action is not `pass`: files must be classified.
    /// When false, every callback passes every operation through untouched.
    pub governs: bool,
    /// A rule without a provider (or the default action) acts at IRP_MJ_CREATE
    /// (`write-through`, or `audit` of write-through): the pre-create must classify.
    /// Otherwise only the post-create does.
    pub at_create: bool,
    /// Some rule names a provider: a lookup made before the file object was open
    /// (provider unknown) may differ from one made after.
    pub provider_specific: bool,
}

impl Reach {
    /// The reach of `policy`'s rules and default action.
    pub fn of(policy: &Policy) -> Reach {
        let acts_at_create = |a: &Action| {
            let effective = match a.mode {
                Mode::Audit => a.audited_mode.unwrap_or(Mode::WriteThrough),
                m => m,
            };
            effective == Mode::WriteThrough
        };
        let mut reach = Reach {
            governs: policy.default_action.mode != Mode::Pass,
            at_create: acts_at_create(&policy.default_action),
            provider_specific: false,
        };
        for r in &policy.rules {
            reach.governs |= r.action.mode != Mode::Pass;
            let any_provider = r.matcher.provider == ProviderSelector::Any;
            reach.provider_specific |= !any_provider;
            reach.at_create |= any_provider && acts_at_create(&r.action);
        }
        reach
    }
}
