//! A list of strings as a PostgreSQL array literal (`{repo,"read:user"}`).
//!
//! `integrations.permissions` is TEXT[] on PostgreSQL and text on SQLite. The entity reads it
//! with `CAST(.. AS text)` and writes it with `CAST(.. AS text[])`, both of which speak this
//! literal form on PostgreSQL, and SQLite stores the same literal as plain text.

/// Encodes strings as an array literal, every element quoted and escaped.
pub(super) fn encode(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|item| format!("\"{}\"", item.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// Decodes an array literal; `None` when it is malformed.
pub(super) fn decode(literal: &str) -> Option<Vec<String>> {
    let inner = literal.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
            if item.trim().eq_ignore_ascii_case("NULL") {
                continue_after_separator(&mut chars)?;
                continue;
            }
            item = item.trim().to_string();
        }
        items.push(item);
        continue_after_separator(&mut chars)?;
    }
    Some(items)
}

fn continue_after_separator(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<()> {
    match chars.next() {
        None | Some(',') => Some(()),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_awkward_strings() {
        let items: Vec<String> = [
            "repo",
            "read:user",
            "a,b",
            "quote\"d",
            "back\\slash",
            "",
            "{x}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(decode(&encode(&items)).unwrap(), items);
    }

    #[test]
    fn decodes_postgres_output() {
        assert_eq!(decode("{repo,read:user}").unwrap(), ["repo", "read:user"]);
        assert_eq!(decode("{}").unwrap(), Vec::<String>::new());
        assert_eq!(decode(r#"{"a b","c\"d"}"#).unwrap(), ["a b", "c\"d"]);
        assert_eq!(decode("{a,NULL}").unwrap(), ["a"]);
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(decode("repo"), None);
        assert_eq!(decode(r#"{"unterminated}"#), None);
    }
}
