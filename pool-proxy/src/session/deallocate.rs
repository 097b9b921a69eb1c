//! `DEALLOCATE name` in a simple query, recognised. Drivers that prepare with the
//! protocol's Parse but drop statements in SQL (PHP's PDO, Rails, psycopg with a libpq
//! before 17) name a statement that no server knows under that name: the proxy prepared
//! it under its own (PgBouncer fails these, pgbouncer/pgbouncer#991). Only the exact
//! statement is recognised; anything else (comments, a second statement) is left to the
//! server, as before.

/// PostgreSQL cuts identifiers at `NAMEDATALEN - 1` bytes; a longer name is left to the
/// server rather than matched as PostgreSQL would not.
const MAX_IDENTIFIER_LEN: usize = 63;

const KEYWORD: &str = "deallocate";

/// The statement name a simple query deallocates (`query`: the Query message's body,
/// its text and a NUL), when the text is exactly `DEALLOCATE [PREPARE] name [;]` in
/// PostgreSQL's grammar: keywords in any case, an unquoted name folded to lower case, a
/// quoted one as written. `ALL` is not a name.
pub fn deallocated_name(query: &[u8]) -> Option<String> {
    // Every query of a client with statements comes here: its first bytes decide, before
    // any parsing.
    let text = query.strip_suffix(&[0])?;
    let start = text.iter().position(|b| !is_space(char::from(*b)))?;
    let keyword = text.get(start..start + KEYWORD.len())?;
    if !keyword.eq_ignore_ascii_case(KEYWORD.as_bytes()) {
        return None;
    }
    let words = words(std::str::from_utf8(text).ok()?)?;
    let name = match words.as_slice() {
        [Word::Bare(deallocate), name] if deallocate == KEYWORD => name,
        [Word::Bare(deallocate), Word::Bare(prepare), name]
            if deallocate == KEYWORD && prepare == "prepare" =>
        {
            name
        }
        _ => return None,
    };
    match name {
        Word::Bare(all) if all == "all" => None,
        Word::Bare(name) | Word::Quoted(name) => {
            (name.len() <= MAX_IDENTIFIER_LEN).then(|| name.clone())
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Word {
    /// An unquoted identifier or keyword, folded to lower case.
    Bare(String),
    /// A double-quoted identifier, with `""` read as `"`.
    Quoted(String),
}

/// The words of a statement of identifiers only, up to an optional `;` that only
/// whitespace may follow; `None` for anything else (at most 4 words are read).
fn words(sql: &str) -> Option<Vec<Word>> {
    let mut words = Vec::new();
    let mut chars = sql.chars().peekable();
    loop {
        while chars.next_if(|c| is_space(*c)).is_some() {}
        let Some(c) = chars.next() else {
            return Some(words);
        };
        if words.len() == 4 {
            return None;
        }
        match c {
            ';' => return chars.all(is_space).then_some(words),
            '"' => {
                let mut name = String::new();
                loop {
                    match chars.next()? {
                        '"' if chars.next_if_eq(&'"').is_some() => name.push('"'),
                        '"' => break,
                        c => name.push(c),
                    }
                }
                if name.is_empty() {
                    return None; // a zero-length delimited identifier is an error
                }
                words.push(Word::Quoted(name));
            }
            c if c == '_' || c.is_ascii_alphabetic() || !c.is_ascii() => {
                let mut word = String::from(c.to_ascii_lowercase());
                while let Some(c) = chars.next_if(|c| is_identifier_char(*c)) {
                    word.push(c.to_ascii_lowercase());
                }
                words.push(Word::Bare(word));
            }
            _ => return None,
        }
    }
}

/// PostgreSQL's whitespace in SQL.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c' | '\x0b')
}

fn is_identifier_char(c: char) -> bool {
    c == '_' || c == '$' || c.is_ascii_alphanumeric() || !c.is_ascii()
}

#[cfg(test)]
mod tests {
    /// A Query message's body for this text.
    fn deallocated_name(sql: &str) -> Option<String> {
        super::deallocated_name(format!("{sql}\0").as_bytes())
    }

    #[test]
    fn the_forms_of_postgresql_grammar_name_the_statement() {
        for (sql, name) in [
            ("DEALLOCATE s1", "s1"),
            ("deallocate pdo_stmt_00000001", "pdo_stmt_00000001"),
            ("DEALLOCATE PREPARE a1;", "a1"),
            ("  Deallocate\n\tPrepare  S1 ;  \n", "s1"),
            ("DEALLOCATE \"S1\"", "S1"),
            ("DEALLOCATE \"a \"\"b\"\"\"", "a \"b\""),
            ("DEALLOCATE \"all\"", "all"),
            ("DEALLOCATE _pg3_0", "_pg3_0"),
            ("DEALLOCATE x$1", "x$1"),
            // PREPARE is an unreserved keyword: alone, it is the name.
            ("DEALLOCATE prepare", "prepare"),
        ] {
            assert_eq!(deallocated_name(sql).as_deref(), Some(name), "{sql:?}");
        }
    }

    #[test]
    fn anything_else_is_left_to_the_server() {
        for sql in [
            "DEALLOCATE ALL",
            "deallocate prepare all;",
            "DEALLOCATE",
            "DEALLOCATE s1 s2",
            "DEALLOCATE s1; SELECT 1",
            "DEALLOCATE s1 -- comment",
            "/* c */ DEALLOCATE s1",
            "DEALLOCATE \"\"",
            "DEALLOCATE \"unterminated",
            "DEALLOCATE 1abc",
            "DEALLOCATE PREPARE PREPARE s1",
            "SELECT 1",
            "DISCARD ALL",
            "",
        ] {
            assert_eq!(deallocated_name(sql), None, "{sql:?}");
        }
        assert_eq!(super::deallocated_name(b"DEALLOCATE s1"), None, "no NUL");
        assert_eq!(
            super::deallocated_name(b"DEALLOCATE \xff\0"),
            None,
            "not UTF-8"
        );
        let long = format!("DEALLOCATE {}", "a".repeat(64));
        assert_eq!(deallocated_name(&long), None);
        let longest = format!("DEALLOCATE {}", "a".repeat(63));
        assert_eq!(deallocated_name(&longest), Some("a".repeat(63)));
    }
}
