//! A strict parser of the Prometheus text exposition format (0.0.4), enough to prove the
//! metrics file is what node_exporter's textfile collector accepts: `promtool` may be absent.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Parses `{a="x",b="y"}` at the start of `text`; returns the labels and the rest.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = rest[..eq].trim();
        if !is_label_name(name) {
            return Err(format!("bad label name '{name}'"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in label value")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        rest = &rest[end + 1..];
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

/// Parses a whole exposition; errors name the line.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line must end with a newline".into());
    }
    let mut samples = Vec::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: '{line}'", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        let family = if let Some(comment) = line.strip_prefix('#') {
            let parts: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match parts.as_slice() {
                ["HELP", name, ..] => {
                    if !is_metric_name(name) || !helps.insert(name.to_string()) {
                        return Err(at("bad or repeated HELP".into()));
                    }
                    name.to_string()
                }
                ["TYPE", name, kind] => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if samples.iter().any(|s: &Sample| &s.name == name) {
                        return Err(at("TYPE after samples".into()));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("repeated TYPE".into()));
                    }
                    name.to_string()
                }
                _ => continue,
            }
        } else {
            let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
            let name = &line[..name_end];
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name '{name}'")));
            }
            let (labels, rest) = if line[name_end..].starts_with('{') {
                parse_labels(&line[name_end..]).map_err(at)?
            } else {
                (BTreeMap::new(), &line[name_end..])
            };
            let mut fields = rest.split_whitespace();
            let value = fields
                .next()
                .and_then(parse_value)
                .ok_or_else(|| at("bad value".into()))?;
            if let Some(ts) = fields.next() {
                ts.parse::<i64>().map_err(|_| at("bad timestamp".into()))?;
            }
            if fields.next().is_some() {
                return Err(at("trailing text".into()));
            }
            let key = format!("{name}{labels:?}");
            if !series.insert(key) {
                return Err(at("duplicate series".into()));
            }
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
            name.to_string()
        };
        // Families must be contiguous.
        if current.as_deref() != Some(family.as_str()) {
            if finished.contains(&family) {
                return Err(at(format!("family {family} is split")));
            }
            if let Some(previous) = current.take() {
                finished.insert(previous);
            }
            current = Some(family);
        }
    }
    Ok(samples)
}

/// The value of the one sample named `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(found.len() <= 1, "several samples match {name} {labels:?}");
    found.first().map(|s| s.value)
}

#[test]
fn the_parser_accepts_good_text_and_rejects_bad() {
    let good = "# HELP a_b A thing.\n# TYPE a_b gauge\na_b{x=\"1\",y=\"q\\\"\\\\\\n\"} 3\na_b 4.5 1700000000\n";
    let samples = parse(good).unwrap();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].labels["y"], "q\"\\\n");
    assert_eq!(value(&samples, "a_b", &[("x", "1")]), Some(3.0));
    for bad in [
        "a_b 1",                                 // no final newline
        "a-b 1\n",                               // bad name
        "a_b{x=1} 1\n",                          // unquoted label
        "a_b{x=\"1} 1\n",                        // unterminated
        "a_b one\n",                             // bad value
        "a_b 1\na_b 2\n",                        // duplicate series
        "a 1\nb 1\na{x=\"1\"} 1\n",              // split family
        "a 1\n# TYPE a gauge\n",                 // TYPE after samples
        "# TYPE a gauge\n# TYPE a gauge\na 1\n", // repeated TYPE
        "# TYPE a wibble\na 1\n",                // unknown type
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad:?}");
    }
}
