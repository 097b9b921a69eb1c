//! `DEALLOCATE name` in a simple query, recognised. Drivers that prepare with the
//! protocol's Parse but drop statements in SQL (PHP's PDO, Rails, psycopg with a libpq
//! before 17) name a statement that no server knows under that name: the proxy prepared
//! it under its own (PgBouncer fails these, pgbouncer/pgbouncer#991). Only the exact
//! statement is recognised; anything else (comments, a second statement) is left to the
//! server, as before.

use super::sql::{query_text, starts_with_keyword, tokens, Token};

/// PostgreSQL cuts identifiers at `NAMEDATALEN - 1` bytes; a longer name is left to the
/// server rather than matched as PostgreSQL would not.
const MAX_IDENTIFIER_LEN: usize = 63;

/// The statement name a simple query deallocates (`query`: the Query message's body,
/// its text and a NUL), when the text is exactly `DEALLOCATE [PREPARE] name [;]` in
/// PostgreSQL's grammar: keywords in any case, an unquoted name folded to lower case, a
/// quoted one as written. `ALL` is not a name.
pub fn deallocated_name(query: &[u8]) -> Option<String> {
    // Every query of a client with statements comes here: its first bytes decide, before
    // any lexing.
    if !starts_with_keyword(query, "deallocate") {
        return None;
    }
    let words = tokens(query_text(query)?, 3)?;
    let name = match words.as_slice() {
        [Token::Word(deallocate), name] if deallocate == "deallocate" => name,
        [Token::Word(deallocate), Token::Word(prepare), name]
            if deallocate == "deallocate" && prepare == "prepare" =>
        {
            name
        }
        _ => return None,
    };
    match name {
        Token::Word(all) if all == "all" => None,
        Token::Word(name) | Token::Quoted(name) => {
            (name.len() <= MAX_IDENTIFIER_LEN).then(|| name.clone())
        }
        _ => None,
    }
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
            "DEALLOCATE 'a'",
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
