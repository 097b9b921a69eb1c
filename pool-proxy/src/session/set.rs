//! `SET` of a followed parameter in a simple query, recognised: it changes nothing the
//! proxy does not follow (the server reports the new value, [`super::FOLLOWED_PARAMETERS`]),
//! so it need not pin. `SET application_name` or `SET TIME ZONE` as a connection is taken
//! from an application's own pool would otherwise pin every client, as PgBouncer does not.
//! Only the exact statement is recognised; anything else that completes as `SET` pins.

use super::sql::{query_text, starts_with_keyword, tokens, Token};
use super::FOLLOWED_PARAMETERS;

/// Whether a simple query (`query`: the Query message's body, its text and a NUL) is
/// exactly `SET [SESSION] name {TO | =} value [, ...]` of a followed parameter, or
/// `SET [SESSION] TIME ZONE value`, with plain values: `DEFAULT` (and `LOCAL` for the time
/// zone) go back to the session's default, which through a pooler is the server's, not
/// the client's startup value, so they pin.
pub fn sets_a_followed_parameter(query: &[u8]) -> bool {
    if !starts_with_keyword(query, "set") {
        return false;
    }
    let Some(tokens) = query_text(query).and_then(|sql| tokens(sql, 24)) else {
        return false;
    };
    let rest = match tokens.as_slice() {
        [Token::Word(set), Token::Word(session), rest @ ..]
            if set == "set" && session == "session" =>
        {
            rest
        }
        [Token::Word(set), rest @ ..] if set == "set" => rest,
        _ => return false,
    };
    match rest {
        [Token::Word(time), Token::Word(zone), value @ ..] if time == "time" && zone == "zone" => {
            matches!(values(value), Some(1))
        }
        [Token::Word(name), Token::Word(to), value @ ..] if to == "to" => {
            followed(name) && values(value).is_some()
        }
        [Token::Word(name), Token::Symbol('='), value @ ..] => {
            followed(name) && values(value).is_some()
        }
        _ => false,
    }
}

fn followed(name: &str) -> bool {
    FOLLOWED_PARAMETERS
        .iter()
        .any(|followed| followed.eq_ignore_ascii_case(name))
}

/// How many values a comma-separated list of plain values has, if it is one.
fn values(mut tokens: &[Token]) -> Option<usize> {
    let mut count = 0;
    loop {
        tokens = match tokens {
            [Token::Str(_) | Token::Quoted(_) | Token::Number(_), rest @ ..] => rest,
            [Token::Symbol('-' | '+'), Token::Number(_), rest @ ..] => rest,
            [Token::Word(word), rest @ ..] if word != "default" && word != "local" => rest,
            _ => return None,
        };
        count += 1;
        match tokens {
            [] => return Some(count),
            [Token::Symbol(','), rest @ ..] => tokens = rest,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    fn sets(sql: &str) -> bool {
        super::sets_a_followed_parameter(format!("{sql}\0").as_bytes())
    }

    #[test]
    fn a_plain_set_of_a_followed_parameter_is_recognised() {
        for sql in [
            "SET TimeZone = 'Asia/Tokyo'",
            "set timezone to UTC;",
            "SET SESSION timezone TO 'UTC'",
            "SET TIME ZONE 'Europe/Paris'",
            "SET TIME ZONE -5",
            "SET application_name = 'worker-1'",
            "SET DateStyle TO ISO, DMY",
            "SET datestyle = 'German', 'DMY'",
            "SET intervalstyle = iso_8601",
            "SET client_encoding TO 'UTF8'",
            "SET standard_conforming_strings = on",
        ] {
            assert!(sets(sql), "{sql:?}");
        }
    }

    #[test]
    fn anything_else_that_completes_as_set_is_not() {
        for sql in [
            "SET statement_timeout = 1000",
            "SET search_path = app",
            "SET LOCAL TimeZone = 'UTC'",
            "SET TimeZone = DEFAULT",
            "SET TIME ZONE LOCAL",
            "SET TIME ZONE DEFAULT",
            "SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE",
            "SET TIME ZONE 'UTC', 'X'",
            "SET TimeZone = 'UTC'; SET work_mem = '1GB'",
            "SET TimeZone = 'UTC' -- and more",
            "SET TimeZone = E'UTC'",
            "SET TimeZone",
            "SET TimeZone =",
            "SET TimeZone = 'UTC',",
            "SET SESSION AUTHORIZATION alice",
            "SET ROLE alice",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET NAMES 'UTF8'",
            "RESET TimeZone",
            "SELECT set_config('TimeZone', 'UTC', false)",
        ] {
            assert!(!sets(sql), "{sql:?}");
        }
    }
}
