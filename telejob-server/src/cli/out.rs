//! Standard output of the CLI. A reader that goes away (`telejob jobs list | head -1`) ends the
//! command quietly with status 0, as `head` wanted only what it read: no panic, no backtrace.

use std::io::Write;

/// Writes one line to standard output (`println!`'s arguments); exits 0 when the reader is gone.
macro_rules! say {
    () => {
        $crate::cli::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}

/// Writes `args` and a newline to standard output.
pub(crate) fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        gone(&e);
    }
}

/// Writes `bytes` to standard output as they are.
pub(crate) fn bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        gone(&e);
    }
}

/// Standard output failed: a reader that went away ends the command with status 0; any other
/// failure with 1, saying so.
fn gone(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("telejob: cannot write to standard output: {e}");
    std::process::exit(1);
}

/// How a list or a show prints: `-o table` (the default), `-o wide` (more columns), `-o json`
/// (the server's answer as it is, for scripts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns (a show: one field per line).
    #[default]
    Table,
    /// The table with more columns.
    Wide,
    /// JSON, as the API answers.
    Json,
}

/// `-o json|table|wide` of a list or a show.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct OutputArg {
    /// How to print: table, wide (more columns) or json (the API's answer).
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    pub(crate) output: Format,
}

/// Prints `rows` under `header` in columns two spaces apart (the last column unpadded).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == widths.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        line.trim_end().to_string()
    };
    say!("{}", render(&mut header.iter().copied()));
    for row in rows {
        say!("{}", render(&mut row.iter().map(String::as_str)));
    }
}

/// A JSON value's leaves by dotted path (`schedule.time_of_day`); arrays are leaves.
pub(crate) fn flatten(
    v: &serde_json::Value,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    fn walk(
        prefix: &str,
        v: &serde_json::Value,
        out: &mut std::collections::BTreeMap<String, serde_json::Value>,
    ) {
        match v {
            serde_json::Value::Object(m) if !m.is_empty() || prefix.is_empty() => {
                for (k, v) in m {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, v, out);
                }
            }
            serde_json::Value::Null => {}
            _ => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk("", v, &mut out);
    out
}

/// A value as one cell: strings bare, the rest as compact JSON.
pub(crate) fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// Prints a show as `-o` asks: JSON as it is, else one `field  value` line per leaf.
pub(crate) fn show(v: &serde_json::Value, format: Format) {
    if format == Format::Json {
        say!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let rows: Vec<Vec<String>> = flatten(v)
        .iter()
        .map(|(k, v)| vec![k.clone(), cell(v)])
        .collect();
    table(&["FIELD", "VALUE"], &rows);
}

/// What changed from `before` to `after`, one line per setting: `~ field: old → new`,
/// `+ field: new`, `- field: old`. Empty when nothing did.
pub(crate) fn diff(before: &serde_json::Value, after: &serde_json::Value) -> Vec<String> {
    let (old, new) = (flatten(before), flatten(after));
    let mut lines = Vec::new();
    for (k, was) in &old {
        match new.get(k) {
            Some(is) if is != was => lines.push(format!("~ {k}: {was} → {is}")),
            None => lines.push(format!("- {k}: {was}")),
            Some(_) => {}
        }
    }
    for (k, is) in &new {
        if !old.contains_key(k) {
            lines.push(format!("+ {k}: {is}"));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_diff_names_each_changed_added_and_removed_setting() {
        let before = json!({"timeout_minutes": 120, "env": {"A": "1", "B": "2"},
            "schedule": {"frequency": "daily", "time_of_day": "12:00"}});
        let after = json!({"timeout_minutes": 180, "env": {"A": "1", "C": "3"},
            "schedule": {"frequency": "daily", "time_of_day": "12:00"}});
        assert_eq!(
            super::diff(&before, &after),
            [
                "- env.B: \"2\"",
                "~ timeout_minutes: 120 → 180",
                "+ env.C: \"3\""
            ]
        );
        assert!(super::diff(&after, &after).is_empty());
    }
}
