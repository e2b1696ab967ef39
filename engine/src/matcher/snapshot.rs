//! [`PolicySnapshot`]: the policy in force for one callback, and the rule slots the
//! callbacks use (a rule index, or one of the special slots below).

use alloc::sync::Arc;

use crate::matcher::{CompiledPolicy, Exemption, FileKey};
use crate::path::{FileName, InsufficientResources, NameError};
use crate::policy::{Action, FileProvider};
use crate::stats::Counters;

/// Rule slot meaning "the policy's default action" (no rule matched).
pub const DEFAULT_RULE_SLOT: u32 = u32::MAX;

/// Rule slot meaning "never governed" ([`crate::matcher::Exemption`]: named pipe /
/// mailslot shares): neither a rule nor the default action applies, in this or any
/// later policy generation (its action is always `pass`). The callbacks pass such a
/// file's operations through and attach no `StreamContext`, so this slot is never
/// cached, never sent through a `CompletionContext` and never recorded against a
/// rule's counters. Not a rule index (at most `MAX_RULES - 1` = 16,383).
pub const EXEMPT_SLOT: u32 = u32::MAX - 1;

/// Rule slot of a `CompletionContext::Create` whose pre-create did not classify
/// the file (no rule of the policy can act before the file object is open,
/// [`crate::matcher::Reach::at_create`]): the post-create classifies it, once. Not a
/// rule index and never stored in a `StreamContext`.
pub const UNCLASSIFIED_SLOT: u32 = u32::MAX - 2;

/// A consistent view of the policy in force for one callback (an `Arc` clone;
/// no lock is held while it is used).
pub struct PolicySnapshot {
    policy: Arc<CompiledPolicy>,
}

impl PolicySnapshot {
    /// A snapshot of `policy` (the `Arc` the engine state hands out).
    pub fn new(policy: Arc<CompiledPolicy>) -> Self {
        PolicySnapshot { policy }
    }
}

/// The rule index of `slot` (`None` for the default action).
pub fn index(slot: u32) -> Option<u32> {
    (slot != DEFAULT_RULE_SLOT).then_some(slot)
}

impl PolicySnapshot {
    /// Low 32 bits of the policy generation (what a `StreamContext` stores).
    pub fn generation(&self) -> u32 {
        self.policy.generation() as u32
    }

    /// The rule governing a file: `(slot, action)`. `name` is the normalized name; a
    /// name that does not parse matches only rules without share/path/extension.
    /// A file FlushGuard never governs ([`Exemption`]: `\\server\PIPE`,
    /// `\\server\MAILSLOT`, `\\server\IPC$`, also when the rest of the name does
    /// not parse) gets `(EXEMPT_SLOT, Action::PASS)` whatever the policy says.
    ///
    /// # Errors
    /// [`InsufficientResources`] when the parsed name's buffers could not be
    /// allocated: no rule is chosen (the caller passes the operation through).
    pub fn lookup(
        &self,
        provider: FileProvider,
        name: &str,
        image: &str,
    ) -> Result<(u32, Action), InsufficientResources> {
        let parsed = match FileName::parse(name) {
            Ok(n) => Some(n),
            Err(NameError::Invalid(_)) => {
                if Exemption::of_unparsed(name)?.is_some() {
                    return Ok((EXEMPT_SLOT, Action::PASS));
                }
                None
            }
            Err(NameError::InsufficientResources) => return Err(InsufficientResources),
        };
        let key = FileKey {
            provider,
            name: parsed.as_ref(),
            process_image: image,
        };
        let rule = self.policy.lookup(&key);
        if rule.exempt.is_some() {
            return Ok((EXEMPT_SLOT, Action::PASS));
        }
        Ok((rule.index.unwrap_or(DEFAULT_RULE_SLOT), rule.action))
    }

    /// The action of rule `slot` in this policy (`None` for an index past the end;
    /// always `pass` for [`EXEMPT_SLOT`]).
    pub fn action(&self, slot: u32) -> Option<Action> {
        if slot == EXEMPT_SLOT {
            return Some(Action::PASS);
        }
        match index(slot) {
            None => Some(self.policy.policy().default_action),
            Some(i) => self.policy.policy().rules.get(i as usize).map(|r| r.action),
        }
    }

    /// What the policy can do ([`crate::matcher::Reach`]): whether a create must be
    /// classified at all, before the file is open, or only after.
    pub fn reach(&self) -> crate::matcher::Reach {
        self.policy.reach()
    }

    /// The policy asks to attach to local volumes too.
    pub fn attach_local_volumes(&self) -> bool {
        self.policy.policy().attach_local_volumes
    }

    /// The per-rule counters of `slot`.
    pub fn counters(&self, slot: u32) -> &Counters {
        self.policy.counters(index(slot))
    }
}
