//! What the csv parser of [`super::TraceReader`] has been fed: where the line breaks
//! are (for physical line numbers) and whether the input ended inside a quoted field.

use std::collections::VecDeque;
use std::io::Read;

/// The csv parser's quoting state after the bytes read so far, followed the way
/// `csv-core` parses with the reader's settings (`"` opens a quoted field only at the
/// start of a field, `""` inside one is a literal quote, `,` separates fields, CR and LF
/// end records outside quotes). Only needed to tell whether the input ends inside a
/// quoted field, which `csv-core` accepts silently (Python's csv with `strict=True`
/// raises "unexpected end of data").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// Outside quotes; `true` at the start of a field.
    Unquoted { field_start: bool },
    /// Inside a quoted field.
    Quoted,
    /// Right after a `"` inside a quoted field: the closing quote or the first of `""`.
    QuoteInQuoted,
}

/// A reader that remembers where the CR and LF bytes are in the part of the input the
/// csv parser has buffered, so that record positions can be turned into physical line
/// numbers. (`csv::Position::line` miscounts CRLF-terminated files, and
/// `csv::Position::byte` points into the terminator before a record.) Memory: one entry per
/// CR/LF byte read ahead and not yet passed, i.e. bounded by the csv buffer. It also
/// follows the quoting ([`Quoting`]) to find a quote left open at the end of the input.
pub(super) struct LineIndex<R> {
    inner: R,
    /// Bytes read so far.
    pub(super) offset: u64,
    breaks: VecDeque<(u64, bool)>,
    lf_before: u64,
    quoting: Quoting,
    /// Byte offset of the `"` that opened the current (or last) quoted field.
    quote_opened_at: u64,
    /// The input has ended.
    eof: bool,
}

impl<R> LineIndex<R> {
    pub(super) fn new(inner: R) -> Self {
        LineIndex {
            inner,
            offset: 0,
            breaks: VecDeque::new(),
            lf_before: 0,
            quoting: Quoting::Unquoted { field_start: true },
            quote_opened_at: 0,
            eof: false,
        }
    }

    /// Advances [`Quoting`] over `buf`, the bytes at `self.offset..`. Jumps from quote to
    /// quote inside quoted fields and from separator to separator in unquoted ones.
    fn follow_quotes(&mut self, buf: &[u8]) {
        let is_sep = |b: u8| matches!(b, b',' | b'\r' | b'\n');
        let mut i = 0;
        while i < buf.len() {
            match self.quoting {
                Quoting::Quoted => match memchr::memchr(b'"', &buf[i..]) {
                    Some(j) => {
                        i += j + 1;
                        self.quoting = Quoting::QuoteInQuoted;
                    }
                    None => return,
                },
                Quoting::QuoteInQuoted => {
                    let b = buf[i];
                    i += 1;
                    self.quoting = if b == b'"' {
                        Quoting::Quoted
                    } else {
                        Quoting::Unquoted {
                            field_start: is_sep(b),
                        }
                    };
                }
                Quoting::Unquoted { field_start: true } => {
                    let b = buf[i];
                    if b == b'"' {
                        self.quoting = Quoting::Quoted;
                        self.quote_opened_at = self.offset + i as u64;
                        i += 1;
                    } else if is_sep(b) {
                        i += 1;
                    } else {
                        self.quoting = Quoting::Unquoted { field_start: false };
                    }
                }
                Quoting::Unquoted { field_start: false } => {
                    match memchr::memchr3(b',', b'\r', b'\n', &buf[i..]) {
                        Some(j) => {
                            i += j + 1;
                            self.quoting = Quoting::Unquoted { field_start: true };
                        }
                        None => return,
                    }
                }
            }
        }
    }

    /// The offset of the `"` of a quoted field that the input ended inside, once the
    /// input has ended.
    pub(super) fn unterminated_quote(&self) -> Option<u64> {
        (self.eof && self.quoting == Quoting::Quoted).then_some(self.quote_opened_at)
    }
}

impl<R: Read> Read for LineIndex<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        for i in memchr::memchr2_iter(b'\r', b'\n', &buf[..n]) {
            self.breaks
                .push_back((self.offset + i as u64, buf[i] == b'\n'));
        }
        self.follow_quotes(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R> LineIndex<R> {
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
