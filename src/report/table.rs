//! Printing tables as aligned text, CSV or JSON, row by row as they come: nothing but the first page of
//! an aligned text table (whose column widths it decides) is held in memory.
//!
//! Text from the store is untrusted: in text and CSV output control characters are escaped (see
//! [`crate::text::clean`]), and a text cell longer than [`MAX_CELL_CHARS`] is cut with a marker. CSV and
//! JSON keep every value whole. JSON gives typed values: lists such as `sizes` as JSON arrays, flags such
//! as `best` and `drop_last` as booleans.

use std::io::{self, Write};

use rusqlite::types::Value;

use crate::store::Table;
use crate::text::{clean, hex, truncate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Csv,
    Json,
}

/// Rows of an aligned text table read before its column widths are fixed.
pub const PAGE_ROWS: usize = 1000;
/// The longest cell an aligned text table prints whole.
pub const MAX_CELL_CHARS: usize = 200;

/// A cell as text: integers as is, reals with up to 6 significant decimals, NULL empty, BLOBs by size.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => format_real(*f),
        Value::Text(s) => s.clone(),
        Value::Blob(b) => format!("<{} bytes>", b.len()),
    }
}

/// A cell as an aligned text table shows it: on one line, control characters escaped, long text cut, a
/// real number to 4 significant digits ([`text_real`]); CSV and JSON keep full precision.
fn text_cell(v: &Value) -> String {
    match v {
        Value::Text(s) => clean(&truncate(s, MAX_CELL_CHARS)).into_owned(),
        Value::Real(f) => text_real(*f),
        other => cell(other),
    }
}

/// A real number as text tables show it: 4 significant digits, trailing zeros dropped (`0.9576`,
/// `0.974`, `3.724`, `0.001273`), a whole number with one decimal (`1.0`), 10 000 and more without
/// decimals, below 0.0001 in scientific notation (`8.485e-5`).
pub fn text_real(f: f64) -> String {
    if !f.is_finite() {
        return f.to_string();
    }
    if f == f.trunc() && f.abs() < 1e15 {
        return format!("{f:.1}");
    }
    let a = f.abs();
    if a >= 1e4 {
        return format!("{f:.0}");
    }
    if a < 1e-4 {
        return format!("{f:.3e}");
    }
    let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{f:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

fn format_real(f: f64) -> String {
    if f == f.trunc() && f.abs() < 1e15 {
        format!("{f:.1}")
    } else if f.abs() >= 1e6 && f.abs() < 1e15 {
        format!("{f:.3}") // e.g. unix times
    } else if f.abs() >= 1e-4 && f.abs() < 1e6 {
        let s = format!("{f:.6}");
        let s = s.trim_end_matches('0');
        s.strip_suffix('.').unwrap_or(s).to_string()
    } else {
        format!("{f:.4e}")
    }
}

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => (*i).into(),
        Value::Real(f) => serde_json::Number::from_f64(*f)
            .map(Into::into)
            .unwrap_or(serde_json::Value::Null),
        Value::Text(s) => s.clone().into(),
        Value::Blob(b) => hex(b).into(),
    }
}

/// Columns whose text holds JSON (a layer-size list, a sweep's overrides, a tensor shape): given as that
/// JSON value, not as a string.
const JSON_TEXT_COLUMNS: &[&str] = &["sizes", "overrides", "shape"];
/// Columns that are flags: given as `true`/`false` (`best` marks the best configuration with `*`).
const FLAG_COLUMNS: &[&str] = &["best", "drop_last", "git_dirty", "initial_stored"];

/// A cell as JSON under its column's documented type: JSON text as JSON, flags as booleans.
pub(crate) fn typed_json_value(column: &str, v: &Value) -> serde_json::Value {
    match v {
        Value::Text(t) if JSON_TEXT_COLUMNS.contains(&column) => {
            serde_json::from_str(t).unwrap_or_else(|_| serde_json::Value::String(t.clone()))
        }
        Value::Text(t) if column == "best" => serde_json::Value::Bool(t == "*"),
        Value::Text(t) if column == "identical" && (t == "yes" || t == "no") => {
            serde_json::Value::Bool(t == "yes")
        }
        // A run's tags, comma-joined in the views: a JSON list.
        Value::Text(t) if column == "tags" => t
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| serde_json::Value::String(s.into()))
            .collect(),
        Value::Null if column == "tags" => serde_json::Value::Array(Vec::new()),
        Value::Integer(i) if FLAG_COLUMNS.contains(&column) && (*i == 0 || *i == 1) => {
            serde_json::Value::Bool(*i == 1)
        }
        other => json_value(other),
    }
}

/// A column's key in JSON: its name, but `#` (a row number in text tables) is `index`.
fn json_key(column: &str) -> String {
    match column {
        "#" => "index".into(),
        c => c.to_string(),
    }
}

/// One row as a JSON object.
fn json_object(columns: &[String], row: &[Value]) -> serde_json::Value {
    serde_json::Value::Object(
        columns
            .iter()
            .zip(row)
            .map(|(c, v)| (json_key(c), typed_json_value(c, v)))
            .collect(),
    )
}

/// The table as a JSON array of objects, one per row (BLOBs as hex).
pub fn json_rows(t: &Table) -> serde_json::Value {
    t.rows.iter().map(|r| json_object(&t.columns, r)).collect()
}

/// A CSV field: the value whole (quoted when it must be), or with control characters other than line
/// breaks and tabs escaped when `escape` (CSV shown on a terminal, where an escape sequence would act).
fn csv_field(s: &str, escape: bool) -> String {
    let s: String = if escape {
        s.chars()
            .map(|c| match c {
                '\n' | '\r' | '\t' => c.to_string(),
                c if c.is_control() => format!("\\u{{{:x}}}", c as u32),
                c => c.to_string(),
            })
            .collect()
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Writes a table row by row.
pub struct TableWriter<'a> {
    out: &'a mut dyn Write,
    format: Format,
    columns: Vec<String>,
    /// Text: the first page, until the widths are fixed.
    page: Vec<Vec<String>>,
    numeric: Vec<bool>,
    widths: Option<Vec<usize>>,
    rows: usize,
    /// CSV: escape control characters (for a terminal); otherwise every value is written whole.
    escape: bool,
}

impl<'a> TableWriter<'a> {
    /// Start a table with these columns (CSV writes its header at once). CSV keeps every value whole
    /// (see [`TableWriter::on_terminal`]).
    pub fn new(out: &'a mut dyn Write, format: Format, columns: &[String]) -> io::Result<Self> {
        Self::on_terminal(out, format, columns, false)
    }

    /// [`TableWriter::new`] for output that a terminal shows (`terminal`): CSV then escapes control
    /// characters in values, as text tables always do, so that no escape sequence from the store acts.
    pub fn on_terminal(
        out: &'a mut dyn Write,
        format: Format,
        columns: &[String],
        terminal: bool,
    ) -> io::Result<Self> {
        let w = TableWriter {
            out,
            format,
            columns: columns.to_vec(),
            page: Vec::new(),
            numeric: vec![true; columns.len()],
            widths: None,
            rows: 0,
            escape: terminal,
        };
        if format == Format::Csv {
            let header: Vec<String> = columns.iter().map(|c| csv_field(c, terminal)).collect();
            writeln!(w.out, "{}", header.join(","))?;
        }
        Ok(w)
    }

    /// Add one row.
    pub fn row(&mut self, row: &[Value]) -> io::Result<()> {
        self.rows += 1;
        match self.format {
            Format::Csv => {
                let fields: Vec<String> = row
                    .iter()
                    .map(|v| match v {
                        Value::Real(f) => f.to_string(),
                        other => csv_field(&cell(other), self.escape),
                    })
                    .collect();
                writeln!(self.out, "{}", fields.join(","))
            }
            Format::Json => {
                let pretty = serde_json::to_string_pretty(&json_object(&self.columns, row))
                    .map_err(io::Error::other)?;
                let sep = if self.rows == 1 { "[\n" } else { ",\n" };
                write!(self.out, "{sep}")?;
                let lines: Vec<String> = pretty.lines().map(|l| format!("  {l}")).collect();
                write!(self.out, "{}", lines.join("\n"))
            }
            Format::Text => {
                let cells: Vec<String> = row.iter().map(text_cell).collect();
                match &self.widths {
                    Some(_) => self.text_line(&cells),
                    None => {
                        for (n, v) in self.numeric.iter_mut().zip(row) {
                            *n &= matches!(v, Value::Integer(_) | Value::Real(_) | Value::Null);
                        }
                        self.page.push(cells);
                        if self.page.len() >= PAGE_ROWS {
                            self.flush_page()?;
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    /// Fix the widths from the page read so far and print it.
    fn flush_page(&mut self) -> io::Result<()> {
        let header: Vec<String> = self
            .columns
            .iter()
            .map(|c| clean(&truncate(c, MAX_CELL_CHARS)).into_owned())
            .collect();
        let mut widths: Vec<usize> = header.iter().map(|c| c.chars().count()).collect();
        for r in &self.page {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        self.widths = Some(widths.clone());
        self.text_line(&header)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        writeln!(self.out, "{}", rule.join("  "))?;
        for r in std::mem::take(&mut self.page) {
            self.text_line(&r)?;
        }
        Ok(())
    }

    fn text_line(&mut self, fields: &[String]) -> io::Result<()> {
        let widths = self.widths.as_deref().unwrap_or(&[]);
        let mut line = String::new();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(f.chars().count());
            let right = self.numeric.get(i).copied().unwrap_or(false);
            if right {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(f);
            } else {
                line.push_str(f);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(self.out, "{}", line.trim_end())
    }

    /// End the table.
    pub fn finish(mut self) -> io::Result<()> {
        match self.format {
            Format::Csv => Ok(()),
            Format::Json => {
                if self.rows == 0 {
                    writeln!(self.out, "[]")
                } else {
                    writeln!(self.out, "\n]")
                }
            }
            Format::Text => {
                if self.widths.is_none() {
                    self.flush_page()?;
                }
                if self.rows == 0 {
                    writeln!(self.out, "(no rows)")?;
                }
                Ok(())
            }
        }
    }
}

/// Write a whole table.
pub fn write(t: &Table, format: Format, out: &mut dyn Write) -> io::Result<()> {
    write_on(t, format, out, false)
}

/// [`write()`] for output a terminal shows (see [`TableWriter::on_terminal`]).
pub fn write_on(t: &Table, format: Format, out: &mut dyn Write, terminal: bool) -> io::Result<()> {
    let mut w = TableWriter::on_terminal(out, format, &t.columns, terminal)?;
    for r in &t.rows {
        w.row(r)?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &Table, f: Format) -> String {
        let mut out = Vec::new();
        write(t, f, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn huge_cells_and_control_characters_print_safely() {
        let t = Table {
            columns: vec!["name".into(), "n".into()],
            rows: vec![
                vec![Value::Text("x".repeat(70_000)), Value::Integer(1)],
                vec![Value::Text("evil\n\x1b[2J".into()), Value::Integer(22)],
            ],
        };
        let text = render(&t, Format::Text);
        assert!(
            text.contains("...(69800 more characters)"),
            "{}",
            &text[..300]
        );
        assert!(text.contains("evil\\n\\u{1b}[2J"));
        assert!(!text.contains('\x1b'));
        assert_eq!(text.lines().count(), 4);
        let csv = render(&t, Format::Csv);
        assert!(csv.contains(&"x".repeat(70_000)), "CSV keeps values whole");
        assert!(csv.contains("\"evil\n\x1b[2J\""), "{csv:?}");
        let mut shown = Vec::new();
        write_on(&t, Format::Csv, &mut shown, true).unwrap();
        let shown = String::from_utf8(shown).unwrap();
        assert!(
            !shown.contains('\x1b') && shown.contains("\\u{1b}"),
            "{shown:?}"
        );
        let json = render(&t, Format::Json);
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back[0]["name"].as_str().unwrap().len(), 70_000);
        assert_eq!(back, json_rows(&t));
    }

    #[test]
    fn text_tables_show_four_significant_digits() {
        for (x, shown) in [
            (0.95755, "0.9576"),
            (0.974, "0.974"),
            (3.723627, "3.724"),
            (1.546842, "1.547"),
            (0.0012733, "0.001273"),
            (8.485e-5, "8.485e-5"),
            (1.0, "1.0"),
            (0.03, "0.03"),
            (12345.678, "12346"),
            (-0.5, "-0.5"),
            (999.96, "1000.0"),
        ] {
            assert_eq!(text_real(x), shown, "{x}");
        }
    }

    #[test]
    fn json_streams_as_serde_writes_it() {
        let t = Table {
            columns: vec!["a".into(), "b".into()],
            rows: vec![
                vec![Value::Integer(1), Value::Real(0.5)],
                vec![Value::Null, Value::Text("t".into())],
            ],
        };
        let expected = serde_json::to_string_pretty(&json_rows(&t)).unwrap() + "\n";
        let typed = Table {
            columns: vec![
                "best".into(),
                "sizes".into(),
                "#".into(),
                "drop_last".into(),
            ],
            rows: vec![vec![
                Value::Text("*".into()),
                Value::Text("[784,10]".into()),
                Value::Integer(1),
                Value::Integer(0),
            ]],
        };
        assert_eq!(
            json_rows(&typed),
            serde_json::json!([{"best": true, "sizes": [784, 10], "index": 1, "drop_last": false}])
        );
        assert_eq!(render(&t, Format::Json), expected);
        let empty = Table::new(&["a"]);
        assert_eq!(render(&empty, Format::Json), "[]\n");
        assert_eq!(render(&empty, Format::Text), "a\n-\n(no rows)\n");
    }
}
