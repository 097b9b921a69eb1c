//! The PostgreSQL v3 wire protocol, as far as a pooler needs it: framing of whole
//! messages ([`frame`]) and a look inside the few that change a session's state
//! ([`frontend`] for the client's, [`backend`] for the server's).

pub mod backend;
pub mod frame;
pub mod frontend;

/// Splits a NUL-terminated UTF-8 string off the front of `bytes`: the string and the rest.
/// `None` when there is no NUL or the string is not UTF-8.
pub(crate) fn take_cstr(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let nul = bytes.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&bytes[..nul]).ok()?;
    Some((text, &bytes[nul + 1..]))
}
