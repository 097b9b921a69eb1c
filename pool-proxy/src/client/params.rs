//! Session parameters from a client's startup packet (`client_encoding`, `DateStyle`,
//! `TimeZone`, `application_name`, `extra_float_digits`, ...). In transaction mode each
//! transaction may land on another server, so before a server is handed to a client the
//! proxy makes that server's values match what the client asked for: one `SET` (or
//! `RESET`) round trip, only when they differ. A server remembers what the proxy set on
//! it ([`ServerSettings`]); a reset (`DISCARD ALL`) forgets it, as the server does.
//!
//! A client's own change of a parameter the server reports (`set_config`, a `SET` inside
//! a transaction block) is followed too ([`follow`]): the server's ParameterStatus says
//! what it became. Other settings changed that way are not seen (docs/proxy.md).

use std::time::Duration;

#[cfg(test)]
use crate::protocol::backend::ServerMessage;
#[cfg(test)]
use crate::protocol::frame::{Framer, DEFAULT_MAX_MESSAGE_LEN};
use crate::server::run_to_idle;
use crate::server::ServerConnection;
use crate::server::ServerError;
pub(crate) use crate::server::ServerSettings;

/// How long a settings round trip may take before the server is given up on.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Startup parameters that are not settings: who and where, handled by login.
pub(crate) const NOT_SETTINGS: [&str; 2] = ["user", "database"];

/// Startup parameters refused: the reason is the error's text.
pub(crate) const REFUSED: [(&str, &str); 2] = [
    (
        "options",
        "command-line options in the startup packet (options, PGOPTIONS) would change \
         the session of a shared server; use SET LOCAL inside a transaction instead",
    ),
    ("replication", "replication connections cannot be pooled"),
];

/// What a client wants set on its servers: its startup settings that differ from the
/// route's defaults (names compared case-insensitively, as PostgreSQL does).
pub(crate) fn wanted(
    defaults: &[(String, String)],
    startup: &[(String, String)],
) -> ServerSettings {
    startup
        .iter()
        .filter(|(name, _)| !NOT_SETTINGS.contains(&name.as_str()))
        .filter(|(name, value)| {
            !defaults
                .iter()
                .any(|(d, v)| d.eq_ignore_ascii_case(name) && v == value)
        })
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect()
}

/// The ParameterStatus messages a client gets at login: the route's defaults, with the
/// client's own values where it set one.
pub(crate) fn replay(defaults: &[(String, String)], wanted: &ServerSettings) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, default) in defaults {
        let value = wanted.get(&name.to_ascii_lowercase()).unwrap_or(default);
        let mut body = Vec::with_capacity(name.len() + value.len() + 2);
        for part in [name, value] {
            body.extend_from_slice(part.as_bytes());
            body.push(0);
        }
        crate::protocol::backend::write_message(&mut out, b'S', &body);
    }
    out
}

/// The statement that makes a server's settings `current` into `wanted`, if they differ.
pub(crate) fn statement(current: &ServerSettings, wanted: &ServerSettings) -> Option<String> {
    let mut sql = String::new();
    for (name, value) in wanted {
        if current.get(name) != Some(value) {
            sql.push_str(&format!("SET {} TO {};", ident(name), literal(value)));
        }
    }
    for name in current.keys().filter(|name| !wanted.contains_key(*name)) {
        sql.push_str(&format!("RESET {};", ident(name)));
    }
    (!sql.is_empty()).then_some(sql)
}

/// Makes the server's settings what the client wants. `Err(ServerError::Server)`: the
/// server refused a value (a time zone it does not know); it is unchanged (the `SET`s ran
/// in one implicit transaction) and still usable. Any other error: close it.
pub(crate) async fn sync(
    server: &mut ServerConnection,
    wanted: &ServerSettings,
) -> Result<(), ServerError> {
    let Some(sql) = statement(&server.settings, wanted) else {
        return Ok(());
    };
    tokio::time::timeout(SYNC_TIMEOUT, run_to_idle(server, &sql))
        .await
        .map_err(|_| {
            ServerError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the server did not answer within {SYNC_TIMEOUT:?}"),
            ))
        })??;
    server.settings = wanted.clone();
    Ok(())
}

/// A followed parameter the client changed on `server` (its value once the transaction
/// that changed it ended): the client wants it on its next servers, and this server has
/// it. At the server's startup value it is nothing to set any more.
pub(crate) fn follow(
    server: &mut ServerConnection,
    wanted: &mut ServerSettings,
    name: &str,
    value: &str,
) {
    let key = name.to_ascii_lowercase();
    if server.parameter(name) == Some(value) {
        wanted.remove(&key);
        server.settings.remove(&key);
    } else {
        wanted.insert(key.clone(), value.to_owned());
        server.settings.insert(key, value.to_owned());
    }
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal whatever `standard_conforming_strings` says.
fn literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_client_wants_only_what_differs_from_the_defaults() {
        let defaults = pairs(&[("DateStyle", "ISO, MDY"), ("application_name", "")]);
        let startup = pairs(&[
            ("user", "alice"),
            ("database", "app"),
            ("datestyle", "ISO, MDY"),
            ("application_name", "psql"),
            ("extra_float_digits", "3"),
        ]);
        let wanted = wanted(&defaults, &startup);
        assert_eq!(
            wanted.into_iter().collect::<Vec<_>>(),
            pairs(&[("application_name", "psql"), ("extra_float_digits", "3")])
        );
    }

    #[test]
    fn the_statement_sets_what_differs_and_resets_what_the_client_did_not_ask_for() {
        let current: ServerSettings = pairs(&[("application_name", "a"), ("timezone", "UTC")])
            .into_iter()
            .collect();
        let wanted: ServerSettings = pairs(&[("application_name", "it's \\ b")])
            .into_iter()
            .collect();
        assert_eq!(
            statement(&current, &wanted).as_deref(),
            Some("SET \"application_name\" TO E'it\\'s \\\\ b';RESET \"timezone\";")
        );
        assert_eq!(statement(&wanted, &wanted), None);
    }

    #[test]
    fn replay_reports_the_defaults_with_the_clients_values() {
        let defaults = pairs(&[("application_name", ""), ("TimeZone", "UTC")]);
        let wanted: ServerSettings = pairs(&[("application_name", "psql")]).into_iter().collect();
        let bytes = replay(&defaults, &wanted);
        let mut framer = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
        framer.push(&bytes);
        let mut seen = Vec::new();
        while let Some(frame) = framer.next_frame().unwrap() {
            match ServerMessage::classify(&frame).unwrap() {
                ServerMessage::ParameterStatus { name, value } => seen.push((name, value)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            seen,
            pairs(&[("application_name", "psql"), ("TimeZone", "UTC")])
        );
    }
}
