//! Concurrency: 10 000 operations from concurrent writers (no deadlock, no rule
//! broken, nothing held), and unload with a client connected and operations in
//! flight (server port closed before FltUnregisterFilter, no callback after it).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use flushguard_engine::callbacks::Irql;
use flushguard_engine::policy::{FlushMethod, Mode};
use flushguard_protocol::{FlushFlags, NtStatus};
use flushguard_tests::fake::PROVIDER_SMB;
use flushguard_tests::harness::{Harness, WriteKind, WriteSpec};
use flushguard_tests::scenario::{action, harness, PROCESS, SHARE_FILE};

/// xorshift64: a deterministic spread of write kinds per thread.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn random_write(rng: &mut u64) -> WriteSpec {
    let r = next(rng);
    WriteSpec {
        kind: match r % 5 {
            0 => WriteKind::NonCached,
            1 => WriteKind::Paging,
            2 => WriteKind::FastIo,
            _ => WriteKind::Cached,
        },
        synchronous: (r >> 8) % 2 == 0,
        post_irql: Irql(((r >> 16) % 3) as u8),
        top_level: (r >> 24) % 7 == 0,
        status: if (r >> 32) % 13 == 0 {
            NtStatus::DISK_FULL
        } else {
            NtStatus::SUCCESS
        },
        complete_later: false,
    }
}

const THREADS: usize = 4;
const OPS_PER_THREAD: usize = 2_500;

fn hammer(h: Arc<Harness>, shared: u64, seed: u64) -> usize {
    flushguard_tests::fake::new_thread_id();
    let mut rng = seed;
    let mut ops = 0;
    let mut own = h
        .open(
            SHARE_FILE,
            Some(PROVIDER_SMB),
            PROCESS,
            0,
            NtStatus::SUCCESS,
        )
        .expect("open");
    ops += 1;
    while ops < OPS_PER_THREAD {
        let r = next(&mut rng) % 20;
        match r {
            0 => {
                h.close(own);
                own = h
                    .open(
                        SHARE_FILE,
                        Some(PROVIDER_SMB),
                        PROCESS,
                        0,
                        NtStatus::SUCCESS,
                    )
                    .expect("open");
                ops += 2;
            }
            1 => {
                h.flush(shared, (next(&mut rng) % 5) as u8, NtStatus::SUCCESS);
                ops += 1;
            }
            2 => {
                h.complete_one(Irql::PASSIVE_LEVEL);
                ops += 1;
            }
            3..=9 => {
                h.write(shared, random_write(&mut rng));
                ops += 1;
            }
            _ => {
                h.write(own, random_write(&mut rng));
                ops += 1;
            }
        }
    }
    h.close(own);
    ops + 1
}

#[test]
fn ten_thousand_operations_from_concurrent_writers() {
    for (mode, method) in [
        (Mode::FlushAfterWrite, FlushMethod::Native),
        (Mode::FlushAfterWrite, FlushMethod::Filter),
        (Mode::FlushOnClose, FlushMethod::Native),
        (Mode::WriteThrough, FlushMethod::Filter),
    ] {
        let h = Arc::new(harness(
            action(mode, method, FlushFlags::empty(), Some(FlushFlags::empty())),
            true,
        ));
        let shared = h
            .open(
                SHARE_FILE,
                Some(PROVIDER_SMB),
                PROCESS,
                0,
                NtStatus::SUCCESS,
            )
            .expect("open");
        let (tx, rx) = mpsc::channel();
        for t in 0..THREADS {
            let h = h.clone();
            let tx = tx.clone();
            thread::spawn(move || {
                let n = hammer(h, shared, 0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                let _ = tx.send(n);
            });
        }
        drop(tx);
        let mut total = 0;
        for _ in 0..THREADS {
            total += rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| {
                    panic!("{mode:?}/{method:?}: a writer did not finish in 120 s (deadlock)")
                });
        }
        assert!(total >= THREADS * OPS_PER_THREAD, "{total} operations");
        h.complete_all();
        h.close(shared);
        h.unload();
        h.assert_clean();
        if mode == Mode::FlushAfterWrite {
            assert!(!h.fake.flushes().is_empty());
        }
    }
}

#[test]
fn unload_with_a_connected_client_and_operations_in_flight() {
    let h = Arc::new(harness(
        action(
            Mode::FlushAfterWrite,
            FlushMethod::Native,
            FlushFlags::empty(),
            None,
        ),
        true,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for t in 0..2u64 {
        let (h, stop, started) = (h.clone(), stop.clone(), started.clone());
        workers.push(thread::spawn(move || {
            flushguard_tests::fake::new_thread_id();
            let mut rng = 0xDEAD_BEEF ^ (t + 1);
            let Some(file) = h.open(
                SHARE_FILE,
                Some(PROVIDER_SMB),
                PROCESS,
                0,
                NtStatus::SUCCESS,
            ) else {
                return;
            };
            started.fetch_add(1, Ordering::SeqCst);
            while !stop.load(Ordering::Relaxed) {
                let mut spec = random_write(&mut rng);
                spec.complete_later = next(&mut rng) % 3 == 0;
                if h.write(file, spec).is_none() {
                    break; // unregister started: Filter Manager sends no more operations
                }
            }
        }));
    }
    // The client: GetVersion requests until the port closes under it.
    let client_sent = Arc::new(AtomicUsize::new(0));
    let client = {
        let (h, stop, client_sent) = (h.clone(), stop.clone(), client_sent.clone());
        thread::spawn(move || {
            flushguard_tests::fake::new_thread_id();
            let mut sent = 0u32;
            let request = flushguard_tests::port_request_get_version();
            let mut reply = vec![0u8; 256];
            while !stop.load(Ordering::Relaxed) && h.fake.port_open() {
                if h.message(&request, &mut reply).is_none() {
                    break;
                }
                sent += 1;
                client_sent.fetch_add(1, Ordering::SeqCst);
            }
            sent
        })
    };
    // Unload only with both writers running and the client connected and talking.
    while started.load(Ordering::SeqCst) < 2 || client_sent.load(Ordering::SeqCst) == 0 {
        thread::yield_now();
    }
    thread::sleep(Duration::from_millis(50));
    h.unload();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let sent = client.join().expect("client");
    assert!(sent > 0, "the client was connected and talking");
    assert_eq!(
        h.fake.events(),
        vec!["close_server_port", "unregister_filter"]
    );
    assert_eq!(h.fake.pending_len(), 0, "in-flight operations drained");
    h.assert_clean();
}
