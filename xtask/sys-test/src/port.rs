//! flushctl's side of `\FlushGuardPort`: connect, message and disconnect through the
//! callbacks the driver passed to `FltCreateCommunicationPort`, and the port-level
//! abuse only the driver's port code sees (DESIGN section 4, the cases expressible
//! with mapped memory; the faulting ones stay with `cargo xtask seh-test`).

use std::ffi::c_void;
use std::ptr::null_mut;

use flushguard_protocol::{ConnectContext, NtStatus, MAX_MESSAGE_BYTES};

use crate::dispatch;
use crate::world::world;

/// `STATUS_INVALID_PARAMETER`.
const STATUS_INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;
/// `STATUS_DATATYPE_MISALIGNMENT`.
const STATUS_DATATYPE_MISALIGNMENT: i32 = 0x8000_0002_u32 as i32;
/// `STATUS_ACCESS_VIOLATION`.
const STATUS_ACCESS_VIOLATION: i32 = 0xC000_0005_u32 as i32;
/// A kernel-space address (above `MmUserProbeAddress`) the driver must never touch on
/// behalf of a message: unmapped in this process, so touching it crashes the scenario.
const KERNEL_ADDRESS: usize = 0xFFFF_F780_0000_0000;

fn violation(message: impl Into<String>) {
    world().violation(message);
}

/// Calls the connect notification with `size` bytes at `context` for a new client
/// port. Returns the status and, on success, `(client port, cookie)`.
pub fn connect_raw(context: *const u8, size: u32) -> (i32, Option<(usize, usize)>) {
    let Some(port) = world().server_port else {
        violation("no server port to connect to");
        return (STATUS_INVALID_PARAMETER, None);
    };
    let Some(connect) = dispatch::code(port.connect, "ConnectNotify") else {
        return (STATUS_INVALID_PARAMETER, None);
    };
    let client = world().object();
    let mut cookie: *mut c_void = null_mut();
    // SAFETY: the PFLT_CONNECT_NOTIFY registered with FltCreateCommunicationPort.
    let connect = unsafe { std::mem::transmute::<usize, dispatch::ConnectFn>(connect) };
    world().client_ports.insert(client, 0);
    // SAFETY: `context` is NULL or a live buffer of `size` bytes, as Filter Manager
    // passes the caller's captured context; the cookie slot is a live local.
    let status = dispatch::into_driver(|| unsafe {
        connect(
            client,
            null_mut(),
            context.cast_mut().cast(),
            size,
            &mut cookie,
        )
    });
    if status < 0 {
        // Filter Manager closes the client port of a refused connection.
        world().client_ports.remove(&client);
        return (status, None);
    }
    world().client_ports.insert(client, cookie as usize);
    world().connections += 1;
    (status, Some((client, cookie as usize)))
}

/// Connects with the current connect context.
pub fn connect() -> (i32, Option<(usize, usize)>) {
    let context = ConnectContext::current().encode();
    connect_raw(context.as_ptr(), context.len() as u32)
}

/// Calls the message notification with raw buffers. Returns (status, bytes written).
pub fn message_raw(
    cookie: usize,
    input: *const u8,
    input_length: u32,
    output: *mut u8,
    output_length: u32,
) -> (i32, u32) {
    let port = world().server_port_message;
    let Some(message) = dispatch::code(port, "MessageNotify") else {
        return (STATUS_INVALID_PARAMETER, 0);
    };
    // SAFETY: the PFLT_MESSAGE_NOTIFY registered with FltCreateCommunicationPort.
    let message = unsafe { std::mem::transmute::<usize, dispatch::MessageFn>(message) };
    let mut written = 0u32;
    // SAFETY: the buffers are what flushctl would pass to FilterSendMessage: live
    // user buffers of the stated lengths, or (in the abuse cases) NULL or an address the
    // driver must reject without touching; the returned-length slot is a live local.
    let status = dispatch::into_driver(|| unsafe {
        message(
            cookie as *mut c_void,
            input.cast_mut().cast(),
            input_length,
            output.cast(),
            output_length,
            &mut written,
        )
    });
    world().messages += 1;
    (status, written)
}

/// Sends `request` with a 4 KiB, 8-byte aligned reply buffer; returns the status and
/// the reply.
pub fn message(cookie: usize, request: &[u8]) -> (i32, Vec<u8>) {
    let mut reply = vec![0u64; 512];
    let (status, written) = message_raw(
        cookie,
        request.as_ptr(),
        request.len() as u32,
        reply.as_mut_ptr().cast(),
        (reply.len() * 8) as u32,
    );
    let bytes: Vec<u8> = reply.iter().flat_map(|w| w.to_le_bytes()).collect();
    (
        status,
        bytes.get(..written as usize).unwrap_or(&[]).to_vec(),
    )
}

/// Calls the disconnect notification for `cookie`; checks the client port was closed.
pub fn disconnect(client: usize, cookie: usize) {
    let disconnect = world().server_port_disconnect;
    let Some(disconnect) = dispatch::code(disconnect, "DisconnectNotify") else {
        return;
    };
    // SAFETY: the PFLT_DISCONNECT_NOTIFY registered with FltCreateCommunicationPort.
    let disconnect = unsafe { std::mem::transmute::<usize, dispatch::DisconnectFn>(disconnect) };
    // SAFETY: the cookie the driver returned from connect.
    dispatch::into_driver(|| unsafe { disconnect(cookie as *mut c_void) });
    if world().client_ports.remove(&client).is_some() {
        violation("DisconnectNotify did not close the client port (FltCloseClientPort)");
    }
}

fn expect(what: &str, status: i32, written: u32, expected: Option<i32>) {
    let ok = match expected {
        Some(e) => status == e,
        None => status < 0,
    };
    if !ok || written != 0 {
        violation(format!(
            "port abuse \"{what}\": {} with {written} byte(s) written (expected {})",
            NtStatus(status),
            expected.map_or("an error".to_string(), |e| NtStatus(e).to_string())
        ));
    }
}

/// The port-level abuse battery on the connection `cookie`. Returns the number of
/// cases run.
pub fn abuse(cookie: usize) -> usize {
    let request = flushguard_tests::port_request_get_version();
    let mut reply = vec![0u64; 64];
    let out = reply.as_mut_ptr().cast::<u8>();
    let out_len = (reply.len() * 8) as u32;
    let len = request.len() as u32;
    let mut cases = 0;

    let (s, w) = message_raw(cookie, request.as_ptr(), 0, out, out_len);
    expect("empty input", s, w, Some(STATUS_INVALID_PARAMETER));
    let (s, w) = message_raw(cookie, std::ptr::null(), len, out, out_len);
    expect("NULL input", s, w, Some(STATUS_INVALID_PARAMETER));
    let big = vec![0u8; MAX_MESSAGE_BYTES as usize + 1];
    let (s, w) = message_raw(cookie, big.as_ptr(), big.len() as u32, out, out_len);
    expect(
        "input over MAX_MESSAGE_BYTES",
        s,
        w,
        Some(STATUS_INVALID_PARAMETER),
    );
    let (s, w) = message_raw(cookie, request.as_ptr(), len, null_mut(), 64);
    expect(
        "NULL output with a length",
        s,
        w,
        Some(STATUS_INVALID_PARAMETER),
    );
    let (s, w) = message_raw(cookie, request.as_ptr(), len, out.wrapping_add(1), 64);
    expect(
        "misaligned output",
        s,
        w,
        Some(STATUS_DATATYPE_MISALIGNMENT),
    );
    let (s, w) = message_raw(cookie, KERNEL_ADDRESS as *const u8, len, out, out_len);
    expect("kernel-address input", s, w, Some(STATUS_ACCESS_VIOLATION));
    let (s, w) = message_raw(cookie, request.as_ptr(), len, KERNEL_ADDRESS as *mut u8, 64);
    expect("kernel-address output", s, w, Some(STATUS_ACCESS_VIOLATION));
    let (s, w) = message_raw(cookie, request.as_ptr(), len, out, 8);
    expect("output too small for the reply", s, w, None);
    cases += 8;

    // Connect contexts.
    let good = ConnectContext::current().encode();
    let (s, c) = connect_raw(std::ptr::null(), good.len() as u32);
    expect(
        "connect without a context",
        s,
        0,
        Some(STATUS_INVALID_PARAMETER),
    );
    refuse_leftover(c);
    let (s, c) = connect_raw(good.as_ptr(), 8);
    expect(
        "connect context of 8 bytes",
        s,
        0,
        Some(STATUS_INVALID_PARAMETER),
    );
    refuse_leftover(c);
    let mut bad = good;
    bad[0] ^= 0xFF;
    let (s, c) = connect_raw(bad.as_ptr(), bad.len() as u32);
    expect("connect context with a wrong magic", s, 0, None);
    refuse_leftover(c);
    let mut bad = good;
    bad[4] ^= 0xFF;
    let (s, c) = connect_raw(bad.as_ptr(), bad.len() as u32);
    expect("connect context with a wrong protocol version", s, 0, None);
    refuse_leftover(c);
    cases += 4;

    // MaxConnections: fill every slot, one more must be refused, then free them.
    let mut extra = Vec::new();
    loop {
        let (s, c) = connect();
        match c {
            Some(c) => extra.push(c),
            None => {
                if s >= 0 {
                    violation("a refused connection returned a success status");
                }
                break;
            }
        }
        if extra.len() > 64 {
            violation("the port accepted more than 64 connections");
            break;
        }
    }
    let max = world().server_port.map_or(0, |p| p.max_connections);
    if extra.len() + 1 != max as usize {
        violation(format!(
            "{} connection(s) accepted next to the first one; MaxConnections is {max}",
            extra.len()
        ));
    }
    for (client, cookie) in extra {
        disconnect(client, cookie);
    }
    cases += 1;
    cases
}

fn refuse_leftover(connection: Option<(usize, usize)>) {
    if let Some((client, cookie)) = connection {
        disconnect(client, cookie);
    }
}
