//! Printing results: colour-coded text, JSON lines, or a JUnit XML report; and `--list`.

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::check::{CheckResult, Run, Scope, Verdict, CATALOG};
use crate::Format;

/// Whether to colour stdout: only on a terminal, and never with NO_COLOR.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && !common::env::is_set(common::env::NO_COLOR)
}

fn paint(verdict: Verdict, text: &str, colour: bool) -> String {
    if !colour {
        return text.to_string();
    }
    let code = match verdict {
        Verdict::Pass => "32",
        Verdict::Fail => "1;31",
        Verdict::Skip => "33",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

#[derive(Debug, Serialize)]
struct Summary {
    passed: bool,
    checks: usize,
    pass: usize,
    fail: usize,
    skip: usize,
    failed_checks: Vec<String>,
    duration_s: f64,
}

fn summary(run: &Run, duration_s: f64) -> Summary {
    let mut failed_checks: Vec<String> = run
        .results
        .iter()
        .filter(|r| r.status == Verdict::Fail)
        .map(|r| r.check.to_string())
        .collect();
    failed_checks.dedup();
    Summary {
        passed: run.failed() == 0,
        checks: run.results.len(),
        pass: run.count(Verdict::Pass),
        fail: run.count(Verdict::Fail),
        skip: run.count(Verdict::Skip),
        failed_checks,
        duration_s,
    }
}

/// One text line for a result.
pub fn text_line(r: &CheckResult, colour: bool) -> String {
    let subject = r
        .subject
        .as_deref()
        .filter(|s| Some(*s) != r.kind)
        .map(|s| format!(" [{s}]"))
        .unwrap_or_default();
    format!(
        "{}  {}{subject}: {}",
        paint(r.status, r.status.label(), colour),
        r.check,
        r.message
    )
}

/// Prints every result and the summary in the chosen format.
pub fn print(format: Format, run: &Run, duration_s: f64) -> anyhow::Result<()> {
    let summary = summary(run, duration_s);
    // For the run's notification, which lists the failed checks whatever the format.
    common::output::keep_summary(&summary);
    match format {
        Format::Text => {
            let colour = colour();
            let mut out = common::output::stdout();
            for r in &run.results {
                writeln!(out, "{}", text_line(r, colour))?;
            }
            let verdict = if summary.passed {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            writeln!(
                out,
                "{}: {} passed, {} failed, {} skipped in {:.1}s",
                paint(
                    verdict,
                    if summary.passed { "OK" } else { "FAILED" },
                    colour
                ),
                summary.pass,
                summary.fail,
                summary.skip,
                duration_s
            )?;
            out.flush()?;
        }
        Format::Json => {
            for r in &run.results {
                let mut value = serde_json::to_value(r)?;
                value["type"] = "check".into();
                common::output::json_line(&value)?;
            }
            common::output::summary(common::output::OutputFormat::Json, &summary, String::new)?;
        }
        Format::Junit => {
            let xml = junit(run, &summary);
            let mut out = common::output::stdout();
            out.write_all(xml.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

/// XML text with the five special characters escaped (and control characters dropped).
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

fn junit(run: &Run, summary: &Summary) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"validate-backups\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        summary.checks, summary.fail, summary.skip, summary.duration_s
    ));
    xml.push_str(&format!(
        "  <testsuite name=\"validate-backups\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">\n",
        summary.checks, summary.fail, summary.skip, summary.duration_s
    ));
    for r in &run.results {
        let name = match &r.subject {
            Some(s) if Some(s.as_str()) != r.kind => format!("{} [{s}]", r.check),
            _ => r.check.to_string(),
        };
        let classname = format!("validate-backups.{}", r.kind.unwrap_or("repo"));
        xml.push_str(&format!(
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            xml_escape(&name),
            xml_escape(&classname),
            r.duration_s
        ));
        match r.status {
            Verdict::Pass => {
                xml.push_str(&format!(
                    ">\n      <system-out>{}</system-out>\n    </testcase>\n",
                    xml_escape(&r.message)
                ));
            }
            Verdict::Fail => xml.push_str(&format!(
                ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>\n",
                xml_escape(&r.message),
                xml_escape(r.check),
                xml_escape(&r.message)
            )),
            Verdict::Skip => xml.push_str(&format!(
                ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                xml_escape(&r.message)
            )),
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

/// `--list`: every check, one line each (or JSON lines).
pub fn print_list(format: Format) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Listed<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        check: &'a str,
        scope: &'a str,
        deep: bool,
        needs_server: bool,
        description: &'a str,
    }
    let width = CATALOG.iter().map(|d| d.name.len()).max().unwrap_or(0);
    for d in CATALOG {
        let scope = match d.scope {
            Scope::Repository => "repo",
            Scope::Kind(k) => k.name(),
        };
        match format {
            Format::Json => common::output::json_line(&Listed {
                kind: "check",
                check: d.name,
                scope,
                deep: d.deep,
                needs_server: d.needs_server,
                description: d.description,
            })?,
            _ => common::output::text_line(&format!("{:width$}  {}", d.name, d.description))?,
        }
    }
    if format == Format::Json {
        common::output::summary(
            common::output::OutputFormat::Json,
            &serde_json::json!({ "checks": CATALOG.len() }),
            String::new,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_xml() {
        assert_eq!(
            xml_escape("a<b & \"c\" 'd'>\u{1}"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"
        );
    }
}
