//! Bounds-checked little-endian reader and writer over byte slices, and UTF-16
//! string validation. Nothing here can panic on any input.

use crate::{DecodeError, Utf16Problem};

/// Sequential little-endian reader over a byte slice.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at offset 0 of `buf`.
    pub const fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Current offset in bytes.
    pub const fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub const fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Takes the next `n` bytes. Error: `TooShort`.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Overflow { field: "length" })?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::TooShort {
            needed: clamp_u32(end),
            got: clamp_u32(self.buf.len()),
        })?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Reads a `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Reads a `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a `u16` reserved field that must be zero. Error: `NonZeroReserved`.
    pub fn reserved16(&mut self, field: &'static str) -> Result<(), DecodeError> {
        if self.u16()? != 0 {
            return Err(DecodeError::NonZeroReserved { field });
        }
        Ok(())
    }

    /// Reads a `u32` reserved field that must be zero. Error: `NonZeroReserved`.
    pub fn reserved32(&mut self, field: &'static str) -> Result<(), DecodeError> {
        if self.u32()? != 0 {
            return Err(DecodeError::NonZeroReserved { field });
        }
        Ok(())
    }
}

/// Sequential little-endian writer into a byte slice.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer at offset 0 of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub const fn position(&self) -> usize {
        self.pos
    }

    /// Appends raw bytes. Error: `OutputTooSmall`.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), DecodeError> {
        let end = self
            .pos
            .checked_add(b.len())
            .ok_or(DecodeError::Overflow { field: "length" })?;
        let len = self.buf.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(DecodeError::OutputTooSmall {
                needed: clamp_u32(end),
                got: clamp_u32(len),
            })?;
        dst.copy_from_slice(b);
        self.pos = end;
        Ok(())
    }

    /// Appends a `u16`.
    pub fn u16(&mut self, v: u16) -> Result<(), DecodeError> {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) -> Result<(), DecodeError> {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) -> Result<(), DecodeError> {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends `n` zero bytes.
    pub fn zeros(&mut self, n: usize) -> Result<(), DecodeError> {
        for _ in 0..n {
            self.bytes(&[0])?;
        }
        Ok(())
    }

    /// Overwrites a `u32` at an absolute offset already written (for back-patched
    /// lengths). Error: `OutputTooSmall`.
    pub fn patch_u32(&mut self, at: usize, v: u32) -> Result<(), DecodeError> {
        let end = at
            .checked_add(4)
            .ok_or(DecodeError::Overflow { field: "offset" })?;
        let len = self.buf.len();
        let dst = self
            .buf
            .get_mut(at..end)
            .ok_or(DecodeError::OutputTooSmall {
                needed: clamp_u32(end),
                got: clamp_u32(len),
            })?;
        dst.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
}

/// Saturating `usize` -> `u32` for error reports.
pub const fn clamp_u32(v: usize) -> u32 {
    if v > u32::MAX as usize {
        u32::MAX
    } else {
        v as u32
    }
}

/// Checks a whole buffer's size before anything in it is read.
/// Errors: `TooShort` (< `min` bytes), `TooLong` (> `max` bytes).
pub fn size_within(buf: &[u8], min: usize, max: usize) -> Result<(), DecodeError> {
    if buf.len() < min {
        Err(DecodeError::TooShort {
            needed: clamp_u32(min),
            got: clamp_u32(buf.len()),
        })
    } else if buf.len() > max {
        Err(DecodeError::TooLong {
            max: clamp_u32(max),
            got: clamp_u32(buf.len()),
        })
    } else {
        Ok(())
    }
}

/// Checks a version field. Error: `UnknownVersion { expected, got }`.
pub fn expect_version(got: u32, expected: u32) -> Result<(), DecodeError> {
    if got == expected {
        Ok(())
    } else {
        Err(DecodeError::UnknownVersion { expected, got })
    }
}

/// Checks a header's declared total length (bytes) against the buffer it came in.
/// Error: `LengthMismatch { declared, actual }`.
pub fn expect_declared_length(declared: u32, buf: &[u8]) -> Result<(), DecodeError> {
    if declared as usize == buf.len() {
        Ok(())
    } else {
        Err(DecodeError::LengthMismatch {
            declared,
            actual: clamp_u32(buf.len()),
        })
    }
}

/// A validated UTF-16LE string borrowed from a wire buffer: even byte length,
/// no U+0000, no unpaired surrogate, at most the field's limit in code units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utf16Str<'a> {
    bytes: &'a [u8],
}

impl<'a> Utf16Str<'a> {
    /// Validates `bytes` as the field `field` with at most `max_units` code units.
    ///
    /// Errors: `Utf16 { OddLength | EmbeddedNul | UnpairedSurrogate | TooLong }`.
    pub fn new(field: &'static str, bytes: &'a [u8], max_units: u32) -> Result<Self, DecodeError> {
        if bytes.len() % 2 != 0 {
            return Err(DecodeError::Utf16 {
                field,
                problem: Utf16Problem::OddLength,
            });
        }
        let units = bytes.len() / 2;
        if units > max_units as usize {
            return Err(DecodeError::Utf16 {
                field,
                problem: Utf16Problem::TooLong {
                    max: max_units,
                    got: clamp_u32(units),
                },
            });
        }
        let s = Utf16Str { bytes };
        if s.units().any(|u| u == 0) {
            return Err(DecodeError::Utf16 {
                field,
                problem: Utf16Problem::EmbeddedNul,
            });
        }
        if char::decode_utf16(s.units()).any(|r| r.is_err()) {
            return Err(DecodeError::Utf16 {
                field,
                problem: Utf16Problem::UnpairedSurrogate,
            });
        }
        Ok(s)
    }

    /// The code units.
    pub fn units(&self) -> impl Iterator<Item = u16> + 'a {
        self.bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    }

    /// The characters (validated, so no replacement ever happens).
    pub fn chars(&self) -> impl Iterator<Item = char> + 'a {
        char::decode_utf16(self.units()).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    /// Length in UTF-16 code units.
    pub const fn len_units(&self) -> usize {
        self.bytes.len() / 2
    }

    /// Length in bytes.
    pub const fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// True for the empty string.
    pub const fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The raw UTF-16LE bytes.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Number of UTF-16 code units `s` encodes to.
pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Writes `s` as UTF-16LE (no terminator).
pub fn write_utf16(w: &mut Writer<'_>, s: &str) -> Result<(), DecodeError> {
    for u in s.encode_utf16() {
        w.u16(u)?;
    }
    Ok(())
}
