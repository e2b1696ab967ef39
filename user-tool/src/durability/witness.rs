//! The witness: an append-only log of acknowledged records, kept somewhere that
//! survives the crash under test (a local file on another disk, or a remote
//! [`super::net`] witness).
//!
//! A witness file is a sequence of fixed-size [`ENTRY_LEN`]-byte entries, each with its
//! own CRC-32C: one [`Entry::Begin`] naming the run, then one [`Entry::Ack`] per
//! acknowledged record. Layout (little-endian, offsets in bytes):
//!
//! | offset | size | Begin                      | Ack                      |
//! |-------:|-----:|----------------------------|--------------------------|
//! | 0      | 4    | magic `FGW1`               | magic `FGW1`             |
//! | 4      | 2    | kind 1                     | kind 2                   |
//! | 6      | 2    | reserved, 0                | reserved, 0              |
//! | 8      | 8    | run id                     | run id                   |
//! | 16     | 4    | writer threads             | writer                   |
//! | 20     | 4    | record size in bytes       | 0                        |
//! | 24     | 8    | 0                          | sequence number          |
//! | 32     | 4    | CRC-32C of bytes 0..32     | CRC-32C of bytes 0..32   |
//! | 36     | 4    | reserved, 0                | reserved, 0              |
//!
//! Every writer's acknowledgements are consecutive from 0: an ack for sequence number
//! `s` of writer `w` says records `0..=s` of `w` are acknowledged. [`WitnessState`]
//! refuses anything else (a replayed or skipped sequence number, an unknown writer,
//! another run), so a refused entry never reaches the file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::{check_record_size, RecordSizeError};

/// Size of a witness entry in bytes (file and wire).
pub const ENTRY_LEN: usize = 40;
/// Entry magic, bytes 0..4.
pub const ENTRY_MAGIC: [u8; 4] = *b"FGW1";
/// Most writer threads a run may declare.
pub const MAX_THREADS: u32 = 1024;

const KIND_BEGIN: u16 = 1;
const KIND_ACK: u16 = 2;

static CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// The run a witness belongs to, from its [`Entry::Begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RunInfo {
    /// Run id (random per `durability run`).
    pub run: u64,
    /// Number of writer threads, 1..=[`MAX_THREADS`].
    pub threads: u32,
    /// Record size in bytes.
    pub record_size: u32,
}

/// One witness entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The first entry: which run.
    Begin(RunInfo),
    /// Record `seq` of `writer` (and so all its earlier ones) is acknowledged.
    Ack {
        /// Run id.
        run: u64,
        /// Writer number.
        writer: u32,
        /// Sequence number.
        seq: u64,
    },
}

/// Why an entry's bytes were refused by [`Entry::decode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Bytes 0..4 are not [`ENTRY_MAGIC`].
    #[error("bad witness entry magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// The CRC-32C does not match.
    #[error("witness entry CRC-32C mismatch")]
    Crc,
    /// Unknown kind.
    #[error("unknown witness entry kind {0}")]
    Kind(u16),
    /// A reserved or unused field is not zero.
    #[error("witness entry has non-zero reserved fields")]
    Reserved,
    /// A Begin with 0 or more than [`MAX_THREADS`] threads.
    #[error("witness begin entry declares {0} threads (1..={MAX_THREADS})")]
    Threads(u32),
    /// A Begin with a bad record size.
    #[error("witness begin entry: {0}")]
    RecordSize(#[from] RecordSizeError),
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Entry {
    /// The run id the entry names.
    pub fn run(&self) -> u64 {
        match self {
            Entry::Begin(i) => i.run,
            Entry::Ack { run, .. } => *run,
        }
    }

    /// The entry's [`ENTRY_LEN`] bytes.
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..4].copy_from_slice(&ENTRY_MAGIC);
        match *self {
            Entry::Begin(i) => {
                b[4..6].copy_from_slice(&KIND_BEGIN.to_le_bytes());
                b[8..16].copy_from_slice(&i.run.to_le_bytes());
                b[16..20].copy_from_slice(&i.threads.to_le_bytes());
                b[20..24].copy_from_slice(&i.record_size.to_le_bytes());
            }
            Entry::Ack { run, writer, seq } => {
                b[4..6].copy_from_slice(&KIND_ACK.to_le_bytes());
                b[8..16].copy_from_slice(&run.to_le_bytes());
                b[16..20].copy_from_slice(&writer.to_le_bytes());
                b[24..32].copy_from_slice(&seq.to_le_bytes());
            }
        }
        let crc = CASTAGNOLI.checksum(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks an entry.
    ///
    /// # Errors
    /// Every [`EntryError`]: magic, CRC, kind, reserved fields, Begin's thread count and
    /// record size.
    pub fn decode(b: &[u8; ENTRY_LEN]) -> Result<Entry, EntryError> {
        let magic: [u8; 4] = b[0..4].try_into().expect("4 bytes");
        if magic != ENTRY_MAGIC {
            return Err(EntryError::BadMagic(magic));
        }
        if CASTAGNOLI.checksum(&b[..32]) != le_u32(b, 32) {
            return Err(EntryError::Crc);
        }
        if le_u16(b, 6) != 0 || le_u32(b, 36) != 0 {
            return Err(EntryError::Reserved);
        }
        let run = le_u64(b, 8);
        match le_u16(b, 4) {
            KIND_BEGIN => {
                if le_u64(b, 24) != 0 {
                    return Err(EntryError::Reserved);
                }
                let threads = le_u32(b, 16);
                if threads == 0 || threads > MAX_THREADS {
                    return Err(EntryError::Threads(threads));
                }
                let record_size = check_record_size(u64::from(le_u32(b, 20)))?;
                Ok(Entry::Begin(RunInfo {
                    run,
                    threads,
                    record_size,
                }))
            }
            KIND_ACK => {
                if le_u32(b, 20) != 0 {
                    return Err(EntryError::Reserved);
                }
                Ok(Entry::Ack {
                    run,
                    writer: le_u32(b, 16),
                    seq: le_u64(b, 24),
                })
            }
            k => Err(EntryError::Kind(k)),
        }
    }
}

/// Why a witness refused an entry or could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// Reading or writing the witness failed.
    #[error("witness {}: {source}", path.display())]
    Io {
        /// The witness file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A local witness file already exists (each run needs a fresh one).
    #[error("witness {} already exists; each run needs a new witness file", .0.display())]
    Exists(PathBuf),
    /// A malformed entry.
    #[error("witness entry at byte {offset}: {error}")]
    Entry {
        /// Byte offset of the entry in the file or stream.
        offset: u64,
        /// What is wrong.
        error: EntryError,
    },
    /// The first entry is not a Begin, or a second Begin.
    #[error("witness: {0}")]
    Order(&'static str),
    /// A Begin that does not match the run's first Begin.
    #[error("witness: begin {got:?} does not match the run's {have:?}")]
    BeginMismatch {
        /// The run's.
        have: RunInfo,
        /// The refused one.
        got: RunInfo,
    },
    /// An Ack of another run.
    #[error("witness: ack for run {got:016x} in the witness of run {run:016x}")]
    RunMismatch {
        /// The witness's run.
        run: u64,
        /// The ack's run.
        got: u64,
    },
    /// An Ack of a writer the run does not have.
    #[error("witness: ack for writer {writer}, the run has {threads} writer(s)")]
    UnknownWriter {
        /// The ack's writer.
        writer: u32,
        /// The run's thread count.
        threads: u32,
    },
    /// An Ack that is not the writer's next sequence number (replayed or skipped).
    #[error(
        "witness: replayed or out-of-order ack: writer {writer} seq {seq}, expected seq {expected}"
    )]
    Sequence {
        /// Writer.
        writer: u32,
        /// The ack's sequence number.
        seq: u64,
        /// The writer's next sequence number.
        expected: u64,
    },
    /// The remote witness refused an entry or broke the protocol.
    #[error("remote witness {addr}: {message}")]
    Remote {
        /// The witness address.
        addr: String,
        /// What happened.
        message: String,
    },
}

/// The validation state of a witness: the run and each writer's next sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessState {
    info: RunInfo,
    next: Vec<u64>,
}

impl WitnessState {
    /// State after `info`'s Begin, no acks yet.
    pub fn new(info: RunInfo) -> Self {
        Self {
            info,
            next: vec![0; info.threads as usize],
        }
    }

    /// The run.
    pub fn info(&self) -> RunInfo {
        self.info
    }

    /// Acknowledged records per writer (= each writer's next sequence number).
    pub fn acknowledged(&self) -> &[u64] {
        &self.next
    }

    /// Checks whether `e` may be appended next, without changing anything.
    ///
    /// # Errors
    /// [`WitnessError::BeginMismatch`] for a Begin that differs from the run's,
    /// [`WitnessError::Order`] for a repeated Begin, [`WitnessError::RunMismatch`],
    /// [`WitnessError::UnknownWriter`], [`WitnessError::Sequence`] for Acks.
    pub fn check(&self, e: &Entry) -> Result<(), WitnessError> {
        match *e {
            Entry::Begin(got) if got != self.info => Err(WitnessError::BeginMismatch {
                have: self.info,
                got,
            }),
            Entry::Begin(_) => Err(WitnessError::Order("a second begin entry")),
            Entry::Ack { run, .. } if run != self.info.run => Err(WitnessError::RunMismatch {
                run: self.info.run,
                got: run,
            }),
            Entry::Ack { writer, seq, .. } => {
                let expected = *self.next.get(writer as usize).ok_or({
                    WitnessError::UnknownWriter {
                        writer,
                        threads: self.info.threads,
                    }
                })?;
                if seq == expected {
                    Ok(())
                } else {
                    Err(WitnessError::Sequence {
                        writer,
                        seq,
                        expected,
                    })
                }
            }
        }
    }

    /// Checks and applies `e`.
    ///
    /// # Errors
    /// As [`WitnessState::check`]; the state is unchanged on error.
    pub fn apply(&mut self, e: &Entry) -> Result<(), WitnessError> {
        self.check(e)?;
        if let Entry::Ack { writer, .. } = *e {
            self.next[writer as usize] += 1;
        }
        Ok(())
    }
}

/// What [`read_witness`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessLog {
    /// The state after every complete entry.
    pub state: WitnessState,
    /// Bytes of an incomplete last entry (a crash mid-append), ignored; 0 normally.
    pub torn_tail: u64,
}

/// Reads and checks a whole witness file.
///
/// # Errors
/// [`WitnessError::Io`]; [`WitnessError::Entry`] for a malformed complete entry;
/// [`WitnessError::Order`] when the file is empty or does not start with a Begin; the
/// sequence errors of [`WitnessState::apply`].
pub fn read_witness(path: &Path) -> Result<WitnessLog, WitnessError> {
    let io = |source| WitnessError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io)?;
    parse_witness(&bytes)
}

/// [`read_witness`] on bytes already read.
///
/// # Errors
/// As [`read_witness`], without `Io`.
pub fn parse_witness(bytes: &[u8]) -> Result<WitnessLog, WitnessError> {
    let mut chunks = bytes.chunks_exact(ENTRY_LEN);
    let torn_tail = chunks.remainder().len() as u64;
    let mut state: Option<WitnessState> = None;
    for (i, c) in chunks.by_ref().enumerate() {
        let offset = (i * ENTRY_LEN) as u64;
        let e = Entry::decode(c.try_into().expect("ENTRY_LEN bytes"))
            .map_err(|error| WitnessError::Entry { offset, error })?;
        match (&mut state, e) {
            (None, Entry::Begin(info)) => state = Some(WitnessState::new(info)),
            (None, _) => return Err(WitnessError::Order("the first entry is not a begin")),
            (Some(s), e) => s.apply(&e)?,
        }
    }
    let state = state.ok_or(WitnessError::Order("the witness has no begin entry"))?;
    Ok(WitnessLog { state, torn_tail })
}

/// A witness file open for appending: every entry is checked, written with one write,
/// and made durable (`File::sync_data`: fdatasync / FlushFileBuffers) before
/// [`WitnessFile::append`] returns.
#[derive(Debug)]
pub struct WitnessFile {
    path: PathBuf,
    file: File,
    len: u64,
    state: WitnessState,
}

impl WitnessFile {
    /// Creates a new witness file holding `info`'s Begin, durable (the file and, on Unix,
    /// its directory entry are synced).
    ///
    /// # Errors
    /// [`WitnessError::Exists`] when `path` exists; [`WitnessError::Io`].
    pub fn create(path: &Path, info: RunInfo) -> Result<Self, WitnessError> {
        let io = |source| WitnessError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => WitnessError::Exists(path.to_owned()),
                _ => io(e),
            })?;
        file.write_all(&Entry::Begin(info).encode()).map_err(io)?;
        file.sync_all().map_err(io)?;
        sync_parent(path).map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            file,
            len: ENTRY_LEN as u64,
            state: WitnessState::new(info),
        })
    }

    /// Opens an existing witness file to append to it; a torn last entry is cut off.
    ///
    /// # Errors
    /// As [`read_witness`]; [`WitnessError::Io`] when it cannot be opened for writing.
    pub fn open_existing(path: &Path) -> Result<Self, WitnessError> {
        let io = |source| WitnessError::Io {
            path: path.to_owned(),
            source,
        };
        let log = read_witness(path)?;
        let file = OpenOptions::new().write(true).open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len() - log.torn_tail;
        if log.torn_tail > 0 {
            file.set_len(len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            len,
            state: log.state,
        })
    }

    /// The validation state (run, acknowledged counts).
    pub fn state(&self) -> &WitnessState {
        &self.state
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `e` durably.
    ///
    /// # Errors
    /// The errors of [`WitnessState::check`] (nothing is written); [`WitnessError::Io`]
    /// when writing or syncing fails (the file is cut back to its previous length,
    /// best effort, so a failed append leaves no partial entry).
    pub fn append(&mut self, e: &Entry) -> Result<(), WitnessError> {
        self.state.check(e)?;
        let res = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(&e.encode()))
            .and_then(|()| self.file.sync_data());
        if let Err(source) = res {
            let _ = self.file.set_len(self.len);
            return Err(WitnessError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.len += ENTRY_LEN as u64;
        self.state.apply(e)
    }
}

/// Where a writer reports acknowledgements: a local [`WitnessFile`] or a remote witness
/// ([`super::net::RemoteWitness`]). `ack` returns only once the acknowledgement is
/// durable at the witness.
pub trait Witness: Send + Sync {
    /// Records that record `seq` of `writer` is acknowledged.
    ///
    /// # Errors
    /// [`WitnessError`]: the witness refused the ack (sequence, writer) or could not
    /// make it durable.
    fn ack(&self, writer: u32, seq: u64) -> Result<(), WitnessError>;
    /// Where the witness is, for messages (`witness FILE`, `witness at ADDR (FILE)`).
    fn describe(&self) -> String;
}

/// A [`WitnessFile`] shared by the writer threads.
#[derive(Debug)]
pub struct LocalWitness(std::sync::Mutex<WitnessFile>);

impl LocalWitness {
    /// A new witness file for `info` (see [`WitnessFile::create`]).
    ///
    /// # Errors
    /// As [`WitnessFile::create`].
    pub fn create(path: &Path, info: RunInfo) -> Result<Self, WitnessError> {
        WitnessFile::create(path, info).map(|f| Self(std::sync::Mutex::new(f)))
    }
}

impl Witness for LocalWitness {
    fn ack(&self, writer: u32, seq: u64) -> Result<(), WitnessError> {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let run = f.state().info().run;
        f.append(&Entry::Ack { run, writer, seq })
    }

    fn describe(&self) -> String {
        let f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        format!("witness file {}", f.path().display())
    }
}

/// Makes a new directory entry durable: fsync of the parent directory (Unix only; on
/// Windows a directory cannot be opened as a file and NTFS journals the entry).
///
/// # Errors
/// The OS error of opening or syncing the directory.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INFO: RunInfo = RunInfo {
        run: 0xfeed,
        threads: 2,
        record_size: 4096,
    };

    fn ack(writer: u32, seq: u64) -> Entry {
        Entry::Ack {
            run: INFO.run,
            writer,
            seq,
        }
    }

    #[test]
    fn entries_round_trip_and_bad_bytes_are_named() {
        for e in [Entry::Begin(INFO), ack(1, 7)] {
            assert_eq!(Entry::decode(&e.encode()), Ok(e));
        }
        let mut b = ack(0, 0).encode();
        b[0] = b'X';
        assert!(matches!(Entry::decode(&b), Err(EntryError::BadMagic(_))));
        let mut b = ack(0, 0).encode();
        b[25] ^= 1;
        assert_eq!(Entry::decode(&b), Err(EntryError::Crc));
        let bad_threads = Entry::Begin(RunInfo { threads: 0, ..INFO }).encode();
        assert_eq!(Entry::decode(&bad_threads), Err(EntryError::Threads(0)));
        let bad_size = Entry::Begin(RunInfo {
            record_size: 1,
            ..INFO
        })
        .encode();
        assert!(matches!(
            Entry::decode(&bad_size),
            Err(EntryError::RecordSize(_))
        ));
        let mut b = ack(0, 0).encode();
        b[4] = 9;
        let crc = CASTAGNOLI.checksum(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Entry::decode(&b), Err(EntryError::Kind(9)));
    }

    #[test]
    fn state_refuses_replays_gaps_and_strangers() {
        let mut s = WitnessState::new(INFO);
        s.apply(&ack(0, 0)).unwrap();
        s.apply(&ack(1, 0)).unwrap();
        s.apply(&ack(0, 1)).unwrap();
        assert!(matches!(
            s.apply(&ack(0, 1)),
            Err(WitnessError::Sequence {
                writer: 0,
                seq: 1,
                expected: 2
            })
        ));
        assert!(matches!(
            s.apply(&ack(1, 5)),
            Err(WitnessError::Sequence { expected: 1, .. })
        ));
        assert!(matches!(
            s.apply(&ack(2, 0)),
            Err(WitnessError::UnknownWriter { .. })
        ));
        assert!(matches!(
            s.apply(&Entry::Ack {
                run: 1,
                writer: 0,
                seq: 2
            }),
            Err(WitnessError::RunMismatch { .. })
        ));
        assert!(matches!(
            s.apply(&Entry::Begin(INFO)),
            Err(WitnessError::Order(_))
        ));
        assert_eq!(s.acknowledged(), &[2, 1]);
    }

    #[test]
    fn file_appends_survive_reopen_and_refusals_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.fgw");
        let mut w = WitnessFile::create(&p, INFO).unwrap();
        assert!(matches!(
            WitnessFile::create(&p, INFO),
            Err(WitnessError::Exists(_))
        ));
        w.append(&ack(0, 0)).unwrap();
        w.append(&ack(0, 1)).unwrap();
        assert!(w.append(&ack(0, 1)).is_err());
        assert!(w.append(&ack(7, 0)).is_err());
        w.append(&ack(1, 0)).unwrap();
        drop(w);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 4 * ENTRY_LEN as u64);
        // A torn tail (crash mid-append) is ignored by readers and cut by writers.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&ack(0, 2).encode()[..17]).unwrap();
        drop(f);
        let log = read_witness(&p).unwrap();
        assert_eq!(log.torn_tail, 17);
        assert_eq!(log.state.acknowledged(), &[2, 1]);
        let mut w = WitnessFile::open_existing(&p).unwrap();
        w.append(&ack(0, 2)).unwrap();
        let log = read_witness(&p).unwrap();
        assert_eq!((log.torn_tail, log.state.acknowledged()), (0, &[3, 1][..]));
    }

    #[test]
    fn malformed_files_are_refused() {
        assert!(matches!(parse_witness(&[]), Err(WitnessError::Order(_))));
        let mut b = ack(0, 0).encode().to_vec();
        assert!(matches!(parse_witness(&b), Err(WitnessError::Order(_))));
        b = Entry::Begin(INFO).encode().to_vec();
        let mut bad = ack(0, 0).encode();
        bad[30] ^= 1;
        b.extend_from_slice(&bad);
        assert!(matches!(
            parse_witness(&b),
            Err(WitnessError::Entry {
                offset: 40,
                error: EntryError::Crc
            })
        ));
    }

    proptest! {
        #[test]
        fn prop_entries_round_trip(run in any::<u64>(), writer in any::<u32>(), seq in any::<u64>()) {
            let e = Entry::Ack { run, writer, seq };
            prop_assert_eq!(Entry::decode(&e.encode()), Ok(e));
        }

        #[test]
        fn prop_any_bit_flip_is_refused(writer in 0u32..4, seq in any::<u64>(), bit in 0usize..(ENTRY_LEN * 8)) {
            let mut b = Entry::Ack { run: 1, writer, seq }.encode();
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Entry::decode(&b).is_err());
        }

        #[test]
        fn prop_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_witness(&bytes);
        }
    }
}
