//! The FUSE shell: a pass-through of a backing directory whose file data goes through
//! the crash model ([`crate::model::Volatile`]), plus the control file `/.crashfs`.
//!
//! - Data: a write is kept in memory; `fsync`/`fdatasync` of the file, or any write on a
//!   handle opened with `O_SYNC`/`O_DSYNC`, writes it to the backing file (durable).
//! - Control: writing `crash` to `/.crashfs` drops every file's volatile data and
//!   freezes the file system (every later write, sync, create or namespace change fails
//!   with EIO, as on a dead disk; reads show what was durable); `crash-torn` first lets
//!   each volatile 4 KiB page keep a pseudo-random prefix of its 512-byte sectors (0 to
//!   8: a write torn by the power cut); `reset` unfreezes it.
//!   Reading `/.crashfs` gives counters (`crashed writes syncs synced_pages
//!   dropped_pages`).
//! - Every handle is opened with FOPEN_DIRECT_IO and attributes have no cache time, so
//!   the kernel's page cache never shows data the model dropped.
//! - Metadata (create, mkdir, unlink, rename, truncate, chmod) goes to the backing
//!   directory at once: it is durable immediately; the model does not lose it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::model::Volatile;

/// Name of the control file in the root.
pub const CONTROL: &str = ".crashfs";
const CONTROL_INO: u64 = 2;
const TTL: Duration = Duration::ZERO;

#[derive(Debug, Default)]
struct Stats {
    writes: u64,
    syncs: u64,
    synced_pages: u64,
    dropped_pages: u64,
}

#[derive(Debug)]
struct Handle {
    file: File,
    sync: bool,
}

#[derive(Debug, Default)]
struct Inner {
    paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    files: HashMap<u64, Volatile>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    crashed: bool,
    stats: Stats,
}

/// The crash-model file system over `backing`.
#[derive(Debug)]
pub struct CrashFs {
    backing: PathBuf,
    sync_backing: bool,
    inner: Mutex<Inner>,
}

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn is_sync(flags: i32) -> bool {
    flags & (libc::O_SYNC | libc::O_DSYNC) != 0
}

impl CrashFs {
    /// A file system showing `backing`; `sync_backing`: `fdatasync` the backing file on
    /// each modelled sync (off: durable in the model and the host's page cache).
    pub fn new(backing: PathBuf, sync_backing: bool) -> Self {
        let mut inner = Inner {
            next_ino: 3,
            next_fh: 1,
            ..Inner::default()
        };
        inner.paths.insert(1, PathBuf::new());
        inner.inos.insert(PathBuf::new(), 1);
        Self {
            backing,
            sync_backing,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn real(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn control_text(&self) -> String {
        let i = self.lock();
        format!(
            "crashed {}\nwrites {}\nsyncs {}\nsynced_pages {}\ndropped_pages {}\n",
            u8::from(i.crashed),
            i.stats.writes,
            i.stats.syncs,
            i.stats.synced_pages,
            i.stats.dropped_pages
        )
    }

    fn control_attr(&self) -> FileAttr {
        attr_of(CONTROL_INO, FileType::RegularFile, 0o600, 0, 1, UNIX_EPOCH)
    }

    /// The inode number of `rel`, assigned on first sight.
    fn ino_of(i: &mut Inner, rel: &Path) -> u64 {
        if let Some(&n) = i.inos.get(rel) {
            return n;
        }
        let n = i.next_ino;
        i.next_ino += 1;
        i.inos.insert(rel.to_owned(), n);
        i.paths.insert(n, rel.to_owned());
        n
    }

    fn attr(&self, i: &mut Inner, rel: &Path) -> Result<FileAttr, Errno> {
        let md = std::fs::symlink_metadata(self.real(rel)).map_err(|e| errno(&e))?;
        let ino = Self::ino_of(i, rel);
        let kind = if md.is_dir() {
            FileType::Directory
        } else if md.file_type().is_symlink() {
            FileType::Symlink
        } else {
            FileType::RegularFile
        };
        let mut size = md.len();
        if let Some(v) = i.files.get(&ino).filter(|v| !v.is_clean()) {
            if let Ok(f) = File::open(self.real(rel)) {
                size = v.size(&f).unwrap_or(size);
            }
        }
        let mtime = md.modified().unwrap_or(UNIX_EPOCH);
        let mut a = attr_of(
            ino,
            kind,
            (md.mode() & 0o7777) as u16,
            size,
            md.nlink() as u32,
            mtime,
        );
        a.uid = md.uid();
        a.gid = md.gid();
        Ok(a)
    }

    fn child(i: &Inner, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        let p = i.paths.get(&parent.0).ok_or(Errno::ENOENT)?;
        Ok(p.join(name))
    }

    fn sync_ino(&self, i: &mut Inner, ino: u64, file: &File) -> Result<(), Errno> {
        if i.crashed {
            return Err(Errno::EIO);
        }
        i.stats.syncs += 1;
        if let Some(v) = i.files.get_mut(&ino) {
            let c = v.sync(file, self.sync_backing).map_err(|e| errno(&e))?;
            i.stats.synced_pages += c.pages;
        }
        Ok(())
    }

    /// The crash; `torn`: each volatile page keeps a random prefix of its sectors.
    fn crash(&self, torn: bool) -> Result<(), Errno> {
        let mut i = self.lock();
        let mut dropped = 0;
        let mut failed = None;
        let mut state = i.stats.writes ^ 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let inos: Vec<u64> = i.files.keys().copied().collect();
        for ino in inos {
            let path = i.paths.get(&ino).map(|p| self.real(p));
            let v = i.files.get_mut(&ino).expect("key listed above");
            if !torn {
                dropped += v.crash().pages;
                continue;
            }
            let res = path
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
                .and_then(|p| OpenOptions::new().write(true).read(true).open(p))
                .and_then(|f| v.crash_torn(&f, &mut next));
            match res {
                Ok(c) => dropped += c.pages,
                Err(e) => {
                    dropped += v.crash().pages;
                    failed = Some(errno(&e));
                }
            }
        }
        i.stats.dropped_pages += dropped;
        i.crashed = true;
        failed.map_or(Ok(()), Err)
    }

    fn open_handle(&self, i: &mut Inner, ino: u64, rel: &Path, flags: i32) -> Result<u64, Errno> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if write && i.crashed {
            return Err(Errno::EIO);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(self.real(rel))
            .map_err(|e| errno(&e))?;
        if flags & libc::O_TRUNC != 0 && write {
            let v = i.files.entry(ino).or_default();
            v.truncate(&file, 0).map_err(|e| errno(&e))?;
        }
        let fh = i.next_fh;
        i.next_fh += 1;
        i.handles.insert(
            fh,
            Handle {
                file,
                sync: is_sync(flags),
            },
        );
        Ok(fh)
    }
}

fn attr_of(
    ino: u64,
    kind: FileType,
    perm: u16,
    size: u64,
    nlink: u32,
    mtime: SystemTime,
) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind,
        perm,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

impl Filesystem for CrashFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == 1 && name == CONTROL {
            return reply.entry(&TTL, &self.control_attr(), Generation(0));
        }
        let mut i = self.lock();
        let res = Self::child(&i, parent, name).and_then(|rel| self.attr(&mut i, &rel));
        match res {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino.0 == CONTROL_INO {
            return reply.attr(&TTL, &self.control_attr());
        }
        let mut i = self.lock();
        let res = i
            .paths
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::ENOENT)
            .and_then(|rel| self.attr(&mut i, &rel));
        match res {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if ino.0 == CONTROL_INO {
            return reply.attr(&TTL, &self.control_attr());
        }
        let mut i = self.lock();
        let res = (|| {
            let rel = i.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)?;
            if (mode.is_some() || size.is_some()) && i.crashed {
                return Err(Errno::EIO);
            }
            if let Some(m) = mode {
                std::fs::set_permissions(self.real(&rel), std::fs::Permissions::from_mode(m))
                    .map_err(|e| errno(&e))?;
            }
            if let Some(s) = size {
                let f = OpenOptions::new()
                    .write(true)
                    .open(self.real(&rel))
                    .map_err(|e| errno(&e))?;
                i.files
                    .entry(ino.0)
                    .or_default()
                    .truncate(&f, s)
                    .map_err(|e| errno(&e))?;
            }
            self.attr(&mut i, &rel)
        })();
        match res {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut i = self.lock();
        let res = (|| {
            if i.crashed {
                return Err(Errno::EIO);
            }
            let rel = Self::child(&i, parent, name)?;
            std::fs::create_dir(self.real(&rel)).map_err(|e| errno(&e))?;
            let _ = std::fs::set_permissions(
                self.real(&rel),
                std::fs::Permissions::from_mode(mode & !umask),
            );
            self.attr(&mut i, &rel)
        })();
        match res {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut i = self.lock();
        let res = (|| {
            if i.crashed {
                return Err(Errno::EIO);
            }
            let rel = Self::child(&i, parent, name)?;
            std::fs::remove_file(self.real(&rel)).map_err(|e| errno(&e))?;
            if let Some(n) = i.inos.remove(&rel) {
                i.paths.remove(&n);
                i.files.remove(&n);
            }
            Ok(())
        })();
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut i = self.lock();
        let res = (|| {
            if i.crashed {
                return Err(Errno::EIO);
            }
            let rel = Self::child(&i, parent, name)?;
            std::fs::remove_dir(self.real(&rel)).map_err(|e| errno(&e))?;
            if let Some(n) = i.inos.remove(&rel) {
                i.paths.remove(&n);
            }
            Ok(())
        })();
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut i = self.lock();
        let res = (|| {
            if i.crashed {
                return Err(Errno::EIO);
            }
            if !flags.is_empty() {
                return Err(Errno::EINVAL);
            }
            let from = Self::child(&i, parent, name)?;
            let to = Self::child(&i, newparent, newname)?;
            std::fs::rename(self.real(&from), self.real(&to)).map_err(|e| errno(&e))?;
            if let Some(old) = i.inos.remove(&to) {
                i.paths.remove(&old);
                i.files.remove(&old);
            }
            // Move the renamed entry and everything below it.
            let moved: Vec<(PathBuf, u64)> = i
                .inos
                .iter()
                .filter(|(p, _)| p.starts_with(&from))
                .map(|(p, &n)| (p.clone(), n))
                .collect();
            for (p, n) in moved {
                let np = to.join(p.strip_prefix(&from).expect("filtered by prefix"));
                i.inos.remove(&p);
                i.inos.insert(np.clone(), n);
                i.paths.insert(n, np);
            }
            Ok(())
        })();
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 == CONTROL_INO {
            return reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        }
        let mut i = self.lock();
        let res = i
            .paths
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::ENOENT)
            .and_then(|rel| self.open_handle(&mut i, ino.0, &rel, flags.0));
        match res {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut i = self.lock();
        let res = (|| {
            if i.crashed {
                return Err(Errno::EIO);
            }
            let rel = Self::child(&i, parent, name)?;
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(mode & !umask)
                .open(self.real(&rel))
                .map_err(|e| errno(&e))?;
            let a = self.attr(&mut i, &rel)?;
            let fh = self.open_handle(&mut i, a.ino.0, &rel, flags)?;
            Ok((a, fh))
        })();
        match res {
            Ok((a, fh)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 == CONTROL_INO {
            let t = self.control_text().into_bytes();
            let from = (offset as usize).min(t.len());
            return reply.data(&t[from..]);
        }
        let mut i = self.lock();
        let Some(h) = i.handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let file = match h.file.try_clone() {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        let v = i.files.entry(ino.0).or_default();
        match v.read(&file, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino.0 == CONTROL_INO {
            let cmd = String::from_utf8_lossy(data);
            let res = match cmd.trim() {
                "crash" => self.crash(false),
                "crash-torn" => self.crash(true),
                "reset" => {
                    self.lock().crashed = false;
                    Ok(())
                }
                _ => Err(Errno::EINVAL),
            };
            return match res {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(e),
            };
        }
        let mut i = self.lock();
        if i.crashed {
            return reply.error(Errno::EIO);
        }
        let (file, sync) = match i.handles.get(&fh.0) {
            Some(h) => match h.file.try_clone() {
                Ok(f) => (f, h.sync || is_sync(flags.0)),
                Err(e) => return reply.error(errno(&e)),
            },
            None => return reply.error(Errno::EBADF),
        };
        i.stats.writes += 1;
        if let Err(e) = i.files.entry(ino.0).or_default().write(&file, offset, data) {
            return reply.error(errno(&e));
        }
        if sync {
            if let Err(e) = self.sync_ino(&mut i, ino.0, &file) {
                return reply.error(e);
            }
        }
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) does not make data durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if ino.0 == CONTROL_INO {
            return reply.ok();
        }
        let mut i = self.lock();
        let file = match i.handles.get(&fh.0).map(|h| h.file.try_clone()) {
            Some(Ok(f)) => f,
            Some(Err(e)) => return reply.error(errno(&e)),
            None => return reply.error(Errno::EBADF),
        };
        match self.sync_ino(&mut i, ino.0, &file) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut i = self.lock();
        let Some(rel) = i.paths.get(&ino.0).cloned() else {
            return reply.error(Errno::ENOENT);
        };
        let rd = match std::fs::read_dir(self.real(&rel)) {
            Ok(r) => r,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut entries: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (1, FileType::Directory, "..".into()),
        ];
        if ino.0 == 1 {
            entries.push((CONTROL_INO, FileType::RegularFile, CONTROL.into()));
        }
        let mut names: Vec<_> = rd.filter_map(Result::ok).collect();
        names.sort_by_key(std::fs::DirEntry::file_name);
        for e in names {
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            let n = Self::ino_of(&mut i, &rel.join(e.file_name()));
            entries.push((n, kind, e.file_name()));
        }
        for (k, (n, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(n), (k + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
