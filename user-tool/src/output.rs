//! Human output: aligned tables (comfy-table) and byte/number formatting.

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};

/// A table with flushctl's look: ASCII borders (stable in logs and tests), header row,
/// columns sized to content, numeric columns right-aligned.
#[derive(Debug)]
pub struct TableBuilder {
    table: Table,
    right: Vec<bool>,
}

impl TableBuilder {
    /// Starts a table with these column headers; a header ending in `#` is numeric
    /// (right-aligned); the `#` is not printed.
    pub fn new(headers: &[&str]) -> Self {
        let mut table = Table::new();
        table
            .load_preset(presets::ASCII_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled);
        let right: Vec<bool> = headers.iter().map(|h| h.ends_with('#')).collect();
        table.set_header(headers.iter().map(|h| h.trim_end_matches('#')));
        for (i, r) in right.iter().enumerate() {
            if *r {
                if let Some(c) = table.column_mut(i) {
                    c.set_cell_alignment(CellAlignment::Right);
                }
            }
        }
        Self { table, right }
    }

    /// Appends a row (as many cells as headers).
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        debug_assert_eq!(cells.len(), self.right.len());
        self.table.add_row(cells);
        self
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.table.row_count()
    }

    /// True when there are no data rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rendered table.
    pub fn render(&self) -> String {
        self.table.to_string()
    }
}

/// A two-column key/value table.
pub fn kv_table(rows: &[(&str, String)]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    for (k, v) in rows {
        t.add_row(vec![format!("{k}:"), v.clone()]);
    }
    if let Some(c) = t.column_mut(0) {
        c.set_padding((0, 1));
    }
    t.to_string()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Bytes in binary units with one decimal (`512 B`, `4.0 KiB`, `1.5 MiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Writes one line to stdout; a closed pipe (`flushctl ... | head`) becomes an
/// [`std::io::ErrorKind::BrokenPipe`] error that `main` treats as a quiet exit.
///
/// # Errors
/// [`crate::error::CliError::Io`] when stdout cannot be written.
pub fn write_line(args: std::fmt::Arguments<'_>) -> Result<(), crate::error::CliError> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| crate::error::CliError::io("stdout", e))
}

/// `println!` that returns a [`crate::error::CliError`] instead of panicking.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write_line(format_args!(""))? };
    ($($arg:tt)*) => { $crate::output::write_line(format_args!($($arg)*))? };
}

/// Prints `value` as pretty JSON on stdout.
///
/// # Errors
/// Serialisation or stdout errors.
pub fn print_json<T: serde::Serialize>(value: &T) -> std::io::Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    text.push(b'\n');
    out.write_all(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_numbers_right() {
        let mut t = TableBuilder::new(&["file", "writes#"]);
        t.row(["a", "5"]).row(["bbbb", "12345"]);
        let s = t.render();
        let a = s.lines().find(|l| l.contains("| a ")).unwrap();
        let b = s.lines().find(|l| l.contains("| bbbb ")).unwrap();
        // Same width, and the last digits line up.
        assert_eq!(a.len(), b.len(), "{s}");
        assert_eq!(a.find("5 |"), b.find("5 |"), "{s}");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
