//! What the csv parser of [`super::TraceReader`] is fed: the trace's bytes, whose line
//! breaks it remembers (for physical line numbers), then [`SENTINEL`], which shows
//! whether the trace ends inside a quoted field.

use std::collections::VecDeque;
use std::io::Read;

/// Bytes fed to the csv parser after the end of the trace.
///
/// `csv-core` silently ends a record whose quoted field is still open at the end of
/// the input, as if the quote had been closed (Python's csv with `strict=True` raises
/// "unexpected end of data"). After these bytes, the parser's own quoting state shows:
/// inside a quoted field, both bytes join that field and its record ends 2 bytes past
/// the trace ([`LineIndex::end`]); anywhere else, the LF ends the record in progress (or
/// is a blank line) and the NUL is one more record, a single field `\0` that also ends
/// 2 bytes past the trace ([`is_sentinel_record`]), which the reader drops.
pub(super) const SENTINEL: &[u8] = b"\n\0";

/// True for the record that [`SENTINEL`] adds after a trace that does not end inside a
/// quoted field: a single field `\0` ending at `end` (the csv position after it),
/// 2 bytes past the trace of length `trace_len`.
pub(super) fn is_sentinel_record(rec: &csv::ByteRecord, end: u64, trace_len: u64) -> bool {
    end == trace_len + SENTINEL.len() as u64 && rec.len() == 1 && &rec[0] == b"\0"
}

/// A reader that remembers where the CR and LF bytes are in the part of the input the
/// csv parser has buffered, so that record positions can be turned into physical line
/// numbers. (`csv::Position::line` miscounts CRLF-terminated files, and
/// `csv::Position::byte` points into the terminator before a record.) Memory: one entry per
/// CR/LF byte read ahead and not yet passed, i.e. bounded by the csv buffer. At the end
/// of the input it yields [`SENTINEL`] (not counted in [`LineIndex::offset`], no line
/// break).
pub(super) struct LineIndex<R> {
    inner: R,
    /// Bytes of the trace read so far.
    pub(super) offset: u64,
    breaks: VecDeque<(u64, bool)>,
    lf_before: u64,
    /// Bytes of [`SENTINEL`] yielded so far (after the end of the input).
    sentinel_sent: usize,
}

impl<R> LineIndex<R> {
    pub(super) fn new(inner: R) -> Self {
        LineIndex {
            inner,
            offset: 0,
            breaks: VecDeque::new(),
            lf_before: 0,
            sentinel_sent: 0,
        }
    }

    /// The length of the trace in bytes, once its end has been read.
    pub(super) fn end(&self) -> Option<u64> {
        (self.sentinel_sent > 0).then_some(self.offset)
    }

    /// 1-based line of the record that csv reports at byte `b`.
    pub(super) fn line_at(&mut self, b: u64) -> u64 {
        while let Some(&(at, lf)) = self.breaks.front() {
            if at >= b {
                break;
            }
            self.breaks.pop_front();
            self.lf_before += u64::from(lf);
        }
        let extra: u64 = (b..)
            .zip(self.breaks.iter())
            .take_while(|(pos, &(at, _))| at == *pos)
            .map(|(_, &(_, lf))| u64::from(lf))
            .sum();
        1 + self.lf_before + extra
    }
}

impl<R: Read> Read for LineIndex<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.sentinel_sent == 0 {
            let n = self.inner.read(buf)?;
            if n > 0 {
                for i in memchr::memchr2_iter(b'\r', b'\n', &buf[..n]) {
                    self.breaks
                        .push_back((self.offset + i as u64, buf[i] == b'\n'));
                }
                self.offset += n as u64;
                return Ok(n);
            }
        }
        let rest = &SENTINEL[self.sentinel_sent..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.sentinel_sent += n;
        Ok(n)
    }
}
