use super::*;
use smb2::pack::WriteCursor;

fn packed(p: &dyn Pack) -> Vec<u8> {
    let mut c = WriteCursor::new();
    p.pack(&mut c);
    c.into_inner()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

const FID: FileId = FileId {
    persistent: 0x1111,
    volatile: 0x2222,
};

#[test]
fn write_flags_on_the_wire() {
    // MS-SMB2 2.2.21: Flags is the u32 at byte 44 of the WRITE request body.
    for (pattern, flags) in [
        (Pattern::Plain, 0),
        (Pattern::WriteThrough, SMB2_WRITEFLAG_WRITE_THROUGH),
        (Pattern::Flush, 0),
        (Pattern::CreateWriteThrough, 0),
    ] {
        let b = packed(&write_request(FID, 8192, &[7; 100], pattern));
        assert_eq!(u32_at(&b, 44), flags, "{pattern:?}");
        assert_eq!(u32_at(&b, 44) & SMB2_WRITEFLAG_WRITE_UNBUFFERED, 0);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 49);
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), 112, "DataOffset");
        assert_eq!(u32_at(&b, 4), 100, "Length");
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 8192);
        assert_eq!(&b[48..148], &[7; 100][..]);
    }
    assert_eq!(SMB2_WRITEFLAG_WRITE_THROUGH, 1);
    assert_eq!(
        SMB2_WRITEFLAG_WRITE_THROUGH,
        smb2::msg::write::SMB2_WRITEFLAG_WRITE_THROUGH
    );
}

#[test]
fn create_options_on_the_wire() {
    // MS-SMB2 2.2.13: DesiredAccess at 24, CreateDisposition at 36, CreateOptions
    // at 40 of the CREATE request body.
    for (pattern, first, options, disposition) in [
        (Pattern::Plain, true, 0x40, 3),
        (Pattern::WriteThrough, true, 0x40, 3),
        (Pattern::Flush, false, 0x40, 3),
        (Pattern::CreateWriteThrough, true, 0x42, 5),
        (Pattern::CreateWriteThrough, false, 0x42, 3),
    ] {
        let b = packed(&create_request("dir\\t.dat", pattern, first));
        assert_eq!(u32_at(&b, 40), options, "{pattern:?} {first}");
        assert_eq!(u32_at(&b, 36), disposition, "{pattern:?} {first}");
        assert_eq!(u32_at(&b, 24) & 0x3, 0x3, "read and write data");
        assert_eq!(b[3], 0, "no oplock");
    }
    let r = packed(&open_read_request("t.dat"));
    assert_eq!((u32_at(&r, 40), u32_at(&r, 36)), (0x40, 1));
    assert_eq!(u32_at(&r, 24) & 0x2, 0, "no write access for verify");
    assert!(flushes(Pattern::Flush));
    assert!(!flushes(Pattern::WriteThrough) && !flushes(Pattern::Plain));
}

#[test]
fn urls_parse() {
    let u = SmbUrl::parse("smb://alice@127.0.0.1:4450/share/dir/t.dat").unwrap();
    assert_eq!(
        u,
        SmbUrl {
            domain: String::new(),
            user: "alice".into(),
            host: "127.0.0.1".into(),
            port: 4450,
            share: "share".into(),
            path: "dir\\t.dat".into(),
        }
    );
    assert_eq!(u.addr(), "127.0.0.1:4450");
    assert_eq!(u.to_string(), "smb://alice@127.0.0.1:4450/share/dir/t.dat");
    let u = SmbUrl::parse("SMB://CORP;bob@[::1]/my%20share/t.dat").unwrap();
    assert_eq!(
        (u.domain.as_str(), u.user.as_str(), u.port, u.share.as_str()),
        ("CORP", "bob", 445, "my share")
    );
    assert_eq!(u.addr(), "[::1]:445");
    assert!(SmbUrl::is_smb("smb://x") && !SmbUrl::is_smb("/tmp/smb://"));
}

#[test]
fn bad_urls_say_what_is_wrong() {
    use UrlError::*;
    let e = |s| SmbUrl::parse(s).unwrap_err();
    assert!(matches!(e("/tmp/t.dat"), NotSmb(_)));
    assert_eq!(e("smb://host/share/t"), NoUser);
    assert_eq!(e("smb://@host/share/t"), NoUser);
    assert_eq!(e("smb://u:pw@host/share/t"), PasswordInUrl);
    assert!(matches!(e("smb://u@/share/t"), BadHost(_)));
    assert!(matches!(e("smb://u@[::1/share/t"), BadHost(_)));
    assert!(matches!(e("smb://u@h:0/share/t"), BadPort(_)));
    assert!(matches!(e("smb://u@h:99999/share/t"), BadPort(_)));
    assert!(matches!(e("smb://u@h:+44/share/t"), BadPort(_)));
    assert_eq!(e("smb://u@h"), NoShare);
    assert_eq!(e("smb://u@h/"), NoShare);
    assert_eq!(e("smb://u@h/share"), NoPath);
    assert_eq!(e("smb://u@h/share/"), NoPath);
    assert!(matches!(e("smb://u@h/share/a//b"), BadComponent { .. }));
    assert!(matches!(e("smb://u@h/share/../b"), BadComponent { .. }));
    assert!(matches!(e("smb://u@h/share/a?b"), BadComponent { .. }));
    assert!(matches!(e("smb://u@h/share/a%5Cb"), BadComponent { .. }));
    assert!(matches!(e("smb://u@h/share/a%2Fb"), BadComponent { .. }));
    assert!(matches!(e("smb://u@h/sh:are/b"), BadComponent { .. }));
    assert!(matches!(e("smb://u@h/share/a%zz"), BadEscape(_)));
    assert!(matches!(e("smb://u@h/share/a%ff"), BadEscape(_)));
    let msg = e("smb://u:pw@h/s/t").to_string();
    assert!(msg.contains(PASSWORD_ENV), "{msg}");
}

mod encryption_capability {
    use super::super::negotiate::*;
    use super::*;
    use sha2::{Digest, Sha512};
    use smb2::msg::header::Header;
    use smb2::msg::negotiate::{
        NegotiateContext, NegotiateRequest, NegotiateResponse, CIPHER_AES_128_CCM,
        CIPHER_AES_128_GCM, HASH_ALGORITHM_SHA512,
    };
    use smb2::pack::Guid;
    use smb2::transport::{MockTransport, TransportSend};
    use smb2::types::flags::{Capabilities, SecurityMode};

    fn message(header: &Header, body: &dyn Pack) -> Vec<u8> {
        let mut c = WriteCursor::new();
        header.pack(&mut c);
        body.pack(&mut c);
        c.into_inner()
    }

    fn guid(n: u32) -> Guid {
        Guid {
            data1: n,
            data2: 2,
            data3: 3,
            data4: [4; 8],
        }
    }

    /// A NEGOTIATE request as smb2 0.39 builds it (capabilities DFS | LEASING | LARGE_MTU).
    fn negotiate_request(caps: u32) -> Vec<u8> {
        let req = NegotiateRequest {
            security_mode: SecurityMode::new(SecurityMode::SIGNING_ENABLED),
            capabilities: Capabilities::new(caps),
            client_guid: guid(0xC11E),
            dialects: Dialect::ALL.to_vec(),
            negotiate_contexts: vec![
                NegotiateContext::PreauthIntegrity {
                    hash_algorithms: vec![HASH_ALGORITHM_SHA512],
                    salt: vec![0x5A; 32],
                },
                NegotiateContext::Encryption {
                    ciphers: vec![CIPHER_AES_128_GCM, CIPHER_AES_128_CCM],
                },
            ],
        };
        message(&Header::new_request(Command::Negotiate), &req)
    }

    fn negotiate_response() -> Vec<u8> {
        let mut h = Header::new_request(Command::Negotiate);
        h.flags.set_response();
        h.credits = 1;
        let resp = NegotiateResponse {
            security_mode: SecurityMode::new(SecurityMode::SIGNING_ENABLED),
            dialect_revision: Dialect::Smb3_1_1,
            server_guid: guid(0x5E4E),
            capabilities: Capabilities::new(Capabilities::DFS | Capabilities::LARGE_MTU),
            max_transact_size: 1 << 20,
            max_read_size: 1 << 20,
            max_write_size: 1 << 20,
            system_time: 133_000_000_000_000_000,
            server_start_time: 0,
            security_buffer: vec![0x60, 0x00],
            negotiate_contexts: vec![
                NegotiateContext::PreauthIntegrity {
                    hash_algorithms: vec![HASH_ALGORITHM_SHA512],
                    salt: vec![0xA5; 32],
                },
                NegotiateContext::Encryption {
                    ciphers: vec![CIPHER_AES_128_GCM],
                },
            ],
        };
        message(&h, &resp)
    }

    const SMB2_CAPS: u32 = Capabilities::DFS | Capabilities::LEASING | Capabilities::LARGE_MTU;

    /// MS-SMB2 3.2.4.2.2.2 / 3.2.5.2, computed with `sha2` directly: H0 is 64 zero
    /// bytes, Hi = SHA-512(Hi-1 || message i).
    fn sha512_chain(messages: &[&[u8]]) -> [u8; 64] {
        let mut h = [0u8; 64];
        for m in messages {
            let mut d = Sha512::new();
            d.update(h);
            d.update(m);
            h.copy_from_slice(&d.finalize());
        }
        h
    }

    #[test]
    fn the_rewrite_sets_only_the_encryption_bit_of_a_negotiate_request() {
        assert_eq!(SMB2_GLOBAL_CAP_ENCRYPTION, Capabilities::ENCRYPTION);
        let req = negotiate_request(SMB2_CAPS);
        assert_eq!(u32_at(&req, NEGOTIATE_CAPABILITIES_AT), SMB2_CAPS);
        let out = with_encryption_capability(&req).expect("a NEGOTIATE request is rewritten");
        assert_eq!(out.len(), req.len());
        let changed: Vec<usize> = (0..req.len()).filter(|&i| req[i] != out[i]).collect();
        assert_eq!(
            changed,
            [NEGOTIATE_CAPABILITIES_AT],
            "only Capabilities' low byte"
        );
        assert_eq!(
            req[NEGOTIATE_CAPABILITIES_AT] ^ out[NEGOTIATE_CAPABILITIES_AT],
            0x40
        );
        // smb2 reads the result back as the same request with ENCRYPTION added.
        let body = &out[64..];
        let back = NegotiateRequest::unpack(&mut ReadCursor::new(body)).unwrap();
        assert_eq!(
            back.capabilities.bits(),
            SMB2_CAPS | Capabilities::ENCRYPTION
        );
        assert_eq!(back.dialects, Dialect::ALL.to_vec());
        assert_eq!(back.client_guid, guid(0xC11E));
        assert_eq!(back.negotiate_contexts.len(), 2);
        // Already set: nothing to do.
        assert_eq!(with_encryption_capability(&out), None);
        assert_eq!(
            with_encryption_capability(&negotiate_request(SMB2_CAPS | Capabilities::ENCRYPTION)),
            None
        );
    }

    #[test]
    fn the_rewrite_leaves_every_other_message_alone() {
        let req = negotiate_request(SMB2_CAPS);
        // The response (SMB2_FLAGS_SERVER_TO_REDIR) is not a request.
        let resp = negotiate_response();
        assert!(is_negotiate(&resp, true) && !is_negotiate(&resp, false));
        assert_eq!(with_encryption_capability(&resp), None);
        // Any other command, with the NEGOTIATE request's body: not touched.
        for cmd in [1u16, 3, 5, 7, 9] {
            let mut m = req.clone();
            m[12..14].copy_from_slice(&cmd.to_le_bytes());
            assert_eq!(with_encryption_capability(&m), None, "command {cmd}");
        }
        // A TRANSFORM (0xFD 'SMB') or COMPRESSION (0xFC 'SMB') header, a compound
        // chain (NextCommand set), a truncated request, an empty buffer.
        for proto in [0xFD, 0xFC] {
            let mut m = req.clone();
            m[0] = proto;
            assert_eq!(with_encryption_capability(&m), None);
        }
        let mut m = req.clone();
        m[20..24].copy_from_slice(&128u32.to_le_bytes());
        assert_eq!(with_encryption_capability(&m), None);
        assert_eq!(with_encryption_capability(&req[..64 + 35]), None);
        assert_eq!(with_encryption_capability(&[]), None);
        // The real WRITE and CREATE requests are sent as built.
        let w = packed(&write_request(FID, 0, &[1; 64], Pattern::WriteThrough));
        let mut hw = Header::new_request(Command::Write);
        hw.message_id = smb2::types::MessageId(9);
        let mut write = Vec::new();
        write.extend(message(&hw, &RawBody(&w)));
        assert_eq!(with_encryption_capability(&write), None);
    }

    /// Pack raw bytes as a body.
    struct RawBody<'a>(&'a [u8]);
    impl Pack for RawBody<'_> {
        fn pack(&self, c: &mut WriteCursor) {
            c.write_bytes(self.0);
        }
    }

    #[test]
    fn preauth_hash_is_the_sha512_chain() {
        let (a, b) = (negotiate_request(SMB2_CAPS), negotiate_response());
        assert_eq!(preauth_hash([]).value(), &[0u8; 64]);
        assert_eq!(
            preauth_hash([a.as_slice(), b.as_slice()]).value(),
            &sha512_chain(&[&a, &b])
        );
        assert_ne!(sha512_chain(&[&a, &b]), sha512_chain(&[&b, &a]));
    }

    #[test]
    fn rehash_refuses_what_it_cannot_account_for() {
        let log = NegotiateLog::default();
        let mut h = preauth_hash([b"x".as_slice()]);
        let before = *h.value();
        assert_eq!(rehash(&mut h, &log), Err(RehashError::NotSeen("request")));
        assert_eq!(h.value(), &before);
    }

    /// smb2's own NEGOTIATE through the wrapped transport: the request on the wire has
    /// the bit, and after `rehash` the connection's preauth hash is the SHA-512 chain
    /// over the bytes sent and received, not over the bytes smb2 serialized.
    #[test]
    fn negotiate_through_the_wrapper_rehashes_over_the_wire_bytes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mock = Arc::new(MockTransport::new());
            mock.enable_auto_rewrite_msg_id();
            let log = NegotiateLog::default();
            let mut conn = smb2::client::connection::Connection::from_transport(
                Box::new(CapSend::new(Arc::clone(&mock), log.clone())),
                Box::new(CapReceive::new(Arc::clone(&mock), log.clone())),
                "server",
            );
            let resp = negotiate_response();
            mock.queue_response(resp.clone());
            tokio::time::timeout(std::time::Duration::from_secs(20), conn.negotiate())
                .await
                .expect("negotiate answered")
                .expect("negotiate succeeded");

            let wire = mock.sent_message(0).expect("one message sent");
            assert_eq!(mock.sent_count(), 1);
            let e = log.exchange().expect("exchange recorded");
            assert_eq!(e.sent, wire);
            assert_eq!(e.response.as_deref(), Some(resp.as_slice()));
            assert_eq!(
                u32_at(&e.serialized, NEGOTIATE_CAPABILITIES_AT),
                SMB2_CAPS,
                "smb2 0.39 itself does not set SMB2_GLOBAL_CAP_ENCRYPTION"
            );
            assert_eq!(
                u32_at(&wire, NEGOTIATE_CAPABILITIES_AT),
                SMB2_CAPS | SMB2_GLOBAL_CAP_ENCRYPTION
            );
            // smb2 hashed what it serialized...
            assert_eq!(
                conn.preauth_hasher().value(),
                &sha512_chain(&[&e.serialized, &resp])
            );
            conn.with_preauth_hasher_mut(|h| rehash(h, &log)).unwrap();
            // ...and now the hash is over the wire bytes, as the server computes it.
            assert_eq!(
                conn.preauth_hasher().value(),
                &sha512_chain(&[&wire, &resp])
            );
            assert_ne!(
                sha512_chain(&[&wire, &resp]),
                sha512_chain(&[&e.serialized, &resp])
            );
            // A second rehash finds smb2's value gone and refuses.
            assert_eq!(
                conn.with_preauth_hasher_mut(|h| rehash(h, &log)),
                Err(RehashError::Unexpected)
            );
            let params = conn.params().unwrap();
            assert_eq!(params.dialect, Dialect::Smb3_1_1);
            assert_eq!(params.cipher, Some(smb2::client::Cipher::Aes128Gcm));
            // Later messages pass through untouched.
            mock.clear_sent();
            let send = CapSend::new(Arc::clone(&mock), log.clone());
            let req = negotiate_request(SMB2_CAPS);
            let mut other = req.clone();
            other[12] = 1;
            send.send(&other).await.unwrap();
            assert_eq!(mock.sent_message(0).unwrap(), other);
            assert_eq!(log.exchange(), Some(e), "not recorded as a NEGOTIATE");
        });
    }
}
