//! The few SQL texts the session recognises (`DEALLOCATE name`, `SET TimeZone TO ...`):
//! a lexer for one short statement of words, quoted names, plain string literals, numbers
//! and punctuation. Anything it does not know for sure (a comment, a second statement, an
//! escape string, a dollar quote, a backslash) makes it give up, and the text is then
//! treated as any other query.

/// One token, as PostgreSQL's lexer would read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// An unquoted identifier or keyword, folded to lower case (ASCII only, as PostgreSQL).
    Word(String),
    /// A double-quoted identifier, with `""` read as `"`.
    Quoted(String),
    /// A plain string literal `'...'`, with `''` read as `'`.
    Str(String),
    /// Digits, with a `.` and more digits.
    Number(String),
    /// `=`, `,`, `-`, `+` or `.`.
    Symbol(char),
}

/// The tokens of `sql` when it is one statement of at most `max` tokens, ended by an
/// optional `;` and whitespace.
pub fn tokens(sql: &str, max: usize) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = sql.chars().peekable();
    loop {
        while chars.next_if(|c| is_space(*c)).is_some() {}
        let Some(c) = chars.next() else {
            return Some(tokens);
        };
        if c == ';' {
            return chars.all(is_space).then_some(tokens);
        }
        if tokens.len() == max {
            return None;
        }
        let token = match c {
            '"' | '\'' => {
                let mut text = String::new();
                loop {
                    match chars.next()? {
                        '\\' => return None, // its meaning depends on a setting
                        q if q == c && chars.next_if_eq(&c).is_some() => text.push(c),
                        q if q == c => break,
                        other => text.push(other),
                    }
                }
                if c == '\'' {
                    Token::Str(text)
                } else if text.is_empty() {
                    return None; // a zero-length delimited identifier is an error
                } else {
                    Token::Quoted(text)
                }
            }
            c if c.is_ascii_digit() => {
                let mut number = String::from(c);
                while let Some(c) = chars.next_if(|c| c.is_ascii_digit() || *c == '.') {
                    number.push(c);
                }
                if chars.peek().is_some_and(|c| is_identifier_char(*c)) {
                    return None; // `1abc`, `1e5`: not worth knowing
                }
                Token::Number(number)
            }
            c if c == '_' || c.is_ascii_alphabetic() || !c.is_ascii() => {
                let mut word = String::from(c.to_ascii_lowercase());
                while let Some(c) = chars.next_if(|c| is_identifier_char(*c)) {
                    word.push(c.to_ascii_lowercase());
                }
                if chars.peek() == Some(&'\'') {
                    return None; // E'...', U&'...', B'...': not plain literals
                }
                Token::Word(word)
            }
            '-' if chars.peek() == Some(&'-') => return None, // a comment
            '=' | ',' | '-' | '+' | '.' => Token::Symbol(c),
            _ => return None,
        };
        tokens.push(token);
    }
}

/// Whether a Query message's body (its text and a NUL) starts with this keyword, in any
/// case, after whitespace: a look at the first bytes before any lexing.
pub fn starts_with_keyword(query: &[u8], keyword: &str) -> bool {
    let start = query
        .iter()
        .position(|b| !is_space(char::from(*b)))
        .unwrap_or(query.len());
    query
        .get(start..start + keyword.len())
        .is_some_and(|word| word.eq_ignore_ascii_case(keyword.as_bytes()))
}

/// A Query message's text (without its NUL), when it is UTF-8.
pub fn query_text(query: &[u8]) -> Option<&str> {
    std::str::from_utf8(query.strip_suffix(&[0])?).ok()
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
    use super::Token::*;
    use super::*;

    fn word(w: &str) -> Token {
        Word(w.to_owned())
    }

    #[test]
    fn one_statement_is_read_as_postgresql_reads_it() {
        assert_eq!(
            tokens("  Set SESSION TimeZone = 'Europe/Paris' ;\n", 8),
            Some(vec![
                word("set"),
                word("session"),
                word("timezone"),
                Symbol('='),
                Str("Europe/Paris".into())
            ])
        );
        assert_eq!(
            tokens("set datestyle to ISO, \"DMY\"", 8),
            Some(vec![
                word("set"),
                word("datestyle"),
                word("to"),
                word("iso"),
                Symbol(','),
                Quoted("DMY".into())
            ])
        );
        assert_eq!(
            tokens("SET x = -1.5, 'it''s'", 8),
            Some(vec![
                word("set"),
                word("x"),
                Symbol('='),
                Symbol('-'),
                Number("1.5".into()),
                Symbol(','),
                Str("it's".into())
            ])
        );
    }

    #[test]
    fn what_it_cannot_be_sure_of_is_not_read() {
        for sql in [
            "SET a = 1; SET b = 2",
            "SET a = 1 -- comment",
            "SET a = 1 /* comment */",
            "SET a = E'x'",
            "SET a = 'back\\slash'",
            "SET a = $$x$$",
            "SET a = 'unterminated",
            "SET a = \"\"",
            "SET a = 1e5",
            "SET a = (1)",
        ] {
            assert_eq!(tokens(sql, 16), None, "{sql:?}");
        }
        assert_eq!(tokens("a b c", 2), None, "over the bound");
        assert_eq!(tokens("a b", 2).map(|t| t.len()), Some(2));
        assert_eq!(tokens("a b ; ", 2).map(|t| t.len()), Some(2));
    }

    #[test]
    fn a_keyword_is_seen_in_the_first_bytes() {
        assert!(starts_with_keyword(b"  \tset x = 1\0", "set"));
        assert!(starts_with_keyword(b"DEALLOCATE a\0", "deallocate"));
        assert!(!starts_with_keyword(b"SELECT 1\0", "set"));
        assert!(!starts_with_keyword(b"se\0", "set"));
        assert!(!starts_with_keyword(b"", "set"));
    }
}
