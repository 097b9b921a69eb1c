//! Authentication: the users' credentials ([`secret`]).

pub mod secret;

pub use secret::{ScramVerifier, Secret, SecretError};
