//! The remote witness: a small TCP service (`flushctl durability witness`) that appends
//! the acknowledgements it receives to a witness file and makes them durable before it
//! answers, so a client can lose power without losing its witness (as diskchecker.pl
//! does).
//!
//! Protocol, per connection (all integers little-endian):
//!
//! - client → server: frames, each a `u32` body length in bytes and the body; the body is
//!   one witness [`Entry`] ([`ENTRY_LEN`] bytes). The first frame is an
//!   [`Entry::Begin`]; the following ones are [`Entry::Ack`]s of that run. Several
//!   connections may carry the same run (the Begins must agree); they share one file.
//! - server → client: one [`REPLY_LEN`]-byte reply per frame: magic `FGWR`, a `u16`
//!   [`Status`] and a `u16` zero. An entry is in the file and synced
//!   (`File::sync_data`) before its `Ok` reply is sent.
//! - On any error the server answers with the error status and closes the connection;
//!   nothing of the refused frame reaches the file. A body longer than [`MAX_FRAME`]
//!   bytes is refused without being read; a connection that ends mid-frame is dropped.
//!
//! The witness of run `R` is the file `DIR/R.fgw` (`R` as 16 hex digits), readable by
//! `flushctl durability verify --witness`.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::witness::{Entry, RunInfo, Witness, WitnessError, WitnessFile, ENTRY_LEN};

/// Largest frame body in bytes the server reads; longer frames are refused unread.
pub const MAX_FRAME: u32 = 64;
/// Length of a reply in bytes.
pub const REPLY_LEN: usize = 8;
/// Reply magic.
pub const REPLY_MAGIC: [u8; 4] = *b"FGWR";
/// A connection idle this long is closed by the server.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Most connections served at once; further ones are closed at once (and logged).
pub const MAX_CONNECTIONS: usize = 256;

/// The status in a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Status {
    /// The entry is durable in the witness file.
    Ok = 0,
    /// The frame's length is not [`ENTRY_LEN`] (or exceeds [`MAX_FRAME`]).
    FrameLength = 1,
    /// The entry is malformed (magic, CRC, kind, reserved fields).
    BadEntry = 2,
    /// The first frame is not a Begin, or a second Begin on a connection.
    Order = 3,
    /// The Begin disagrees with the run's existing witness.
    BeginMismatch = 4,
    /// An Ack for another run than the connection's.
    RunMismatch = 5,
    /// An Ack for a writer the run does not have.
    UnknownWriter = 6,
    /// A replayed or out-of-order sequence number.
    Sequence = 7,
    /// The server could not write or sync its file.
    Io = 8,
}

impl Status {
    fn from_u16(v: u16) -> Option<Status> {
        use Status::*;
        [
            Ok,
            FrameLength,
            BadEntry,
            Order,
            BeginMismatch,
            RunMismatch,
            UnknownWriter,
            Sequence,
            Io,
        ]
        .into_iter()
        .find(|s| *s as u16 == v)
    }

    fn describe(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::FrameLength => "frame length refused",
            Status::BadEntry => "malformed entry refused",
            Status::Order => "protocol order (begin first, once)",
            Status::BeginMismatch => "begin does not match the run's witness",
            Status::RunMismatch => "ack for another run",
            Status::UnknownWriter => "ack for an unknown writer",
            Status::Sequence => "replayed or out-of-order sequence number",
            Status::Io => "the witness could not write its file",
        }
    }

    fn of(e: &WitnessError) -> Status {
        match e {
            WitnessError::Io { .. } | WitnessError::Exists(_) | WitnessError::Remote { .. } => {
                Status::Io
            }
            WitnessError::Entry { .. } => Status::BadEntry,
            WitnessError::Order(_) => Status::Order,
            WitnessError::BeginMismatch { .. } => Status::BeginMismatch,
            WitnessError::RunMismatch { .. } => Status::RunMismatch,
            WitnessError::UnknownWriter { .. } => Status::UnknownWriter,
            WitnessError::Sequence { .. } => Status::Sequence,
        }
    }
}

fn reply_bytes(s: Status) -> [u8; REPLY_LEN] {
    let mut b = [0u8; REPLY_LEN];
    b[..4].copy_from_slice(&REPLY_MAGIC);
    b[4..6].copy_from_slice(&(s as u16).to_le_bytes());
    b
}

/// The witness file of run `run` in `dir`: `dir/<run as 16 hex digits>.fgw`.
pub fn run_path(dir: &Path, run: u64) -> PathBuf {
    dir.join(format!("{run:016x}.fgw"))
}

type Runs = Arc<Mutex<HashMap<u64, Arc<Mutex<WitnessFile>>>>>;

/// The witness service: a listening socket and the directory of witness files.
#[derive(Debug)]
pub struct WitnessServer {
    listener: TcpListener,
    dir: PathBuf,
    runs: Runs,
}

impl WitnessServer {
    /// Listens on `addr` (e.g. `127.0.0.1:7070`, port 0 for any) with witness files in
    /// `dir` (created when missing).
    ///
    /// # Errors
    /// The OS error of creating `dir` or binding.
    pub fn bind(addr: impl ToSocketAddrs, dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            listener: TcpListener::bind(addr)?,
            dir: dir.to_owned(),
            runs: Arc::default(),
        })
    }

    /// The bound address (the real port when bound to port 0).
    ///
    /// # Errors
    /// The OS error of `getsockname`.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections until accepting fails, each in its own thread (at most
    /// [`MAX_CONNECTIONS`] at once); `log` gets one line per connection event
    /// (refusals, dropped connections).
    ///
    /// # Errors
    /// The OS error of `accept` (only persistent failures end the loop).
    pub fn serve(self, log: impl Fn(String) + Send + Sync + 'static) -> std::io::Result<()> {
        let log = Arc::new(log);
        let live = Arc::new(AtomicUsize::new(0));
        for stream in self.listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
                Err(e) => return Err(e),
            };
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string());
            if live.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                live.fetch_sub(1, Ordering::AcqRel);
                log(format!(
                    "{peer}: refused, {MAX_CONNECTIONS} connections already open"
                ));
                continue;
            }
            let (dir, runs, log, live) = (
                self.dir.clone(),
                self.runs.clone(),
                log.clone(),
                live.clone(),
            );
            std::thread::spawn(move || {
                if let Err(m) = handle(stream, &dir, &runs) {
                    log(format!("{peer}: {m}"));
                }
                live.fetch_sub(1, Ordering::AcqRel);
            });
        }
        Ok(())
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` when the stream ended before the first.
fn read_frame_part(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn open_run(
    dir: &Path,
    runs: &Runs,
    info: RunInfo,
) -> Result<Arc<Mutex<WitnessFile>>, WitnessError> {
    let mut map = runs.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = map.get(&info.run) {
        let have = f.lock().unwrap_or_else(|p| p.into_inner()).state().info();
        return if have == info {
            Ok(f.clone())
        } else {
            Err(WitnessError::BeginMismatch { have, got: info })
        };
    }
    let path = run_path(dir, info.run);
    let file = if path.exists() {
        let f = WitnessFile::open_existing(&path)?;
        let have = f.state().info();
        if have != info {
            return Err(WitnessError::BeginMismatch { have, got: info });
        }
        f
    } else {
        WitnessFile::create(&path, info)?
    };
    let f = Arc::new(Mutex::new(file));
    map.insert(info.run, f.clone());
    Ok(f)
}

/// One connection; `Err` carries the line to log.
fn handle(mut s: TcpStream, dir: &Path, runs: &Runs) -> Result<(), String> {
    s.set_read_timeout(Some(IDLE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let mut session: Option<Arc<Mutex<WitnessFile>>> = None;
    let mut offset = 0u64;
    loop {
        let mut len = [0u8; 4];
        match read_frame_part(&mut s, &mut len) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => {
                return Err(format!(
                    "connection dropped mid-frame at byte {offset}: {e}"
                ))
            }
        }
        let n = u32::from_le_bytes(len);
        let refuse = |s: &mut TcpStream, st: Status, why: String| {
            let _ = s.write_all(&reply_bytes(st));
            Err(format!("refused frame at byte {offset}: {why}"))
        };
        if n > MAX_FRAME {
            return refuse(
                &mut s,
                Status::FrameLength,
                format!("oversized frame of {n} bytes (most {MAX_FRAME})"),
            );
        }
        if n as usize != ENTRY_LEN {
            return refuse(
                &mut s,
                Status::FrameLength,
                format!("frame of {n} bytes, expected {ENTRY_LEN}"),
            );
        }
        let mut body = [0u8; ENTRY_LEN];
        match read_frame_part(&mut s, &mut body) {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                return Err(format!(
                    "truncated frame at byte {offset}: connection ended in the body"
                ))
            }
        }
        let entry = match Entry::decode(&body) {
            Ok(e) => e,
            Err(e) => return refuse(&mut s, Status::BadEntry, e.to_string()),
        };
        let res = match (&session, entry) {
            (None, Entry::Begin(info)) => open_run(dir, runs, info).map(|f| {
                session = Some(f);
            }),
            (None, Entry::Ack { .. }) => Err(WitnessError::Order("the first frame is not a begin")),
            (Some(f), e) => f.lock().unwrap_or_else(|p| p.into_inner()).append(&e),
        };
        if let Err(e) = res {
            return refuse(&mut s, Status::of(&e), e.to_string());
        }
        s.write_all(&reply_bytes(Status::Ok))
            .map_err(|e| format!("reply failed: {e}"))?;
        offset += 4 + ENTRY_LEN as u64;
    }
}

/// A client connection to a witness server.
#[derive(Debug)]
pub struct Connection {
    addr: String,
    stream: TcpStream,
}

impl Connection {
    /// Connects to `addr` and opens run `info` with a Begin.
    ///
    /// # Errors
    /// [`WitnessError::Remote`] when connecting fails or the server refuses the Begin.
    pub fn open(addr: &str, info: RunInfo) -> Result<Self, WitnessError> {
        let remote = |message: String| WitnessError::Remote {
            addr: addr.to_owned(),
            message,
        };
        let stream = TcpStream::connect(addr).map_err(|e| remote(format!("connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| remote(e.to_string()))?;
        let mut c = Self {
            addr: addr.to_owned(),
            stream,
        };
        c.send(&Entry::Begin(info))?;
        Ok(c)
    }

    /// Sends one raw frame body (any length; for tests of the server's refusals) and
    /// reads the reply.
    ///
    /// # Errors
    /// [`WitnessError::Remote`]: I/O failure, a malformed reply, or an error status.
    pub fn send_raw(&mut self, body: &[u8]) -> Result<(), WitnessError> {
        let remote = |message: String| WitnessError::Remote {
            addr: self.addr.clone(),
            message,
        };
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(body);
        self.stream
            .write_all(&frame)
            .map_err(|e| remote(format!("send: {e}")))?;
        let mut r = [0u8; REPLY_LEN];
        self.stream
            .read_exact(&mut r)
            .map_err(|e| remote(format!("no reply: {e}")))?;
        if r[..4] != REPLY_MAGIC {
            return Err(remote("malformed reply (bad magic)".into()));
        }
        match Status::from_u16(u16::from_le_bytes([r[4], r[5]])) {
            Some(Status::Ok) => Ok(()),
            Some(s) => Err(remote(format!("refused: {}", s.describe()))),
            None => Err(remote(format!(
                "unknown reply status {}",
                u16::from_le_bytes([r[4], r[5]])
            ))),
        }
    }

    /// Sends `e` and waits until the server has made it durable.
    ///
    /// # Errors
    /// As [`Connection::send_raw`].
    pub fn send(&mut self, e: &Entry) -> Result<(), WitnessError> {
        self.send_raw(&e.encode())
    }
}

/// A remote witness for a run: one [`Connection`] per writer thread.
#[derive(Debug)]
pub struct RemoteWitness {
    addr: String,
    run: u64,
    conns: Vec<Mutex<Connection>>,
}

impl RemoteWitness {
    /// Opens `info.threads` connections to `addr`, each announcing the run.
    ///
    /// # Errors
    /// As [`Connection::open`].
    pub fn connect(addr: &str, info: RunInfo) -> Result<Self, WitnessError> {
        let conns = (0..info.threads)
            .map(|_| Connection::open(addr, info).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            addr: addr.to_owned(),
            run: info.run,
            conns,
        })
    }
}

impl Witness for RemoteWitness {
    fn ack(&self, writer: u32, seq: u64) -> Result<(), WitnessError> {
        let c = self
            .conns
            .get(writer as usize)
            .ok_or(WitnessError::UnknownWriter {
                writer,
                threads: self.conns.len() as u32,
            })?;
        c.lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(&Entry::Ack {
                run: self.run,
                writer,
                seq,
            })
    }

    fn describe(&self) -> String {
        format!("witness at {} (its file {:016x}.fgw)", self.addr, self.run)
    }
}

#[cfg(test)]
mod tests {
    use super::super::witness::read_witness;
    use super::*;
    use proptest::prelude::*;

    const INFO: RunInfo = RunInfo {
        run: 0xabcdef,
        threads: 2,
        record_size: 512,
    };

    fn server() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let s = WitnessServer::bind("127.0.0.1:0", dir.path()).unwrap();
        let addr = s.local_addr().unwrap().to_string();
        std::thread::spawn(move || s.serve(|_| {}));
        (dir, addr)
    }

    fn ack(writer: u32, seq: u64) -> Entry {
        Entry::Ack {
            run: INFO.run,
            writer,
            seq,
        }
    }

    fn acked(dir: &Path) -> Vec<u64> {
        read_witness(&run_path(dir, INFO.run))
            .unwrap()
            .state
            .acknowledged()
            .to_vec()
    }

    #[test]
    fn acks_are_durable_before_the_reply() {
        let (dir, addr) = server();
        let w = RemoteWitness::connect(&addr, INFO).unwrap();
        for s in 0..5 {
            w.ack(0, s).unwrap();
            assert_eq!(acked(dir.path())[0], s + 1);
        }
        w.ack(1, 0).unwrap();
        assert_eq!(acked(dir.path()), vec![5, 1]);
    }

    #[test]
    fn hostile_input_is_refused_and_the_file_stays_valid() {
        let (dir, addr) = server();
        let mut c = Connection::open(&addr, INFO).unwrap();
        c.send(&ack(0, 0)).unwrap();
        c.send(&ack(0, 1)).unwrap();
        // Replayed sequence number.
        let e = c.send(&ack(0, 1)).unwrap_err().to_string();
        assert!(e.contains("replayed or out-of-order"), "{e}");
        // Each refusal closes the connection; open a new one per case.
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0u8; 1000], "frame length"),
            (vec![0u8; 12], "frame length"),
            (
                {
                    let mut b = ack(0, 2).encode();
                    b[0] = b'Z';
                    b.to_vec()
                },
                "malformed entry",
            ),
            (ack(5, 0).encode().to_vec(), "unknown writer"),
            (ack(1, 3).encode().to_vec(), "replayed or out-of-order"),
            (
                Entry::Ack {
                    run: 1,
                    writer: 0,
                    seq: 2,
                }
                .encode()
                .to_vec(),
                "another run",
            ),
            (Entry::Begin(INFO).encode().to_vec(), "protocol order"),
        ];
        for (body, want) in cases {
            let mut c = Connection::open(&addr, INFO).unwrap();
            let e = c.send_raw(&body).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        // A Begin that disagrees with the run's witness.
        let e = Connection::open(&addr, RunInfo { threads: 3, ..INFO })
            .unwrap_err()
            .to_string();
        assert!(e.contains("begin does not match"), "{e}");
        // An ack without a Begin.
        let mut raw = TcpStream::connect(&addr).unwrap();
        let mut f = (ENTRY_LEN as u32).to_le_bytes().to_vec();
        f.extend_from_slice(&ack(0, 2).encode());
        raw.write_all(&f).unwrap();
        let mut r = [0u8; REPLY_LEN];
        raw.read_exact(&mut r).unwrap();
        assert_eq!(u16::from_le_bytes([r[4], r[5]]), Status::Order as u16);
        // A truncated frame: the connection ends in the body.
        let mut raw = TcpStream::connect(&addr).unwrap();
        raw.write_all(&f[..20]).unwrap();
        drop(raw);
        // An oversized length is refused without reading the body.
        let mut raw = TcpStream::connect(&addr).unwrap();
        raw.write_all(&u32::MAX.to_le_bytes()).unwrap();
        raw.read_exact(&mut r).unwrap();
        assert_eq!(u16::from_le_bytes([r[4], r[5]]), Status::FrameLength as u16);
        // After all that, the witness still reads back with exactly the good acks, and
        // the run continues where it was.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(acked(dir.path()), vec![2, 0]);
        let mut c = Connection::open(&addr, INFO).unwrap();
        c.send(&ack(0, 2)).unwrap();
        assert_eq!(acked(dir.path()), vec![3, 0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever a client sends after a Begin, the witness file keeps exactly the
        /// acknowledgements that were answered Ok, and stays readable.
        #[test]
        fn prop_random_frames_never_corrupt_the_witness(
            frames in proptest::collection::vec(
                prop_oneof![
                    // well-formed acks, often replayed or out of order
                    (0u32..3, 0u64..4).prop_map(|(w, s)| ack(w, s).encode().to_vec()),
                    // any bytes of any length up to 100
                    proptest::collection::vec(any::<u8>(), 0..100),
                ],
                1..12,
            )
        ) {
            let (dir, addr) = server();
            let mut expected = vec![0u64; 2];
            let mut conn = Connection::open(&addr, INFO).unwrap();
            for body in &frames {
                let answered_ok = conn.send_raw(body).is_ok();
                if answered_ok {
                    let bytes: &[u8; ENTRY_LEN] = body[..].try_into().unwrap();
                    let e = Entry::decode(bytes).unwrap();
                    if let Entry::Ack { writer, .. } = e {
                        expected[writer as usize] += 1;
                    }
                } else {
                    // The server closed the connection: continue on a new one.
                    conn = Connection::open(&addr, INFO).unwrap();
                }
                prop_assert_eq!(acked(dir.path()), expected.clone());
            }
        }
    }
}
