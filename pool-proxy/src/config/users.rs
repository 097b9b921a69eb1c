//! The users file (`auth_file`), in PgBouncer's userlist.txt format:
//!
//! ```text
//! ; comments start with ; or #
//! "alice" "SCRAM-SHA-256$4096:...$...:..."
//! "bob"   "md5..."
//! "carol" "${CAROL_PASSWORD}"
//! "dave"  "say ""hi"""            (a doubled quote is a quote)
//! ```
//!
//! Two quoted fields per line, the user and the secret; the rest of the line is ignored,
//! as PgBouncer ignores it. In the secret, `${NAME}` is replaced by the environment
//! variable `NAME` (so a password need not be written in the file), `$${` writes a
//! literal `${`, and any other `$` is itself (a SCRAM verifier is full of them). The
//! result is read by [`Secret::parse`]. No error shows a secret; they name the line, the
//! user and, for a missing variable, the variable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{ConfigError, Origin};
use crate::auth::Secret;

/// Reads the users file at `path`.
pub(crate) fn load(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, Secret>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: path.to_owned(),
        line: None,
        problem: format!("cannot read the users file (auth_file): {e}"),
    })?;
    parse(&text, path, env)
}

/// `text`, the contents of the users file at `path`.
pub(crate) fn parse(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, Secret>, ConfigError> {
    let mut users = BTreeMap::new();
    let mut lines_of = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let malformed = |problem: &str| ConfigError::Unreadable {
            path: PathBuf::from(path),
            line: Some(number),
            problem: problem.to_owned(),
        };
        let line = line.trim_start();
        if line.is_empty() || line.starts_with([';', '#']) {
            continue;
        }
        let (user, rest) = quoted(line)
            .ok_or_else(|| malformed("expected \"user\" \"secret\", the user in double quotes"))?;
        let (secret, _ignored) = quoted(rest.trim_start()).ok_or_else(|| {
            malformed("expected \"user\" \"secret\", the secret in double quotes after the user")
        })?;
        if user.is_empty() {
            return Err(malformed("the user name is empty"));
        }
        let at = Origin::File {
            path: PathBuf::from(path),
            line: number,
        };
        let key = format!("user {user:?}");
        if let Some(first) = lines_of.insert(user.clone(), number) {
            return Err(ConfigError::invalid(
                &at,
                key,
                format!("is already on line {first}"),
            ));
        }
        let secret = substitute(&secret, env)
            .and_then(|secret| Secret::parse(&secret).map_err(|e| e.to_string()))
            .map_err(|problem| ConfigError::invalid(&at, &key, problem))?;
        users.insert(user, secret);
    }
    Ok(users)
}

/// A field in double quotes at the start of `text` (a doubled quote inside is a quote),
/// and what follows it; `None` if it does not start with a quote or never ends.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut rest = text.strip_prefix('"')?;
    let mut field = String::new();
    loop {
        let end = rest.find('"')?;
        field.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix('"') {
            Some(after) => {
                field.push('"');
                rest = after;
            }
            None => return Some((field, rest)),
        }
    }
}

/// `${NAME}` replaced from the environment; see the module docs. The error names the
/// variable, never the secret around it.
fn substitute(secret: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(secret.len());
    let mut rest = secret;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let from = &rest[at..];
        if let Some(after) = from.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = from.strip_prefix("${") {
            let end = after.find('}').ok_or(
                "a `${` in the secret has no closing `}` (write `$${` for a literal `${`)",
            )?;
            let name = &after[..end];
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(
                    "a `${...}` in the secret is not a variable name (letters, digits \
                            and _; write `$${` for a literal `${`)"
                        .to_owned(),
                );
            }
            let value =
                env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &from[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$\
        AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn env(name: &str) -> Option<String> {
        match name {
            "CAROL_PASSWORD" => Some("from-the-env".to_owned()),
            _ => None,
        }
    }

    fn parse_text(text: &str) -> Result<BTreeMap<String, Secret>, ConfigError> {
        parse(text, Path::new("users.txt"), &env)
    }

    #[test]
    fn quotes_comments_and_substitution() {
        let text = format!(
            "; a comment\n\
             # another\n\
             \n\
             \"alice\" \"{VERIFIER}\"\n\
             \x20 \"bob\"\t\"md5{}\" the rest is ignored\n\
             \"carol\" \"${{CAROL_PASSWORD}}\"\n\
             \"dave\" \"say \"\"hi\"\" $x $${{literal}}\"\n\
             \"o\"\"brien\" \"pw\"\n",
            "0123456789abcdef0123456789abcdef"
        );
        let users = parse_text(&text).unwrap();
        assert_eq!(
            users.keys().collect::<Vec<_>>(),
            ["alice", "bob", "carol", "dave", "o\"brien"]
        );
        assert!(matches!(users["alice"], Secret::ScramSha256(_)));
        assert!(matches!(users["bob"], Secret::Md5(_)));
        assert_eq!(users["carol"].password(), Some("from-the-env"));
        assert_eq!(users["dave"].password(), Some("say \"hi\" $x ${literal}"));
        assert_eq!(users["o\"brien"].password(), Some("pw"));
    }

    #[test]
    fn a_missing_variable_names_it_and_the_line_not_the_secret() {
        let err = parse_text("\"alice\" \"pw\"\n\"bob\" \"s3cret-${BOB_PASSWORD}\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "users.txt:2: user \"bob\": environment variable BOB_PASSWORD is not set"
        );
    }

    #[test]
    fn a_bad_verifier_names_the_line_and_user_not_the_secret() {
        let err = parse_text("\n\"alice\" \"SCRAM-SHA-256$4096:!!notbase64!!$x:y\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("users.txt:2: user \"alice\": "), "{err}");
        assert!(err.contains("salt is not base64"), "{err}");
        assert!(!err.contains("notbase64"), "{err}");
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let cases = [
            ("alice \"pw\"", 1, "the user in double quotes"),
            ("\"alice\" pw", 1, "the secret in double quotes"),
            (
                "\n\"alice\" \"unterminated",
                2,
                "the secret in double quotes",
            ),
            ("\"\" \"pw\"", 1, "the user name is empty"),
            ("\"alice\" \"\"", 1, "the password is empty"),
            ("\"alice\" \"${bad name}\"", 1, "not a variable name"),
            ("\"alice\" \"${OPEN\"", 1, "no closing"),
            ("\"a\" \"x\"\n\"a\" \"y\"", 2, "is already on line 1"),
        ];
        for (text, line, problem) in cases {
            let err = parse_text(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("users.txt:{line}: ")),
                "{text:?}: {err}"
            );
            assert!(err.contains(problem), "{text:?}: {err}");
        }
        let err = parse_text("\"alice\" \"hunter2${bad name}\"")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn an_absent_file_is_named() {
        let err = load(Path::new("/nonexistent/users.txt"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/nonexistent/users.txt: cannot read the users file"),
            "{err}"
        );
    }
}
