//! The SMB2/3 target of `durability run|verify --target smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH`:
//! flushctl speaks SMB itself (the `smb2` crate: NTLM, signing or encryption as the
//! server requires), so a share can be tested from any OS, without a kernel client.
//! `smb2` 0.39 does not set `SMB2_GLOBAL_CAP_ENCRYPTION`; flushctl sets it on the wire
//! itself and re-hashes the preauth integrity value ([`negotiate`]), which is what
//! lets it reach a server or share that requires encryption.
//!
//! The requests whose bits matter are built here, from `smb2`'s wire structures, not by
//! the crate's file helpers, so each pattern reaches the wire exactly as documented:
//!
//! | pattern | CREATE CreateOptions | WRITE Flags | after each record |
//! |---|---|---|---|
//! | `plain` | `FILE_NON_DIRECTORY_FILE` (0x40) | 0 | nothing |
//! | `write-through` | 0x40 | `SMB2_WRITEFLAG_WRITE_THROUGH` (0x1) | nothing |
//! | `create-write-through` | 0x40 \| `FILE_WRITE_THROUGH` (0x2) | 0 | nothing |
//! | `flush` | 0x40 | 0 | SMB2 FLUSH |
//!
//! (The `smb` crate, 0.12, sends its `write_through` as bit 0x2, which is
//! `SMB2_WRITEFLAG_WRITE_UNBUFFERED`; servers at dialect 3.0.2 or later treat that as
//! write-through too, which hides the bug. `smb2` has the right constant, and flushctl
//! sets the Flags field itself anyway: [`write_request`].)
//!
//! A record larger than [`MAX_CHUNK`] bytes goes out as several WRITEs (each with the
//! pattern's flags), and the FLUSH of `flush` follows the last of them. Requests go out
//! one at a time per writer; writers share one session (one TCP connection) and each
//! has its own handle, as threads of one process on a Windows client do.

use std::io::{self, Read};
use std::sync::Arc;

use smb2::client::connection::Connection;
use smb2::client::tree::Tree;
use smb2::client::{Cipher, Session};
use smb2::msg::close::CloseRequest;
use smb2::msg::create::{
    CreateDisposition, CreateRequest, CreateResponse, ImpersonationLevel, ShareAccess,
};
use smb2::msg::flush::FlushRequest;
use smb2::msg::read::{ReadRequest, ReadResponse};
use smb2::msg::write::WriteRequest;
use smb2::pack::{Pack, ReadCursor, Unpack};
use smb2::transport::{ConnectOptions, TcpTransport};
use smb2::types::flags::FileAccessMask;
use smb2::types::status::NtStatus;
use smb2::types::{Command, Dialect, FileId, OplockLevel, TreeId};

use super::target::Pattern;

/// The environment variable `durability` reads the SMB password from (when unset, the
/// password is asked for on the terminal).
pub const PASSWORD_ENV: &str = "FLUSHCTL_SMB_PASSWORD";

/// The default SMB port (direct TCP).
pub const DEFAULT_PORT: u16 = 445;

/// WRITE Flags bit: write through to stable storage before answering (MS-SMB2 2.2.21).
pub const SMB2_WRITEFLAG_WRITE_THROUGH: u32 = 0x0000_0001;
/// WRITE Flags bit: no server-side buffering (dialect 3.0.2 on). flushctl never sets it.
pub const SMB2_WRITEFLAG_WRITE_UNBUFFERED: u32 = 0x0000_0002;
/// CREATE CreateOptions bit: writes on the handle are write-through (MS-SMB2 2.2.13).
pub const FILE_WRITE_THROUGH: u32 = 0x0000_0002;
/// CREATE CreateOptions bit: the name must not be a directory.
pub const FILE_NON_DIRECTORY_FILE: u32 = 0x0000_0040;
/// Largest WRITE or READ payload sent, in bytes: 64 KiB, one credit each.
pub const MAX_CHUNK: u32 = 65_536;

/// Size of the SMB2 header, in bytes.
const HEADER_LEN: u16 = 64;

/// A parsed `smb://` target. The password is never part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmbUrl {
    /// NTLM domain (`DOMAIN;` before the user); empty when none.
    pub domain: String,
    /// User name.
    pub user: String,
    /// Host name or IP address (an IPv6 address without its brackets).
    pub host: String,
    /// TCP port (445 unless given).
    pub port: u16,
    /// Share name.
    pub share: String,
    /// Path of the file in the share, components joined with `\` (no leading `\`).
    pub path: String,
}

/// Why an `smb://` URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// It does not start with `smb://`.
    #[error("`{0}` is not an smb:// URL")]
    NotSmb(String),
    /// No `USER@` before the host.
    #[error("smb:// URL without a user: expected smb://USER@HOST[:PORT]/SHARE/PATH (use guest@ for guest access)")]
    NoUser,
    /// A password in the URL (`USER:PASSWORD@`).
    #[error(
        "smb:// URL with a password: leave it out and set {PASSWORD_ENV} (or type it when asked)"
    )]
    PasswordInUrl,
    /// Empty or malformed host (including an unclosed `[` of an IPv6 address).
    #[error("smb:// URL: bad host `{0}`")]
    BadHost(String),
    /// A port that is not a number in 1..=65535.
    #[error("smb:// URL: bad port `{0}` (expected 1 to 65535)")]
    BadPort(String),
    /// No share after the host.
    #[error("smb:// URL without a share: expected smb://USER@HOST[:PORT]/SHARE/PATH")]
    NoShare,
    /// No file path after the share.
    #[error("smb:// URL without a file in the share: expected smb://USER@HOST[:PORT]/SHARE/PATH")]
    NoPath,
    /// A user, share or path component SMB cannot carry.
    #[error("smb:// URL: {what} `{value}`: {reason}")]
    BadComponent {
        /// `user`, `share` or `path component`.
        what: &'static str,
        /// The component (after percent-decoding).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `%` not followed by two hex digits, or an escape that is not UTF-8.
    #[error("smb:// URL: bad percent-escape in `{0}`")]
    BadEscape(String),
}

fn percent_decode(s: &str) -> Result<String, UrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UrlError::BadEscape(s.to_owned()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::BadEscape(s.to_owned()))
}

fn check_name(what: &'static str, value: &str) -> Result<(), UrlError> {
    let bad = |reason| {
        Err(UrlError::BadComponent {
            what,
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return bad("empty");
    }
    if value == "." || value == ".." {
        return bad("`.` and `..` are not allowed");
    }
    if value.chars().any(|c| c.is_control()) {
        return bad("control characters are not allowed");
    }
    if what != "user" && value.chars().any(|c| "\"*:<>?\\|/".contains(c)) {
        return bad("SMB names cannot contain \" * : < > ? \\ | (nor an escaped /)");
    }
    if what != "user" && value.ends_with([' ', '.']) {
        return bad("SMB names cannot end in a space or a period");
    }
    Ok(())
}

impl SmbUrl {
    /// True when `s` is meant as an SMB target (starts with `smb://`, any case).
    pub fn is_smb(s: &str) -> bool {
        s.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("smb://"))
    }

    /// Parses `smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH`: HOST is a name, an IPv4
    /// address or a bracketed IPv6 address; PORT defaults to 445; PATH has one or more
    /// `/`-separated components. User, share and path may be percent-encoded.
    ///
    /// # Errors
    /// [`UrlError::NotSmb`], [`UrlError::NoUser`], [`UrlError::PasswordInUrl`],
    /// [`UrlError::BadHost`], [`UrlError::BadPort`], [`UrlError::NoShare`],
    /// [`UrlError::NoPath`], [`UrlError::BadComponent`] (empty, `.`/`..`, control
    /// characters, characters SMB forbids in names), [`UrlError::BadEscape`].
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        if !Self::is_smb(s) {
            return Err(UrlError::NotSmb(s.to_owned()));
        }
        let rest = &s[6..];
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let Some((userinfo, hostport)) = authority.rsplit_once('@') else {
            return Err(UrlError::NoUser);
        };
        if userinfo.contains(':') {
            return Err(UrlError::PasswordInUrl);
        }
        let userinfo = percent_decode(userinfo)?;
        let (domain, user) = match userinfo.split_once(';') {
            Some((d, u)) => (d.to_owned(), u.to_owned()),
            None => (String::new(), userinfo),
        };
        if user.is_empty() {
            return Err(UrlError::NoUser);
        }
        check_name("user", &user)?;
        if !domain.is_empty() {
            check_name("user", &domain)?;
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                return Err(UrlError::BadHost(hostport.to_owned()));
            };
            match after {
                "" => (h, None),
                p if p.starts_with(':') => (h, Some(&p[1..])),
                _ => return Err(UrlError::BadHost(hostport.to_owned())),
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "/\\@[]".contains(c))
        {
            return Err(UrlError::BadHost(host.to_owned()));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(UrlError::BadPort(p.to_owned())),
            },
        };
        let mut parts = path.split('/');
        let share = percent_decode(parts.next().unwrap_or(""))?;
        if share.is_empty() {
            return Err(UrlError::NoShare);
        }
        check_name("share", &share)?;
        let comps: Vec<String> = parts.map(percent_decode).collect::<Result<_, _>>()?;
        if comps.is_empty() || comps.iter().all(String::is_empty) {
            return Err(UrlError::NoPath);
        }
        for c in &comps {
            check_name("path component", c)?;
        }
        Ok(SmbUrl {
            domain,
            user,
            host: host.to_owned(),
            port,
            share,
            path: comps.join("\\"),
        })
    }

    /// `HOST:PORT` to dial (`[V6]:PORT` for an IPv6 address).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for SmbUrl {
    /// `smb://[DOMAIN;]USER@HOST:PORT/SHARE/PATH` (never a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dom = if self.domain.is_empty() {
            String::new()
        } else {
            format!("{};", self.domain)
        };
        write!(
            f,
            "smb://{dom}{}@{}/{}/{}",
            self.user,
            self.addr(),
            self.share,
            self.path.replace('\\', "/")
        )
    }
}

/// The CREATE a writer sends for `pattern` (`first`: the run's first open).
///
/// Read and write data access, every share mode, no oplock (so the server never
/// caches on the client's behalf), `FILE_OPEN_IF`; CreateOptions is
/// `FILE_NON_DIRECTORY_FILE`, plus `FILE_WRITE_THROUGH` for create-write-through, whose
/// first open is `FILE_OVERWRITE_IF` (the file is created anew, as on Windows).
pub fn create_request(path: &str, pattern: Pattern, first: bool) -> CreateRequest {
    let write_through = pattern == Pattern::CreateWriteThrough;
    CreateRequest {
        requested_oplock_level: OplockLevel::None,
        impersonation_level: ImpersonationLevel::Impersonation,
        desired_access: FileAccessMask::new(
            FileAccessMask::FILE_READ_DATA
                | FileAccessMask::FILE_WRITE_DATA
                | FileAccessMask::FILE_READ_ATTRIBUTES
                | FileAccessMask::SYNCHRONIZE,
        ),
        file_attributes: smb2::FileAttributes::NORMAL,
        share_access: ShareAccess(
            ShareAccess::FILE_SHARE_READ
                | ShareAccess::FILE_SHARE_WRITE
                | ShareAccess::FILE_SHARE_DELETE,
        ),
        create_disposition: if write_through && first {
            CreateDisposition::FileOverwriteIf
        } else {
            CreateDisposition::FileOpenIf
        },
        create_options: FILE_NON_DIRECTORY_FILE
            | if write_through { FILE_WRITE_THROUGH } else { 0 },
        name: path.to_owned(),
        create_contexts: vec![],
    }
}

/// The CREATE of `durability verify`: read access, `FILE_OPEN` (the target must exist).
pub fn open_read_request(path: &str) -> CreateRequest {
    CreateRequest {
        desired_access: FileAccessMask::new(
            FileAccessMask::FILE_READ_DATA
                | FileAccessMask::FILE_READ_ATTRIBUTES
                | FileAccessMask::SYNCHRONIZE,
        ),
        create_disposition: CreateDisposition::FileOpen,
        create_options: FILE_NON_DIRECTORY_FILE,
        ..create_request(path, Pattern::Plain, false)
    }
}

/// The WRITE of `data` (at most [`MAX_CHUNK`] bytes) at byte `offset`: Flags is
/// `SMB2_WRITEFLAG_WRITE_THROUGH` for write-through and 0 otherwise (never
/// `SMB2_WRITEFLAG_WRITE_UNBUFFERED`).
pub fn write_request(file_id: FileId, offset: u64, data: &[u8], pattern: Pattern) -> WriteRequest {
    WriteRequest {
        // The data follows the 64-byte header and the 48 fixed bytes of the request.
        data_offset: HEADER_LEN + 48,
        offset,
        file_id,
        channel: 0,
        remaining_bytes: 0,
        write_channel_info_offset: 0,
        write_channel_info_length: 0,
        flags: if pattern == Pattern::WriteThrough {
            SMB2_WRITEFLAG_WRITE_THROUGH
        } else {
            0
        },
        data: data.to_vec(),
    }
}

/// Whether `pattern` sends an SMB2 FLUSH after each record.
pub fn flushes(pattern: Pattern) -> bool {
    pattern == Pattern::Flush
}

/// Why the SMB session could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SmbError {
    /// The async runtime the client runs on could not start.
    #[error("starting the SMB client runtime: {0}")]
    Runtime(io::Error),
    /// TCP connect, NEGOTIATE or SESSION_SETUP failed (unreachable host, refused
    /// connection, wrong user or password, signing or encryption refused, timeout).
    #[error(
        "connecting to {url} (negotiate and sign in): {source}{}",
        access_hint(source)
    )]
    Connect {
        /// The target (without password).
        url: String,
        /// The client's error.
        source: smb2::Error,
    },
    /// TREE_CONNECT to the share failed (no such share, access denied).
    #[error(
        "connecting to share `{share}` of {addr}: {source}{}",
        access_hint(source)
    )]
    Share {
        /// The share.
        share: String,
        /// HOST:PORT.
        addr: String,
        /// The client's error.
        source: smb2::Error,
    },
    /// The NEGOTIATE exchange could not be made consistent with the
    /// `SMB2_GLOBAL_CAP_ENCRYPTION` flushctl sets ([`negotiate::rehash`]).
    #[error("connecting to {url} (negotiate): {source}")]
    Negotiate {
        /// The target (without password).
        url: String,
        /// What did not match.
        source: negotiate::RehashError,
    },
    /// The share requires encryption (`SMB2_SHAREFLAG_ENCRYPT_DATA`, MS-SMB2 2.2.10),
    /// but the session has no encryption keys or the server chose no cipher.
    #[error(
        "share `{share}` of {addr} requires encryption, but the server negotiated none \
         with flushctl (dialect {dialect}; encryption needs SMB 3.0 or later)"
    )]
    NoCipher {
        /// The share.
        share: String,
        /// HOST:PORT.
        addr: String,
        /// The negotiated dialect.
        dialect: String,
    },
}

fn access_hint(e: &smb2::Error) -> String {
    if e.to_string().contains("STATUS_ACCESS_DENIED") {
        "\n  (access denied: check that this account may use the share; on Samba, the \
         share's `valid users` / `invalid users` and the permissions of its path)"
            .to_owned()
    } else {
        String::new()
    }
}

/// A signed-in session with a tree connected to the URL's share.
pub struct SmbTarget {
    url: SmbUrl,
    // Declared before `rt`: dropped while the runtime still runs.
    conn: Connection,
    tree: TreeId,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for SmbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmbTarget")
            .field("url", &self.url.to_string())
            .field("tree", &self.tree)
            .finish_non_exhaustive()
    }
}

fn status_error(cmd: &str, what: &str, status: NtStatus) -> io::Error {
    let kind = match status.0 {
        0xC000_0034 | 0xC000_003A => io::ErrorKind::NotFound,
        0xC000_0022 => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("SMB2 {cmd} {what}: server answered {status}"))
}

fn client_error(cmd: &str, what: &str, e: smb2::Error) -> io::Error {
    io::Error::other(format!("SMB2 {cmd} {what}: {e}"))
}

impl SmbTarget {
    /// Connects to `url` (TCP, NEGOTIATE up to SMB 3.1.1, NTLM SESSION_SETUP with
    /// `password`, TREE_CONNECT to the share), signed or encrypted as the server or the
    /// share requires. No compression, no DFS, no automatic reconnect (a reconnect would
    /// hide the crash under test).
    ///
    /// `smb2` 0.39 does not set `SMB2_GLOBAL_CAP_ENCRYPTION`; flushctl sets it on the
    /// wire itself and re-hashes the preauth integrity value ([`negotiate`]), so the
    /// NEGOTIATE request offers encryption and the SMB 3.1.1 keys are derived from the
    /// bytes the server saw. Encryption is then on for the whole session when the
    /// server asks for it in SESSION_SETUP (`smb2` activates it), or from the
    /// TREE_CONNECT on when the share asks for it (activated here with the session's
    /// keys).
    ///
    /// # Errors
    /// [`SmbError::Runtime`], [`SmbError::Connect`], [`SmbError::Negotiate`],
    /// [`SmbError::Share`], [`SmbError::NoCipher`].
    pub fn connect(url: &SmbUrl, password: &str) -> Result<Self, SmbError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(SmbError::Runtime)?;
        let connect_error = |source| SmbError::Connect {
            url: url.to_string(),
            source,
        };
        let log = negotiate::NegotiateLog::default();
        let (mut conn, session) = rt.block_on(async {
            let tcp = Arc::new(
                TcpTransport::connect_with(url.addr(), ConnectOptions::default())
                    .await
                    .map_err(connect_error)?,
            );
            let mut conn = Connection::from_transport(
                Box::new(negotiate::CapSend::new(Arc::clone(&tcp), log.clone())),
                Box::new(negotiate::CapReceive::new(tcp, log.clone())),
                url.host.clone(),
            );
            conn.set_compression_requested(false);
            conn.negotiate().await.map_err(connect_error)?;
            conn.with_preauth_hasher_mut(|h| negotiate::rehash(h, &log))
                .map_err(|source| SmbError::Negotiate {
                    url: url.to_string(),
                    source,
                })?;
            let session = Session::setup(&mut conn, &url.user, password, &url.domain)
                .await
                .map_err(connect_error)?;
            Ok::<_, SmbError>((conn, session))
        })?;
        let tree = rt
            .block_on(Tree::connect(&mut conn, &url.share))
            .map_err(|source| SmbError::Share {
                share: url.share.clone(),
                addr: url.addr(),
                source,
            })?;
        if tree.encrypt_data && !conn.should_encrypt() {
            let params = conn.params();
            let dialect = params.as_ref().map(|p| p.dialect);
            // SMB 3.0 and 3.0.2 have one cipher, AES-128-CCM; 3.1.1 names it in the
            // NEGOTIATE response's encryption context (MS-SMB2 3.2.5.2).
            let cipher = params.as_ref().and_then(|p| p.cipher).or(match dialect {
                Some(Dialect::Smb3_0 | Dialect::Smb3_0_2) => Some(Cipher::Aes128Ccm),
                _ => None,
            });
            match (cipher, &session.encryption_key, &session.decryption_key) {
                (Some(cipher), Some(enc), Some(dec)) => {
                    conn.activate_encryption(enc.clone(), dec.clone(), cipher);
                }
                _ => {
                    return Err(SmbError::NoCipher {
                        share: url.share.clone(),
                        addr: url.addr(),
                        dialect: dialect.map_or_else(|| "unknown".into(), |d| format!("{d:?}")),
                    });
                }
            }
        }
        Ok(SmbTarget {
            url: url.clone(),
            conn,
            tree: tree.tree_id,
            rt,
        })
    }

    /// The URL connected to.
    pub fn url(&self) -> &SmbUrl {
        &self.url
    }

    /// The cipher messages are encrypted with (e.g. `Aes128Gcm`), or `none` (signed
    /// only, or neither), for reports.
    pub fn encryption(&self) -> String {
        if !self.conn.should_encrypt() {
            return "none".into();
        }
        let params = self.conn.params();
        match params.as_ref().and_then(|p| p.cipher) {
            Some(c) => format!("{c:?}"),
            // Activated without a cipher context: smb2's fallback and 3.0's only one.
            None => format!("{:?}", Cipher::Aes128Ccm),
        }
    }

    /// The negotiated dialect, for reports (e.g. `Smb3_1_1`).
    pub fn dialect(&self) -> String {
        self.conn
            .params()
            .map_or_else(|| "unknown".into(), |p| format!("{:?}", p.dialect))
    }

    fn execute(&self, cmd: Command, body: &dyn Pack, what: &str) -> io::Result<Vec<u8>> {
        let name = format!("{cmd:?}").to_uppercase();
        let frame = self
            .rt
            .block_on(self.conn.execute(cmd, body, Some(self.tree)))
            .map_err(|e| client_error(&name, what, e))?;
        if frame.header.status != NtStatus::SUCCESS {
            return Err(status_error(&name, what, frame.header.status));
        }
        Ok(frame.body)
    }

    fn create(&self, req: &CreateRequest) -> io::Result<CreateResponse> {
        let what = format!("of {}", self.url);
        let body = self.execute(Command::Create, req, &what)?;
        CreateResponse::unpack(&mut ReadCursor::new(&body))
            .map_err(|e| client_error("CREATE", &what, e))
    }

    /// Opens the target for a writer as `pattern` says ([`create_request`]).
    ///
    /// # Errors
    /// The CREATE's failure: the server's NTSTATUS (`NotFound` for a missing directory,
    /// `PermissionDenied` for access denied) or a connection error.
    pub fn open(&self, pattern: Pattern, first: bool) -> io::Result<SmbFile<'_>> {
        let resp = self.create(&create_request(&self.url.path, pattern, first))?;
        Ok(SmbFile {
            target: self,
            id: resp.file_id,
            pattern,
        })
    }

    /// Opens the target for reading; returns it and its length in bytes.
    ///
    /// # Errors
    /// As [`SmbTarget::open`] (`NotFound` when the file does not exist).
    pub fn open_read(&self) -> io::Result<(SmbReader<'_>, u64)> {
        let resp = self.create(&open_read_request(&self.url.path))?;
        let file = SmbFile {
            target: self,
            id: resp.file_id,
            pattern: Pattern::Plain,
        };
        Ok((
            SmbReader {
                file,
                offset: 0,
                len: resp.end_of_file,
            },
            resp.end_of_file,
        ))
    }
}

/// An open handle on the target.
#[derive(Debug)]
pub struct SmbFile<'a> {
    target: &'a SmbTarget,
    id: FileId,
    pattern: Pattern,
}

impl SmbFile<'_> {
    /// Writes all of `buf` at byte `offset` as WRITEs of at most [`MAX_CHUNK`] bytes
    /// ([`write_request`]: Flags by the handle's pattern). The FLUSH of the flush pattern
    /// is [`SmbFile::flush`], sent by the writer after the whole record.
    ///
    /// # Errors
    /// A WRITE the server failed (its NTSTATUS), a response without a byte count or
    /// with a count of 0 (`WriteZero`), or a connection error (e.g. the server died).
    pub fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        let chunk =
            self.target
                .conn
                .params()
                .map_or(MAX_CHUNK, |p| p.max_write_size.clamp(1, MAX_CHUNK)) as usize;
        while !buf.is_empty() {
            let n = buf.len().min(chunk);
            let req = write_request(self.id, offset, &buf[..n], self.pattern);
            let what = format!("of {n} bytes at byte {offset}");
            let body = self.target.execute(Command::Write, &req, &what)?;
            // WRITE response: StructureSize(2) Reserved(2) Count(4) ...
            let count = body
                .get(4..8)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
                .ok_or_else(|| io::Error::other("SMB2 WRITE: response too short"))?;
            if count == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let count = count.min(n);
            buf = &buf[count..];
            offset += count as u64;
        }
        Ok(())
    }

    /// Sends an SMB2 FLUSH of the handle.
    ///
    /// # Errors
    /// The server's NTSTATUS or a connection error.
    pub fn flush(&self) -> io::Result<()> {
        self.target
            .execute(
                Command::Flush,
                &FlushRequest { file_id: self.id },
                "of the target",
            )
            .map(drop)
    }
}

impl Drop for SmbFile<'_> {
    fn drop(&mut self) {
        // Best effort: after a server crash there is nothing to close.
        let _ = self.target.execute(
            Command::Close,
            &CloseRequest {
                flags: 0,
                file_id: self.id,
            },
            "of the target",
        );
    }
}

/// Reads the target sequentially with READs of at most [`MAX_CHUNK`] bytes.
#[derive(Debug)]
pub struct SmbReader<'a> {
    file: SmbFile<'a>,
    offset: u64,
    len: u64,
}

impl Read for SmbReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.offset);
        let limit = self
            .file
            .target
            .conn
            .params()
            .map_or(MAX_CHUNK, |p| p.max_read_size.clamp(1, MAX_CHUNK));
        let n = (buf.len() as u64).min(left).min(u64::from(limit)) as u32;
        if n == 0 {
            return Ok(0);
        }
        let req = ReadRequest {
            padding: 0x50,
            flags: 0,
            length: n,
            offset: self.offset,
            file_id: self.file.id,
            minimum_count: 0,
            channel: 0,
            remaining_bytes: 0,
            read_channel_info: vec![],
        };
        let what = format!("of {n} bytes at byte {}", self.offset);
        let frame = self
            .file
            .target
            .rt
            .block_on(self.file.target.conn.execute(
                Command::Read,
                &req,
                Some(self.file.target.tree),
            ))
            .map_err(|e| client_error("READ", &what, e))?;
        if frame.header.status == NtStatus::END_OF_FILE {
            return Ok(0);
        }
        if frame.header.status != NtStatus::SUCCESS {
            return Err(status_error("READ", &what, frame.header.status));
        }
        let resp = ReadResponse::unpack(&mut ReadCursor::new(&frame.body))
            .map_err(|e| client_error("READ", &what, e))?;
        let got = resp.data.len().min(buf.len());
        buf[..got].copy_from_slice(&resp.data[..got]);
        self.offset += got as u64;
        Ok(got)
    }
}

pub mod negotiate;

#[cfg(test)]
mod tests;
