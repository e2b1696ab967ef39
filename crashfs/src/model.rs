//! The crash model of one file: durable bytes live in a backing file, bytes written
//! since the last sync live in memory ([`Volatile`]) until a sync writes them to the
//! backing file; a crash drops them.
//!
//! Granularity: 4 KiB pages in memory ([`PAGE`]); a sync makes the whole file durable
//! (fsync and fdatasync alike); the file size written by a write is volatile like its
//! data. Truncation (`setattr` size) goes straight to the backing file (durable at once).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Size of a page of volatile data in bytes.
pub const PAGE: u64 = 4096;
/// A disk sector in bytes: the unit a torn write keeps or loses ([`Volatile::crash_torn`]).
pub const SECTOR: u64 = 512;

/// What a crash dropped, a sync wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Pages.
    pub pages: u64,
}

/// The not-yet-durable state of one file.
#[derive(Debug, Default)]
pub struct Volatile {
    pages: BTreeMap<u64, Box<[u8]>>,
    /// The file's size including volatile writes; `None`: the backing file's size.
    size: Option<u64>,
}

fn read_full_at(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl Volatile {
    /// True when nothing is pending.
    pub fn is_clean(&self) -> bool {
        self.pages.is_empty() && self.size.is_none()
    }

    /// The file's size as readers see it, in bytes.
    ///
    /// # Errors
    /// The OS error of reading the backing file's metadata.
    pub fn size(&self, backing: &File) -> io::Result<u64> {
        match self.size {
            Some(s) => Ok(s),
            None => Ok(backing.metadata()?.len()),
        }
    }

    /// Writes `data` at byte `offset` (in memory only).
    ///
    /// # Errors
    /// The OS error of reading the backing file (to fill a partly written page).
    pub fn write(&mut self, backing: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let size = self.size(backing)?;
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let page = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = rest.len().min(PAGE as usize - in_page);
            let buf = match self.pages.entry(page) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let mut buf = vec![0u8; PAGE as usize].into_boxed_slice();
                    if n < PAGE as usize {
                        read_full_at(backing, &mut buf, page * PAGE)?;
                    }
                    e.insert(buf)
                }
            };
            buf[in_page..in_page + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            pos += n as u64;
        }
        if pos > size {
            self.size = Some(pos);
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `offset` as a reader sees them (volatile pages over
    /// the backing file, nothing past the size).
    ///
    /// # Errors
    /// The OS error of reading the backing file.
    pub fn read(&self, backing: &File, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        let size = self.size(backing)?;
        let end = size.min(offset.saturating_add(u64::from(len)));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        read_full_at(backing, &mut out, offset)?;
        // Bytes of the backing file past a volatile size (none: truncation is durable)
        // and holes read as zeros either way.
        for (&page, buf) in self.pages.range(offset / PAGE..=(end - 1) / PAGE) {
            let p_start = page * PAGE;
            let from = offset.max(p_start);
            let to = end.min(p_start + PAGE);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&buf[(from - p_start) as usize..(to - p_start) as usize]);
        }
        Ok(out)
    }

    /// Makes everything durable: writes the pages and the size to the backing file, then
    /// `fdatasync`s it when `sync_backing` (otherwise the data is durable in the model,
    /// and in the host's page cache).
    ///
    /// # Errors
    /// The OS error of writing or syncing the backing file; what was not written stays
    /// volatile.
    pub fn sync(&mut self, backing: &File, sync_backing: bool) -> io::Result<Counts> {
        let size = self.size(backing)?;
        let mut counts = Counts::default();
        while let Some((&page, buf)) = self.pages.first_key_value() {
            let start = page * PAGE;
            if start < size {
                let n = (size - start).min(PAGE) as usize;
                backing.write_all_at(&buf[..n], start)?;
            }
            self.pages.remove(&page);
            counts.pages += 1;
        }
        if backing.metadata()?.len() != size {
            backing.set_len(size)?;
        }
        self.size = None;
        if sync_backing {
            backing.sync_data()?;
        }
        Ok(counts)
    }

    /// Truncates or extends to `size` bytes, durably (backing file first).
    ///
    /// # Errors
    /// The OS error of `ftruncate`.
    pub fn truncate(&mut self, backing: &File, size: u64) -> io::Result<()> {
        backing.set_len(size)?;
        let keep = size.div_ceil(PAGE);
        self.pages.retain(|&p, _| p < keep);
        if let Some(buf) = self.pages.get_mut(&(size / PAGE)) {
            buf[(size % PAGE) as usize..].fill(0);
        }
        // The backing file now has the size.
        self.size = None;
        Ok(())
    }

    /// The crash: drops everything not durable.
    pub fn crash(&mut self) -> Counts {
        let c = Counts {
            pages: self.pages.len() as u64,
        };
        self.pages.clear();
        self.size = None;
        c
    }

    /// The crash with torn writes: of each volatile page, a prefix of its 512-byte
    /// sectors ([`SECTOR`]) reaches the backing file first (0 to 8 sectors, chosen by
    /// `next`, a source of random numbers), as if the disk had been writing the page
    /// when the power went; the file grows to cover what was kept. The rest is dropped.
    /// Returns the pages dropped (all of them count, kept sectors or not).
    ///
    /// # Errors
    /// The OS error of writing the backing file; the volatile state is dropped anyway.
    pub fn crash_torn(
        &mut self,
        backing: &File,
        next: &mut dyn FnMut() -> u64,
    ) -> io::Result<Counts> {
        let size = self.size(backing)?;
        let durable = backing.metadata()?.len();
        let mut end = durable;
        let mut res = Ok(());
        for (&page, buf) in &self.pages {
            let start = page * PAGE;
            let keep = (next() % (PAGE / SECTOR + 1)) * SECTOR;
            let n = keep.min(size.saturating_sub(start));
            if n > 0 {
                res = res.and(backing.write_all_at(&buf[..n as usize], start));
                end = end.max(start + n);
            }
        }
        if end > durable {
            res = res.and(backing.set_len(end));
        }
        let c = self.crash();
        res.map(|()| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backing() -> (tempfile::NamedTempFile, File) {
        let t = tempfile::NamedTempFile::new().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(t.path())
            .unwrap();
        (t, f)
    }

    #[test]
    fn unsynced_writes_are_visible_until_a_crash() {
        let (_t, f) = backing();
        let mut v = Volatile::default();
        v.write(&f, 0, &[1; 5000]).unwrap();
        assert_eq!(v.size(&f).unwrap(), 5000);
        assert_eq!(v.read(&f, 4990, 100).unwrap(), vec![1; 10]);
        assert_eq!(f.metadata().unwrap().len(), 0);
        assert_eq!(v.crash().pages, 2);
        assert_eq!(v.size(&f).unwrap(), 0);
        assert!(v.read(&f, 0, 10).unwrap().is_empty());
    }

    #[test]
    fn synced_writes_survive_and_later_ones_do_not() {
        let (_t, f) = backing();
        let mut v = Volatile::default();
        v.write(&f, 0, &[1; 4096]).unwrap();
        v.write(&f, 4096, &[2; 100]).unwrap();
        assert_eq!(v.sync(&f, true).unwrap().pages, 2);
        assert!(v.is_clean());
        assert_eq!(f.metadata().unwrap().len(), 4196);
        v.write(&f, 4100, &[3; 10]).unwrap();
        v.write(&f, 8192, &[4; 10]).unwrap();
        let mut want = vec![2u8; 100];
        want[4..14].fill(3);
        assert_eq!(v.read(&f, 4096, 100).unwrap(), want);
        v.crash();
        assert_eq!(v.read(&f, 4096, 200).unwrap(), vec![2; 100]);
    }

    #[test]
    fn a_torn_crash_keeps_a_sector_prefix_of_each_page() {
        let (_t, f) = backing();
        let mut v = Volatile::default();
        v.write(&f, 0, &[1; 8192]).unwrap();
        let mut keeps = [3u64, 0].into_iter();
        let c = v.crash_torn(&f, &mut || keeps.next().unwrap()).unwrap();
        assert_eq!(c.pages, 2);
        assert!(v.is_clean());
        // Page 0 kept 3 sectors, page 1 none: the file ends after them.
        assert_eq!(f.metadata().unwrap().len(), 3 * 512);
        assert_eq!(v.read(&f, 0, 8192).unwrap(), vec![1; 3 * 512]);
    }

    #[test]
    fn partial_page_writes_keep_the_durable_rest() {
        let (_t, f) = backing();
        f.write_all_at(&[9; 4096], 0).unwrap();
        let mut v = Volatile::default();
        v.write(&f, 10, &[1; 10]).unwrap();
        let r = v.read(&f, 0, 4096).unwrap();
        assert_eq!(
            (&r[..10], &r[10..20], &r[20..30]),
            (&[9u8; 10][..], &[1u8; 10][..], &[9u8; 10][..])
        );
        v.truncate(&f, 15).unwrap();
        assert_eq!(v.read(&f, 0, 100).unwrap().len(), 15);
    }
}
