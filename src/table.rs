//! Printing query results and reports as aligned text, CSV or JSON.

use std::io::{self, Write};

use rusqlite::types::Value;

use crate::store::Table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Csv,
    Json,
}

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
        Value::Blob(b) => crate::data::hex(b).into(),
    }
}

/// The table as a JSON array of objects, one per row (BLOBs as hex).
pub fn json_rows(t: &Table) -> serde_json::Value {
    t.rows
        .iter()
        .map(|r| {
            serde_json::Value::Object(
                t.columns
                    .iter()
                    .cloned()
                    .zip(r.iter().map(json_value))
                    .collect(),
            )
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Write `t` to `out` in `format`. Reals are written in full precision in CSV and JSON.
pub fn write(t: &Table, format: Format, out: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json_rows(t)).unwrap_or_default()
        ),
        Format::Csv => {
            writeln!(
                out,
                "{}",
                t.columns
                    .iter()
                    .map(|c| csv_field(c))
                    .collect::<Vec<_>>()
                    .join(",")
            )?;
            for r in &t.rows {
                let fields: Vec<String> = r
                    .iter()
                    .map(|v| match v {
                        Value::Real(f) => f.to_string(),
                        other => csv_field(&cell(other)),
                    })
                    .collect();
                writeln!(out, "{}", fields.join(","))?;
            }
            Ok(())
        }
        Format::Text => {
            let cells: Vec<Vec<String>> = t
                .rows
                .iter()
                .map(|r| r.iter().map(cell).collect())
                .collect();
            let mut widths: Vec<usize> = t.columns.iter().map(|c| c.chars().count()).collect();
            for r in &cells {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let numeric: Vec<bool> = (0..t.columns.len())
                .map(|i| {
                    t.rows
                        .iter()
                        .all(|r| matches!(r[i], Value::Integer(_) | Value::Real(_) | Value::Null))
                })
                .collect();
            let line = |fields: &[String]| -> String {
                let parts: Vec<String> = fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        if numeric[i] {
                            format!("{f:>w$}", w = widths[i])
                        } else {
                            format!("{f:<w$}", w = widths[i])
                        }
                    })
                    .collect();
                parts.join("  ").trim_end().to_string()
            };
            writeln!(out, "{}", line(&t.columns))?;
            writeln!(
                out,
                "{}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            )?;
            for r in &cells {
                writeln!(out, "{}", line(r))?;
            }
            if t.rows.is_empty() {
                writeln!(out, "(no rows)")?;
            }
            Ok(())
        }
    }
}
