//! Compile-time UTF-16 names and `UNICODE_STRING` views of them.

use windows_sys::Win32::Foundation::UNICODE_STRING;

/// Widens the ASCII string `ascii` (exactly `N` bytes) to UTF-16 at compile time.
///
/// Fails compilation if `ascii` is not `N` bytes long or holds a non-ASCII byte.
pub const fn ascii_to_utf16<const N: usize>(ascii: &str) -> [u16; N] {
    let bytes = ascii.as_bytes();
    assert!(bytes.len() == N, "length mismatch");
    let mut wide = [0u16; N];
    let mut i = 0;
    while i < N {
        assert!(bytes[i].is_ascii(), "kernel object names here are ASCII");
        wide[i] = bytes[i] as u16;
        i += 1;
    }
    wide
}

/// A counted `UNICODE_STRING` over a static UTF-16 buffer (no terminating NUL).
///
/// `Length` and `MaximumLength` are in bytes. The kernel routines FlushGuard passes it to
/// (`MmGetSystemRoutineAddress`, object attributes) only read the buffer, so the cast to
/// the C type's mutable pointer never leads to a write.
pub fn unicode_string(wide: &'static [u16]) -> UNICODE_STRING {
    let bytes = (wide.len() * 2) as u16;
    UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: wide.as_ptr().cast_mut(),
    }
}
