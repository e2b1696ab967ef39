//! [`Exemption`]: files FlushGuard never governs, whatever the policy says.

use crate::path::{self, FileName};

/// Why a file is never governed, whatever the policy says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exemption {
    /// The file is on a server's interprocess-communication share: `\\server\PIPE`
    /// (remote named pipes), `\\server\MAILSLOT` (remote mailslots) or
    /// `\\server\IPC$`, in any accepted spelling (`\Device\Mup\server\PIPE\x`,
    /// `\\?\UNC\server\pipe\x`, ...), compared case-insensitively. MUP routes
    /// these to the redirector, so the filter on the MUP volume sees them, but
    /// durability means nothing for IPC and a flush on a pipe blocks until the
    /// reader has drained it (on a remote pipe an SMB2 FLUSH the server forwards
    /// to NPFS): write-through or a flush could hang the application.
    /// Sources: Win32 "FlushFileBuffers" page (a flush of a named pipe's server end
    /// does not return until the client has read all buffered data); MS-SMB2 2.2.10
    /// (`SMB2_SHARE_TYPE_PIPE`: pipes are reached through the server's `IPC$`
    /// share); the Win32 `\\server\pipe\name` / `\\server\mailslot\name` syntax.
    IpcShare,
}

impl Exemption {
    /// The exemption of a normalized share (`\\server\share` folded, as
    /// [`FileName::share`] and [`path::normalize_share`] give it), if any.
    /// A share named like an IPC share only in part (`pipes`, `pipe2`) is not exempt.
    pub fn of_share(share: &str) -> Option<Exemption> {
        let name = share.rsplit('\\').next().unwrap_or("");
        matches!(name, "pipe" | "mailslot" | "ipc$").then_some(Exemption::IpcShare)
    }

    /// The exemption of a name that [`FileName::parse`] rejected as invalid (a pipe
    /// name may hold a `.` component or a control character that no file name
    /// does): the share is taken from the shortest prefix, cut at a separator, that
    /// parses as a name on a share (`\\srv\pipe` of `\\srv\pipe\a\..\b`; at most
    /// 16 prefixes, which covers MUP's `;Redirector` components).
    ///
    /// # Errors
    /// [`path::InsufficientResources`] when a prefix's buffers could not be allocated.
    pub fn of_unparsed(name: &str) -> Result<Option<Exemption>, path::InsufficientResources> {
        let cuts = name
            .char_indices()
            .filter(|&(i, c)| i > 1 && (c == '\\' || c == '/'))
            .map(|(i, _)| i)
            .chain(core::iter::once(name.len()))
            .take(16);
        for cut in cuts {
            match FileName::parse(name.get(..cut).unwrap_or("")) {
                Ok(n) => {
                    if let Some(share) = n.share() {
                        return Ok(Self::of_share(share));
                    }
                }
                Err(path::NameError::InsufficientResources) => {
                    return Err(path::InsufficientResources)
                }
                Err(path::NameError::Invalid(_)) => {}
            }
        }
        Ok(None)
    }
}

impl core::fmt::Display for Exemption {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Exemption::IpcShare => f.write_str("named pipe / mailslot share: never governed"),
        }
    }
}
