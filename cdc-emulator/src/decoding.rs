//! Parser for the text lines of PostgreSQL's `test_decoding` output plugin (PostgreSQL 15,
//! `contrib/test_decoding/test_decoding.c`).
//!
//! The forms, exactly as the plugin writes them:
//!
//! ```text
//! BEGIN 725
//! table public."My Tab": INSERT: id[integer]:1 "we ird"[text]:'a b''c' b[boolean]:true n[numeric]:null
//! table public.t: UPDATE: id[integer]:1 v[text]:'new'
//! table public.t: UPDATE: old-key: id[integer]:1 new-tuple: id[integer]:2 v[text]:'new'
//! table public.t: DELETE: id[integer]:2
//! table public.t: TRUNCATE: (no-flags)
//! COMMIT 725 (at 2026-12-03 09:41:01.524017+00)
//! message: transactional: 1 prefix: p, sz: 3 content:abc
//! ```
//!
//! Identifiers are written by `quote_identifier` (bare when lower-case ASCII, else in double
//! quotes with `""` for a quote); values by `print_literal`: integer, float, numeric and oid
//! types unquoted, booleans as `true`/`false`, bit strings as `B'0101'`, everything else in
//! single quotes with `''` for a quote (backslashes and newlines are not escaped), `null`, and
//! `unchanged-toast-datum` for a TOASTed value the update did not touch. Old tuples (the
//! `old-key:` of an UPDATE, the row of a DELETE) omit null columns.

use std::fmt;

/// One line of `test_decoding` output.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// `BEGIN [xid]`.
    Begin { xid: Option<u64> },
    /// `COMMIT [xid] [(at <timestamp>)]`.
    Commit { xid: Option<u64> },
    /// `table <schema>.<table>: <action>: ...`.
    Change(Change),
    /// `message: ...` (`pg_logical_emit_message`), which carries no row.
    Message,
}

/// A row change of one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub schema: String,
    pub table: String,
    pub action: Action,
}

/// What happened to the row, with the tuples the plugin printed.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Insert {
        new: Tuple,
    },
    /// `old` is present when the key changed or the table has `REPLICA IDENTITY FULL`.
    Update {
        old: Option<Tuple>,
        new: Tuple,
    },
    /// `old` holds the replica identity (the key columns, or every non-null column with
    /// `REPLICA IDENTITY FULL`); `None` for a table without one (`(no-tuple-data)`).
    Delete {
        old: Option<Tuple>,
    },
    Truncate,
}

/// The columns of a row, in table order.
pub type Tuple = Vec<Column>;

/// One `name[type]:value` item.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// `format_type_be` of the column's type, e.g. `integer`, `character varying`, `integer[]`.
    pub type_name: String,
    pub value: Datum,
}

/// A printed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    /// An unquoted integer, float, numeric or oid, as the type's output function wrote it
    /// (`1.50`, `-3`, `NaN`, `Infinity`).
    Number(String),
    Bool(bool),
    /// A bit string's digits (`B'0101'` gives `0101`).
    Bits(String),
    /// Any other type's text output, unquoted.
    Text(String),
    /// `unchanged-toast-datum`: an out-of-line value the change did not touch.
    UnchangedToast,
}

/// A line that is not `test_decoding` output: what was expected, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset in the line.
    pub at: usize,
    pub expected: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {} at byte {}", self.expected, self.at)
    }
}

impl std::error::Error for DecodeError {}

/// Parses one line of `test_decoding` output.
pub fn parse_line(line: &str) -> Result<Line, DecodeError> {
    let mut cursor = Cursor { text: line, pos: 0 };
    if cursor.eat("BEGIN") {
        let xid = cursor.trailing_xid()?;
        cursor.end()?;
        return Ok(Line::Begin { xid });
    }
    if cursor.eat("COMMIT") {
        let xid = cursor.trailing_xid()?;
        // " (at <timestamp>)" with include-timestamp: the timestamp is read in SQL.
        if cursor.eat(" (at ") {
            if !line.ends_with(')') {
                return Err(cursor.error("')' closing the commit timestamp"));
            }
            cursor.pos = line.len();
        }
        cursor.end()?;
        return Ok(Line::Commit { xid });
    }
    if cursor.eat("message: ") {
        return Ok(Line::Message);
    }
    cursor.expect("table ", "'BEGIN', 'COMMIT', 'message:' or 'table '")?;
    let schema = cursor.identifier()?;
    cursor.expect(".", "'.' between schema and table")?;
    let table = cursor.identifier()?;
    cursor.expect(": ", "': ' after the table name")?;
    let action = cursor.action()?;
    cursor.end()?;
    Ok(Line::Change(Change {
        schema,
        table,
        action,
    }))
}

const NO_TUPLE: &str = " (no-tuple-data)";

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn error(&self, expected: &'static str) -> DecodeError {
        DecodeError {
            at: self.pos,
            expected,
        }
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.rest().starts_with(literal) {
            self.pos += literal.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, literal: &str, expected: &'static str) -> Result<(), DecodeError> {
        if self.eat(literal) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.rest().is_empty() {
            Ok(())
        } else {
            Err(self.error("end of line"))
        }
    }

    /// ` <digits>` after BEGIN/COMMIT, present with include-xids.
    fn trailing_xid(&mut self) -> Result<Option<u64>, DecodeError> {
        let rest = self.rest();
        let Some(digits) = rest.strip_prefix(' ') else {
            return Ok(None);
        };
        let len = digits.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return Ok(None);
        }
        let xid = digits[..len]
            .parse()
            .map_err(|_| self.error("a transaction id"))?;
        self.pos += 1 + len;
        Ok(Some(xid))
    }

    /// A bare (`[a-z_][a-z0-9_]*`) or double-quoted identifier.
    fn identifier(&mut self) -> Result<String, DecodeError> {
        if self.eat("\"") {
            return self.quoted('"').ok_or_else(|| self.error("closing '\"'"));
        }
        let len = self
            .rest()
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        if len == 0 {
            return Err(self.error("an identifier"));
        }
        let ident = self.rest()[..len].to_string();
        self.pos += len;
        Ok(ident)
    }

    /// The text up to the unpaired `quote` (the opening one already eaten), with doubled
    /// quotes made single; `None` when the line ends first.
    fn quoted(&mut self, quote: char) -> Option<String> {
        let mut out = String::new();
        let mut chars = self.rest().char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                if chars.peek().map(|&(_, next)| next) == Some(quote) {
                    chars.next();
                    out.push(quote);
                    continue;
                }
                self.pos += i + 1;
                return Some(out);
            }
            out.push(c);
        }
        None
    }

    fn action(&mut self) -> Result<Action, DecodeError> {
        if self.eat("INSERT:") {
            let new = self
                .tuple()?
                .ok_or_else(|| self.error("the inserted row"))?;
            Ok(Action::Insert { new })
        } else if self.eat("UPDATE:") {
            let old = if self.eat(" old-key:") {
                let old = self.tuple()?;
                self.expect(" new-tuple:", "' new-tuple:' after the old key")?;
                old
            } else {
                None
            };
            let new = self.tuple()?.ok_or_else(|| self.error("the new row"))?;
            Ok(Action::Update { old, new })
        } else if self.eat("DELETE:") {
            Ok(Action::Delete { old: self.tuple()? })
        } else if self.eat("TRUNCATE:") {
            // Flags (" restart_seqs", " cascade") or " (no-flags)": nothing we use.
            self.pos = self.text.len();
            Ok(Action::Truncate)
        } else {
            Err(self.error("INSERT:, UPDATE:, DELETE: or TRUNCATE:"))
        }
    }

    /// ` name[type]:value` items up to the end of the line or ` new-tuple:`; `None` for
    /// ` (no-tuple-data)`.
    fn tuple(&mut self) -> Result<Option<Tuple>, DecodeError> {
        if self.eat(NO_TUPLE) {
            return Ok(None);
        }
        let mut columns = Vec::new();
        // An unquoted "new-tuple:" cannot be a column: quote_identifier quotes the '-'.
        while !self.rest().is_empty() && !self.rest().starts_with(" new-tuple:") {
            self.expect(" ", "' ' before a column")?;
            let name = self.identifier()?;
            self.expect("[", "'[' after the column name")?;
            let type_name = self.type_name()?;
            let value = self.datum()?;
            columns.push(Column {
                name,
                type_name,
                value,
            });
        }
        Ok(Some(columns))
    }

    /// The type up to `]:`, which may itself hold brackets (`integer[]`) and quoted names.
    fn type_name(&mut self) -> Result<String, DecodeError> {
        let rest = self.rest();
        let mut in_quotes = false;
        for (i, b) in rest.bytes().enumerate() {
            match b {
                b'"' => in_quotes = !in_quotes,
                b']' if !in_quotes && rest[i + 1..].starts_with(':') => {
                    let type_name = rest[..i].to_string();
                    self.pos += i + 2;
                    return Ok(type_name);
                }
                _ => {}
            }
        }
        Err(self.error("']:' closing the column type"))
    }

    fn datum(&mut self) -> Result<Datum, DecodeError> {
        if self.eat("'") {
            let text = self
                .quoted('\'')
                .ok_or_else(|| self.error("closing \"'\""))?;
            return self.item_end(Datum::Text(text));
        }
        if self.eat("B'") {
            let bits = self
                .quoted('\'')
                .ok_or_else(|| self.error("closing \"'\""))?;
            return self.item_end(Datum::Bits(bits));
        }
        let len = self.rest().find(' ').unwrap_or(self.rest().len());
        let word = &self.rest()[..len];
        let datum = match word {
            "" => return Err(self.error("a value")),
            "null" => Datum::Null,
            "true" => Datum::Bool(true),
            "false" => Datum::Bool(false),
            "unchanged-toast-datum" => Datum::UnchangedToast,
            number => Datum::Number(number.to_string()),
        };
        self.pos += len;
        Ok(datum)
    }

    /// A value ends the line or is followed by a space.
    fn item_end(&self, datum: Datum) -> Result<Datum, DecodeError> {
        if self.rest().is_empty() || self.rest().starts_with(' ') {
            Ok(datum)
        } else {
            Err(self.error("' ' or end of line after a quoted value"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, type_name: &str, value: Datum) -> Column {
        Column {
            name: name.into(),
            type_name: type_name.into(),
            value,
        }
    }

    fn text(s: &str) -> Datum {
        Datum::Text(s.into())
    }

    fn num(s: &str) -> Datum {
        Datum::Number(s.into())
    }

    fn change(line: &str) -> Change {
        match parse_line(line) {
            Ok(Line::Change(change)) => change,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn begin_and_commit_with_and_without_xid_and_timestamp() {
        assert_eq!(parse_line("BEGIN 725"), Ok(Line::Begin { xid: Some(725) }));
        assert_eq!(parse_line("BEGIN"), Ok(Line::Begin { xid: None }));
        assert_eq!(
            parse_line("COMMIT 725 (at 2026-12-03 09:41:01.524017+00)"),
            Ok(Line::Commit { xid: Some(725) })
        );
        assert_eq!(
            parse_line("COMMIT 4294967295"),
            Ok(Line::Commit {
                xid: Some(u64::from(u32::MAX))
            })
        );
        assert_eq!(parse_line("COMMIT"), Ok(Line::Commit { xid: None }));
        assert!(parse_line("BEGIN x").is_err());
        assert!(parse_line("COMMIT 7 (at 2026").is_err());
    }

    #[test]
    fn insert_with_quotes_spaces_brackets_and_every_literal_kind() {
        // Copied from PostgreSQL 15 output (see the module doc).
        let line = "table public.\"My Tab\": INSERT: id[integer]:1 \"we ird\"[text]:'a b''c: x[y]:z' b[boolean]:true n[numeric]:1.50 f[double precision]:NaN ts[timestamp with time zone]:'2026-12-03 09:41:01.523102+00' arr[integer[]]:'{1,2}' bits[bit]:B'101' j[jsonb]:'{\"a\": \"b c\"}' gone[text]:null";
        let change = change(line);
        assert_eq!(change.schema, "public");
        assert_eq!(change.table, "My Tab");
        assert_eq!(
            change.action,
            Action::Insert {
                new: vec![
                    col("id", "integer", num("1")),
                    col("we ird", "text", text("a b'c: x[y]:z")),
                    col("b", "boolean", Datum::Bool(true)),
                    col("n", "numeric", num("1.50")),
                    col("f", "double precision", num("NaN")),
                    col(
                        "ts",
                        "timestamp with time zone",
                        text("2026-12-03 09:41:01.523102+00")
                    ),
                    col("arr", "integer[]", text("{1,2}")),
                    col("bits", "bit", Datum::Bits("101".into())),
                    col("j", "jsonb", text("{\"a\": \"b c\"}")),
                    col("gone", "text", Datum::Null),
                ]
            }
        );
    }

    #[test]
    fn text_that_looks_like_syntax_stays_text() {
        let line = "table s.t: INSERT: a[text]:'null' b[text]:' new-tuple: x[int]:1' c[text]:'''' d[text]:'line\nbreak' e[character varying]:'' f[bigint]:-42";
        assert_eq!(
            change(line).action,
            Action::Insert {
                new: vec![
                    col("a", "text", text("null")),
                    col("b", "text", text(" new-tuple: x[int]:1")),
                    col("c", "text", text("'")),
                    col("d", "text", text("line\nbreak")),
                    col("e", "character varying", text("")),
                    col("f", "bigint", num("-42")),
                ]
            }
        );
    }

    #[test]
    fn quoted_schema_table_column_and_type_names() {
        let line = "table \"Sales \"\"EU\"\"\".\"order.items\": INSERT: \"Col ]:x\"[\"my ]:type\"]:'v' \"new-tuple\"[myschema.\"Kind\"]:'k'";
        let change = change(line);
        assert_eq!(change.schema, "Sales \"EU\"");
        assert_eq!(change.table, "order.items");
        assert_eq!(
            change.action,
            Action::Insert {
                new: vec![
                    col("Col ]:x", "\"my ]:type\"", text("v")),
                    col("new-tuple", "myschema.\"Kind\"", text("k")),
                ]
            }
        );
    }

    #[test]
    fn update_without_and_with_old_key() {
        assert_eq!(
            change("table public.t: UPDATE: id[integer]:1 v[text]:'x y'").action,
            Action::Update {
                old: None,
                new: vec![
                    col("id", "integer", num("1")),
                    col("v", "text", text("x y"))
                ],
            }
        );
        let line = "table public.t: UPDATE: old-key: id[integer]:1 k[text]:'a b''c' new-tuple: id[integer]:3 k[text]:'a b''c' big[text]:unchanged-toast-datum";
        assert_eq!(
            change(line).action,
            Action::Update {
                old: Some(vec![
                    col("id", "integer", num("1")),
                    col("k", "text", text("a b'c"))
                ]),
                new: vec![
                    col("id", "integer", num("3")),
                    col("k", "text", text("a b'c")),
                    col("big", "text", Datum::UnchangedToast),
                ],
            }
        );
    }

    #[test]
    fn delete_truncate_message_and_no_tuple_data() {
        assert_eq!(
            change("table public.t: DELETE: id[integer]:2 \"we ird\"[text]:'line\nbreak'").action,
            Action::Delete {
                old: Some(vec![
                    col("id", "integer", num("2")),
                    col("we ird", "text", text("line\nbreak"))
                ])
            }
        );
        assert_eq!(
            change("table public.nokey: DELETE: (no-tuple-data)").action,
            Action::Delete { old: None }
        );
        assert_eq!(
            change("table public.t: TRUNCATE: (no-flags)").action,
            Action::Truncate
        );
        assert_eq!(
            change("table public.t: TRUNCATE: restart_seqs cascade").action,
            Action::Truncate
        );
        assert_eq!(
            parse_line("message: transactional: 1 prefix: p, sz: 3 content:abc"),
            Ok(Line::Message)
        );
    }

    #[test]
    fn malformed_lines_name_what_was_expected() {
        let err = |line: &str| parse_line(line).unwrap_err();
        assert_eq!(
            err("hello").expected,
            "'BEGIN', 'COMMIT', 'message:' or 'table '"
        );
        assert_eq!(
            err("table public.t: MERGE: x").expected,
            "INSERT:, UPDATE:, DELETE: or TRUNCATE:"
        );
        assert_eq!(
            err("table public.t: INSERT: a[text]:'open").expected,
            "closing \"'\""
        );
        assert_eq!(
            err("table public.t: INSERT: a[text:1").expected,
            "']:' closing the column type"
        );
        assert_eq!(
            err("table public.t: INSERT: a[text]:'x'y").expected,
            "' ' or end of line after a quoted value"
        );
        assert_eq!(err("table public.t: INSERT: a[int]:").expected, "a value");
        assert_eq!(err("table \"public.t: INSERT:").expected, "closing '\"'");
        assert_eq!(
            err("table public.t: UPDATE: old-key: a[int]:1").expected,
            "' new-tuple:' after the old key"
        );
        let e = err("table Public.t: INSERT:");
        assert_eq!((e.at, e.expected), (6, "an identifier"));
        assert_eq!(e.to_string(), "expected an identifier at byte 6");
    }
}
