//! Recognising network paths in Process Monitor's `Path` column.
//!
//! Process Monitor shows the name the application used, lightly normalised. A file on a
//! network share appears in one of these shapes:
//!
//! | shape | example |
//! |---|---|
//! | UNC | `\\fs01\projects\plan.docx` |
//! | Win32 long UNC | `\\?\UNC\fs01\projects\plan.docx` |
//! | MUP device | `\Device\Mup\fs01\projects\plan.docx` |
//! | MUP device with provider prefix | `\Device\Mup\;LanmanRedirector\;Z:000000000001a2b3\fs01\projects\plan.docx` |
//! | redirector device | `\Device\LanmanRedirector\fs01\projects\plan.docx` |
//! | mapped drive letter | `Z:\plan.docx` (needs `--map Z:=\\fs01\projects`) |
//!
//! Every remote path is rewritten to the name Filter Manager reports on the MUP volume,
//! `\Device\Mup\server\share\rest`, which is what the driver matches rules against.
//! Drive letters without a `--map` and `\Device\HarddiskVolumeN\...` names are local.

use flushguard_engine::FileProvider;
use thiserror::Error;

/// Where a trace path lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file on a network share.
    Remote {
        /// The redirector serving it, as `FsRtlMupGetProviderIdFromName` would report
        /// it (never [`FileProvider::Local`]).
        redirector: FileProvider,
        /// `\Device\Mup\server\share[\rest]`, the MUP-normalised name.
        device_name: String,
    },
    /// A file on a local volume (drive letter without `--map`, `\Device\HarddiskVolumeN`).
    Local {
        /// The path as the trace shows it.
        name: String,
    },
    /// Not a file-system path (registry keys, empty paths of process events, `\\.\` devices).
    NotAFile,
}

/// A `--map` argument that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid --map `{arg}`: {why} (expected the form Z:=\\\\server\\share)")]
pub struct MapError {
    arg: String,
    why: &'static str,
}

/// Drive-letter mappings (`--map Z:=\\server\share`) plus the rules above.
#[derive(Debug, Clone, Default)]
pub struct PathResolver {
    /// Index 0 = `A:`; value = `\\server\share` without a trailing backslash.
    drives: [Option<(FileProvider, String)>; 26],
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn drive_index(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
        .then(|| usize::from(b[0].to_ascii_uppercase() - b'A'))
}

/// Guesses the redirector of a `server\share\...` name: `\\tsclient\` is RDPDR; a server
/// with `@SSL` / `@port` or a `DavWWWRoot` share is WebDAV; anything else is SMB (NFS
/// shares look like SMB ones in Win32 names and are only recognised through the
/// `\Device\Mup\;nfs...` provider prefix).
fn guess_redirector(server: &str, share: &str) -> FileProvider {
    if server.eq_ignore_ascii_case("tsclient") {
        FileProvider::Rdpdr
    } else if server.contains('@') || share.eq_ignore_ascii_case("DavWWWRoot") {
        FileProvider::WebDav
    } else {
        FileProvider::Smb
    }
}

fn provider_prefix(component: &str) -> Option<FileProvider> {
    let name = component.strip_prefix(';')?;
    let lower = name.to_ascii_lowercase();
    Some(
        if lower.starts_with("lanmanredirector") || lower == "mrxsmb" {
            FileProvider::Smb
        } else if lower.starts_with("webdavredirector") || lower == "mrxdav" {
            FileProvider::WebDav
        } else if lower.starts_with("rdpdr") {
            FileProvider::Rdpdr
        } else if lower.starts_with("nfs") {
            FileProvider::Nfs
        } else {
            FileProvider::Smb
        },
    )
}

/// Builds a remote location from `server\share[\rest]` (no leading backslashes),
/// skipping `;`-prefixed provider components. Returns `None` when the server or share is
/// missing.
fn remote(after_root: &str, known: Option<FileProvider>) -> Option<Location> {
    let mut redirector = known;
    let mut rest = after_root;
    while let Some(stripped) = rest.strip_prefix(';') {
        let (component, tail) = stripped.split_once('\\').unwrap_or((stripped, ""));
        if redirector.is_none() {
            redirector = provider_prefix(&rest[..component.len() + 1]);
        }
        rest = tail;
    }
    let mut parts = rest.splitn(3, '\\');
    let server = parts.next().filter(|s| !s.is_empty())?;
    let share = parts.next().filter(|s| !s.is_empty())?;
    let redirector = redirector.unwrap_or_else(|| guess_redirector(server, share));
    let mut device_name = String::with_capacity(12 + rest.len());
    device_name.push_str("\\Device\\Mup\\");
    device_name.push_str(rest.trim_end_matches('\\'));
    Some(Location::Remote {
        redirector,
        device_name,
    })
}

impl PathResolver {
    /// A resolver without drive mappings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one `--map` argument, `Z:=\\server\share` (a trailing backslash is allowed).
    ///
    /// # Errors
    /// [`MapError`] when the left side is not a drive letter or the right side is not a
    /// `\\server\share` UNC root.
    pub fn add_map(&mut self, arg: &str) -> Result<(), MapError> {
        let err = |why| MapError {
            arg: arg.to_owned(),
            why,
        };
        let (drive, target) = arg.split_once('=').ok_or_else(|| err("no `=`"))?;
        let drive = drive.trim();
        let idx = drive_index(drive)
            .filter(|_| drive.len() == 2)
            .ok_or_else(|| err("the left side must be a drive letter such as Z:"))?;
        let target = target.trim().trim_end_matches('\\');
        let body = target
            .strip_prefix("\\\\")
            .ok_or_else(|| err("the right side must start with \\\\"))?;
        let Some(Location::Remote { redirector, .. }) = remote(body, None) else {
            return Err(err("the right side needs both a server and a share"));
        };
        if body.matches('\\').count() != 1 {
            return Err(err(
                "map a drive to a share root, not to a folder inside it",
            ));
        }
        self.drives[idx] = Some((redirector, body.to_owned()));
        Ok(())
    }

    /// Classifies one trace path.
    pub fn resolve(&self, path: &str) -> Location {
        let mut p = path;
        // Win32 and NT namespace prefixes.
        for pre in ["\\\\?\\", "\\??\\"] {
            if let Some(r) = p.strip_prefix(pre) {
                if let Some(unc) = strip_prefix_ci(r, "UNC\\") {
                    return remote(unc, None).unwrap_or(Location::NotAFile);
                }
                p = r;
                break;
            }
        }
        if let Some(r) = strip_prefix_ci(p, "\\Device\\Mup\\") {
            return remote(r, None).unwrap_or(Location::NotAFile);
        }
        for (dev, redirector) in [
            ("\\Device\\LanmanRedirector\\", FileProvider::Smb),
            ("\\Device\\WebDavRedirector\\", FileProvider::WebDav),
            ("\\Device\\RdpDr\\", FileProvider::Rdpdr),
            ("\\Device\\Nfs\\", FileProvider::Nfs),
        ] {
            if let Some(r) = strip_prefix_ci(p, dev) {
                return remote(r, Some(redirector)).unwrap_or(Location::NotAFile);
            }
        }
        if strip_prefix_ci(p, "\\Device\\").is_some() {
            return Location::Local { name: p.to_owned() };
        }
        if let Some(unc) = p.strip_prefix("\\\\") {
            if unc.starts_with(".\\") {
                return Location::NotAFile;
            }
            return remote(unc, None).unwrap_or(Location::NotAFile);
        }
        if let Some(idx) = drive_index(p) {
            let tail = &p[2..];
            if !(tail.is_empty() || tail.starts_with('\\')) {
                return Location::NotAFile;
            }
            if let Some((redirector, root)) = &self.drives[idx] {
                let mut device_name = String::with_capacity(12 + root.len() + tail.len());
                device_name.push_str("\\Device\\Mup\\");
                device_name.push_str(root);
                device_name.push_str(tail.trim_end_matches('\\'));
                return Location::Remote {
                    redirector: *redirector,
                    device_name,
                };
            }
            return Location::Local { name: p.to_owned() };
        }
        Location::NotAFile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote_name(r: &PathResolver, p: &str) -> (FileProvider, String) {
        match r.resolve(p) {
            Location::Remote {
                redirector,
                device_name,
            } => (redirector, device_name),
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn unc_shapes() {
        let r = PathResolver::new();
        let want = (
            FileProvider::Smb,
            "\\Device\\Mup\\fs01\\proj\\a.txt".to_owned(),
        );
        assert_eq!(remote_name(&r, "\\\\fs01\\proj\\a.txt"), want);
        assert_eq!(remote_name(&r, "\\\\?\\UNC\\fs01\\proj\\a.txt"), want);
        assert_eq!(remote_name(&r, "\\Device\\Mup\\fs01\\proj\\a.txt"), want);
        assert_eq!(remote_name(&r, "\\device\\mup\\fs01\\proj\\a.txt"), want);
        assert_eq!(
            remote_name(
                &r,
                "\\Device\\Mup\\;LanmanRedirector\\;Z:000000000001a2b3\\fs01\\proj\\a.txt"
            ),
            want
        );
        assert_eq!(
            remote_name(&r, "\\Device\\LanmanRedirector\\fs01\\proj\\a.txt"),
            want
        );
        assert_eq!(remote_name(&r, "\\\\tsclient\\C\\x").0, FileProvider::Rdpdr);
        assert_eq!(
            remote_name(&r, "\\\\dav.example@SSL\\DavWWWRoot\\x").0,
            FileProvider::WebDav
        );
        assert_eq!(
            remote_name(&r, "\\Device\\Mup\\;nfs\\srv\\export\\x").0,
            FileProvider::Nfs
        );
        // A share root is a file-system path too (directory opens).
        assert_eq!(
            remote_name(&r, "\\\\fs01\\proj\\").1,
            "\\Device\\Mup\\fs01\\proj"
        );
        assert_eq!(r.resolve("\\\\fs01"), Location::NotAFile);
        assert_eq!(r.resolve("\\\\.\\PhysicalDrive0"), Location::NotAFile);
    }

    #[test]
    fn drive_maps() {
        let mut r = PathResolver::new();
        assert!(matches!(
            r.resolve("C:\\Temp\\bbbb.txt"),
            Location::Local { .. }
        ));
        r.add_map("c:=\\\\fs01\\home\\").unwrap();
        assert_eq!(
            remote_name(&r, "C:\\Temp\\bbbb.txt"),
            (
                FileProvider::Smb,
                "\\Device\\Mup\\fs01\\home\\Temp\\bbbb.txt".to_owned()
            )
        );
        assert_eq!(remote_name(&r, "C:").1, "\\Device\\Mup\\fs01\\home");
        assert!(matches!(r.resolve("D:\\x"), Location::Local { .. }));
        assert_eq!(r.resolve("HKLM\\Software"), Location::NotAFile);
        assert_eq!(r.resolve(""), Location::NotAFile);
        assert!(matches!(
            r.resolve("\\Device\\HarddiskVolume3\\x"),
            Location::Local { .. }
        ));
    }

    #[test]
    fn bad_maps() {
        let mut r = PathResolver::new();
        for bad in [
            "Z=\\\\s\\x",
            "Z:\\\\s\\x",
            "ZZ:=\\\\s\\x",
            "Z:=\\\\s",
            "Z:=s\\x",
            "Z:=\\\\s\\x\\dir",
        ] {
            assert!(r.add_map(bad).is_err(), "{bad}");
        }
    }
}
