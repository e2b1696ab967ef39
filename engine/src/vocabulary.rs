//! The policy's vocabulary: [`Mode`], [`FlushMethod`], [`ProviderSelector`] (a rule's provider
//! selector) and [`FileProvider`] (what a file is on). Each is one table of variant,
//! wire code and policy-file name, written once in a [`named_codes!`] invocation that
//! generates `code` / `from_code` (the blob layout of [`flushguard_protocol::policy`]),
//! `name` / `from_name` / `ALL`, and, with the `std` feature, the serde form the policy
//! file uses (so an unknown value is reported as "unknown variant `x`, expected one of
//! ..." in table order).

use flushguard_protocol::DecodeError;

/// Defines a fieldless enum from a table of `Variant = code, "name";` rows.
///
/// Generates, in table order: `ALL`, `code`, `from_code` (error
/// `DecodeError::BadValue { field: $field, .. }`), `name`, `from_name`, and with
/// `std` serde `Serialize` / `Deserialize` by name. Without `= code` (the `names`
/// form), only `ALL`, `name`, `from_name` and serde.
macro_rules! named_codes {
    (
        $(#[$em:meta])*
        pub enum $Enum:ident (wire field $field:literal) {
            $( $(#[$vm:meta])* $Var:ident = $code:literal, $name:literal; )*
        }
    ) => {
        named_codes! {
            $(#[$em])*
            pub enum $Enum (names) {
                $( $(#[$vm])* $Var, $name; )*
            }
        }

        impl $Enum {
            /// Wire code (in the policy blob, field
            #[doc = concat!("`", $field, "`).")]
            pub const fn code(self) -> u16 {
                match self {
                    $( $Enum::$Var => $code, )*
                }
            }

            /// From a wire code. Error: `DecodeError::BadValue` naming
            #[doc = concat!("`", $field, "`.")]
            pub const fn from_code(c: u16) -> Result<Self, DecodeError> {
                match c {
                    $( $code => Ok($Enum::$Var), )*
                    v => Err(DecodeError::BadValue {
                        field: $field,
                        value: v as u32,
                    }),
                }
            }
        }
    };
    (
        $(#[$em:meta])*
        pub enum $Enum:ident (names) {
            $( $(#[$vm:meta])* $Var:ident, $name:literal; )*
        }
    ) => {
        $(#[$em])*
        #[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize))]
        pub enum $Enum {
            $(
                $(#[$vm])*
                #[cfg_attr(feature = "std", serde(rename = $name))]
                $Var,
            )*
        }

        impl $Enum {
            /// Every value, in table order.
            pub const ALL: &'static [$Enum] = &[ $( $Enum::$Var ),* ];

            /// Policy-file spelling:
            #[doc = concat!( $( "`", $name, "` " ),* )]
            pub const fn name(self) -> &'static str {
                match self {
                    $( $Enum::$Var => $name, )*
                }
            }

            /// Parses a policy-file spelling (case-sensitive, as [`name`](Self::name)
            /// writes it); `None` for anything else.
            pub fn from_name(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == s)
            }
        }
    };
}

named_codes! {
    /// Redirector a rule applies to: the rule side, a selector that includes
    /// [`ProviderSelector::Any`]. A file's own provider is a [`FileProvider`]; see
    /// [`ProviderSelector::covers`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub enum ProviderSelector (wire field "Rule.provider") {
        /// Any provider, and local volumes when attached.
        #[default]
        Any = 0, "any";
        /// SMB (LanmanWorkstation redirector, `\Device\LanmanRedirector`).
        Smb = 1, "smb";
        /// WebDAV redirector (`\Device\WebDavRedirector`).
        WebDav = 2, "webdav";
        /// NFS client (`\Device\nfsrdr`).
        Nfs = 3, "nfs";
        /// Remote Desktop drive redirection (`\Device\RdpDr`).
        Rdpdr = 4, "rdpdr";
    }
}

impl ProviderSelector {
    /// True when a file on `file` is covered by this rule provider.
    pub const fn covers(self, file: FileProvider) -> bool {
        matches!(
            (self, file),
            (ProviderSelector::Any, _)
                | (ProviderSelector::Smb, FileProvider::Smb)
                | (ProviderSelector::WebDav, FileProvider::WebDav)
                | (ProviderSelector::Nfs, FileProvider::Nfs)
                | (ProviderSelector::Rdpdr, FileProvider::Rdpdr)
        )
    }
}

named_codes! {
    /// What a file is on, as the driver determines it with
    /// `FsRtlMupGetProviderInfoFromFileObject` (network) or from the volume type. Never
    /// on the wire; flushctl's trace reader and `--provider` use the same values.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum FileProvider (names) {
        /// SMB redirector.
        Smb, "smb";
        /// WebDAV redirector.
        WebDav, "webdav";
        /// NFS redirector.
        Nfs, "nfs";
        /// RDP drive redirector.
        Rdpdr, "rdpdr";
        /// Another MUP provider (third-party redirector).
        Other, "other";
        /// A local volume (only with `attach_local_volumes`).
        Local, "local";
    }
}

named_codes! {
    /// What a rule does to the files it covers.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
    pub enum Mode (wire field "Action.mode") {
        /// Change nothing, count nothing beyond writes seen.
        #[default]
        Pass = 0, "pass";
        /// Count what the audited mode would do; change nothing.
        Audit = 1, "audit";
        /// FILE_WRITE_THROUGH at IRP_MJ_CREATE and SL_WRITE_THROUGH on every IRP_MJ_WRITE.
        WriteThrough = 2, "write-through";
        /// Flush after every successful non-paging write (and at cleanup if a flush
        /// after write was skipped).
        FlushAfterWrite = 3, "flush-after-write";
        /// Flush at IRP_MJ_CLEANUP when the handle's file was written since its last flush.
        FlushOnClose = 4, "flush-on-close";
        /// Like flush-after-write (each governed write completes only after a flush
        /// that started after it completed), but writers of one stream share flushes:
        /// those arriving while a flush is in flight wait for the next one
        /// ([`crate::group_commit`]; options `max-batch`, `max-batch-wait-us`).
        GroupCommit = 5, "group-commit";
    }
}

impl Mode {
    /// True for the modes that change I/O (write-through and the flush modes).
    pub const fn is_enforcing(self) -> bool {
        matches!(
            self,
            Mode::WriteThrough | Mode::FlushAfterWrite | Mode::FlushOnClose | Mode::GroupCommit
        )
    }

    /// True for the modes that flush (after writes, at cleanup, or in batches).
    pub const fn is_flushing(self) -> bool {
        matches!(
            self,
            Mode::FlushAfterWrite | Mode::FlushOnClose | Mode::GroupCommit
        )
    }

    /// True for the modes that flush after each governed write before it completes
    /// (flush-after-write; group-commit, one flush per batch).
    pub const fn flushes_after_write(self) -> bool {
        matches!(self, Mode::FlushAfterWrite | Mode::GroupCommit)
    }
}

named_codes! {
    /// How FlushGuard issues its own flushes.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub enum FlushMethod (wire field "Action.method") {
        /// `FltFlushBuffers2(Instance, FileObject, FLT_FLUSH_TYPE_*, CallbackData)`
        /// (Windows 10 1903+, resolved with FltGetRoutineAddress; `FltFlushBuffers`
        /// full flush otherwise). Sent to the instances below FlushGuard.
        #[default]
        Filter = 0, "filter";
        /// `ZwFlushBuffersFileEx(handle, FLUSH_FLAGS_*, ...)` on a kernel handle for
        /// the file object; enters at the top of the stack (re-enters FlushGuard,
        /// which recognizes its own flush). No purge.
        Native = 1, "native";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for &m in Mode::ALL {
            assert_eq!(Mode::from_code(m.code()), Ok(m));
            assert_eq!(Mode::from_name(m.name()), Some(m));
        }
        for &m in FlushMethod::ALL {
            assert_eq!(FlushMethod::from_code(m.code()), Ok(m));
            assert_eq!(FlushMethod::from_name(m.name()), Some(m));
        }
        for &p in ProviderSelector::ALL {
            assert_eq!(ProviderSelector::from_code(p.code()), Ok(p));
            assert_eq!(ProviderSelector::from_name(p.name()), Some(p));
        }
        for &p in FileProvider::ALL {
            assert_eq!(FileProvider::from_name(p.name()), Some(p));
        }
        assert_eq!(
            Mode::from_code(6),
            Err(DecodeError::BadValue {
                field: "Action.mode",
                value: 6
            })
        );
        assert_eq!(ProviderSelector::from_name("Any"), None);
    }
}
