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
