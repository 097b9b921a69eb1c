//! Authentication: the users' credentials ([`secret`]) and how clients prove them to the
//! proxy ([`client`]: SCRAM-SHA-256 in [`scram`], MD5 in `md5`, or trust).

pub mod client;
mod md5;
pub mod scram;
pub mod secret;

use std::fmt;
use std::str::FromStr;

pub use client::{ClientAuth, Step};
pub use secret::{ScramVerifier, Secret, SecretError};

/// How the proxy asks clients to prove who they are (PgBouncer's `auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (the default, as PostgreSQL's since version 14): the password never
    /// crosses the wire and the proxy keeps only a verifier if it likes.
    #[default]
    ScramSha256,
    /// MD5 challenge and response; a user whose secret is a SCRAM verifier is asked for
    /// SCRAM instead, as PostgreSQL does.
    Md5,
    /// No proof: anyone who can reach the port is whoever they say.
    Trust,
}

impl AuthMethod {
    /// The setting's values, as PgBouncer spells them.
    pub const NAMES: [&'static str; 3] = ["scram-sha-256", "md5", "trust"];
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Trust => "trust",
        })
    }
}

impl FromStr for AuthMethod {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "scram-sha-256" => Ok(AuthMethod::ScramSha256),
            "md5" => Ok(AuthMethod::Md5),
            "trust" => Ok(AuthMethod::Trust),
            _ => Err(format!(
                "unknown auth_type {text:?}; expected one of {}",
                AuthMethod::NAMES.join(", ")
            )),
        }
    }
}
