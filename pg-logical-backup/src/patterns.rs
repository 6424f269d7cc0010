//! Table name patterns as pg_dump and psql take them: `[schema.]table`, `*` and `?` as
//! wildcards, unquoted letters folded to lower case, double quotes for exact names.
//!
//! A pattern without a schema matches a table of that name in any schema.

use std::fmt;

/// One parsed `--table` / `--exclude-table` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    text: String,
    schema: Option<Vec<Token>>,
    table: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    AnyOne,
    AnyMany,
}

impl TablePattern {
    /// Parses a pattern; fails on empty parts, unbalanced quotes or more than one dot.
    pub fn parse(text: &str) -> anyhow::Result<TablePattern> {
        let mut parts: Vec<Vec<Token>> = vec![Vec::new()];
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted && chars.peek() == Some(&'"') => {
                    chars.next();
                    parts.last_mut().expect("one part").push(Token::Char('"'));
                }
                '"' => quoted = !quoted,
                '.' if !quoted => parts.push(Vec::new()),
                '*' if !quoted => parts.last_mut().expect("one part").push(Token::AnyMany),
                '?' if !quoted => parts.last_mut().expect("one part").push(Token::AnyOne),
                c if !quoted => parts
                    .last_mut()
                    .expect("one part")
                    .extend(c.to_lowercase().map(Token::Char)),
                c => parts.last_mut().expect("one part").push(Token::Char(c)),
            }
        }
        let bad = |why: &str| {
            anyhow::anyhow!(
                "invalid table pattern '{text}': {why} (expected [schema.]table, * and ? as wildcards, \"Quoted\" for exact names)"
            )
        };
        if quoted {
            return Err(bad("unbalanced double quote"));
        }
        if parts.iter().any(Vec::is_empty) {
            return Err(bad("empty name"));
        }
        let (schema, table) = match parts.len() {
            1 => (None, parts.pop().expect("one part")),
            2 => {
                let table = parts.pop().expect("two parts");
                (parts.pop(), table)
            }
            _ => return Err(bad("too many dots")),
        };
        Ok(TablePattern {
            text: text.to_string(),
            schema,
            table,
        })
    }

    /// True when the pattern selects this table.
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        self.schema
            .as_ref()
            .is_none_or(|pattern| glob(pattern, &schema.chars().collect::<Vec<_>>()))
            && glob(&self.table, &table.chars().collect::<Vec<_>>())
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses every pattern of a flag.
pub fn parse_all(texts: &[String]) -> anyhow::Result<Vec<TablePattern>> {
    texts.iter().map(|t| TablePattern::parse(t)).collect()
}

/// Classic wildcard matching with backtracking on the last `*`.
fn glob(pattern: &[Token], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::AnyMany) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Token::AnyOne) => {
                p += 1;
                t += 1;
            }
            Some(Token::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|tok| *tok == Token::AnyMany)
}

/// Quotes an identifier for SQL (and for an exact pg_dump `-t` pattern).
pub use common::postgres::quote_ident;

/// `"schema"."table"`, exact in SQL and as a pg_dump / pg_restore pattern.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, schema: &str, table: &str) -> bool {
        TablePattern::parse(pattern).unwrap().matches(schema, table)
    }

    #[test]
    fn unqualified_patterns_match_any_schema() {
        assert!(m("orders", "public", "orders"));
        assert!(m("orders", "sales", "orders"));
        assert!(!m("orders", "public", "orders2"));
    }

    #[test]
    fn wildcards_and_case_folding() {
        assert!(m("public.ord*", "public", "orders"));
        assert!(m("*.ord?rs", "x", "orders"));
        assert!(m("ORDERS", "public", "orders"));
        assert!(!m("ORDERS", "public", "ORDERS"));
        assert!(m("\"ORDERS\"", "public", "ORDERS"));
        assert!(m("*", "a", "b"));
        assert!(!m("a*b", "s", "acbd"));
        assert!(m("a*b*", "s", "acbd"));
    }

    #[test]
    fn quotes_keep_dots_and_wildcards_literal() {
        assert!(m("\"my.schema\".\"t*\"", "my.schema", "t*"));
        assert!(!m("\"t*\"", "s", "tx"));
        assert!(m("\"a\"\"b\"", "s", "a\"b"));
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert!(TablePattern::parse("a.b.c").is_err());
        assert!(TablePattern::parse("\"abc").is_err());
        assert!(TablePattern::parse("a.").is_err());
        assert!(TablePattern::parse("").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(qualified("public", "a\"b"), "\"public\".\"a\"\"b\"");
    }
}
