//! Prometheus text exposition format for node_exporter's textfile collector: gauge families
//! with HELP and TYPE lines, escaped labels, and the file replaced atomically so the
//! collector never reads half of it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

/// Mode of a metrics file: the collector usually runs as another user, and metrics hold
/// nothing secret.
pub const FILE_MODE: u32 = 0o644;

/// Appends one gauge family to `text`: HELP and TYPE, then a line per sample. A sample's
/// labels are written as [`labels`] renders them (empty for none).
pub fn write_gauge(text: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(text, "{name}{labels} {}", format_value(*value));
    }
}

/// A label set, `{key="value",...}`, values escaped; empty for no labels.
pub fn labels<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", k.as_ref(), escape_label(v.as_ref())))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: whole numbers without a fraction, so counts and timestamps read exactly.
pub fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// Replaces the metrics file with `text`: a temporary file in the same directory, fsync,
/// rename, fsync the directory; mode [`FILE_MODE`].
pub fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::durable::write_atomic_with_mode(path, text.as_bytes(), FILE_MODE)
        .with_context(|| format!("cannot write the metrics file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(1.5), "1.5");
        assert_eq!(format_value(1e20), "100000000000000000000");
    }

    #[test]
    fn families_render_in_exposition_format() {
        let mut text = String::new();
        write_gauge(&mut text, "x_up", "1 when up.", &[(String::new(), 1.0)]);
        write_gauge(
            &mut text,
            "x_lag_bytes",
            "Lag.",
            &[
                (labels(&[("slot", "a"), ("db", "q\"uote")]), 12.0),
                (labels(&[("slot", "b".to_string())]), 0.5),
            ],
        );
        write_gauge(&mut text, "x_empty", "No samples.", &[]);
        assert_eq!(
            text,
            "# HELP x_up 1 when up.\n# TYPE x_up gauge\nx_up 1\n\
             # HELP x_lag_bytes Lag.\n# TYPE x_lag_bytes gauge\n\
             x_lag_bytes{slot=\"a\",db=\"q\\\"uote\"} 12\nx_lag_bytes{slot=\"b\"} 0.5\n\
             # HELP x_empty No samples.\n# TYPE x_empty gauge\n"
        );
        assert_eq!(labels::<&str, &str>(&[]), "");
    }

    #[test]
    fn the_file_is_replaced_whole_and_readable_by_the_collector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool.prom");
        write_file(&path, "a 1\n").unwrap();
        write_file(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, FILE_MODE);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let err = write_file(&dir.path().join("missing/tool.prom"), "").unwrap_err();
        assert!(err.to_string().starts_with("cannot write the metrics file"));
    }
}
