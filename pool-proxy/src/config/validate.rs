//! The checks a setting cannot make alone: its range, and how it fits with the others.
//! Each error is reported at the origin of the setting to change.

use std::path::Path;

use super::settings::{ClientTlsMode, Origins};
use super::{ConfigError, ProxyConfig};
use crate::auth::AuthMethod;

/// The smallest `max_packet_size`: below it ordinary queries would be refused.
pub const MIN_PACKET_SIZE: u32 = 8 * 1024;
/// The largest `max_packet_size`: the protocol's length field is a signed 32-bit integer
/// (PgBouncer's default, so a value copied from its configuration is accepted).
pub const MAX_PACKET_SIZE: u32 = i32::MAX as u32;

pub(crate) fn settings(config: &ProxyConfig, origins: &Origins) -> Result<(), ConfigError> {
    let fail = |origin, key: &str, problem: String| Err(ConfigError::invalid(origin, key, problem));
    if config.listen_addr.trim().is_empty() {
        return fail(
            &origins.listen_addr,
            "listen_addr",
            "must not be empty (`*` listens on every address)".into(),
        );
    }
    if config.default_pool_size == 0 {
        return fail(
            &origins.default_pool_size,
            "default_pool_size",
            "must be at least 1".into(),
        );
    }
    if config.default_pool_size > pool_core::MAX_SIZE_LIMIT {
        return fail(
            &origins.default_pool_size,
            "default_pool_size",
            format!(
                "({}) must be at most {} (PostgreSQL's own limit on connections)",
                config.default_pool_size,
                pool_core::MAX_SIZE_LIMIT
            ),
        );
    }
    if config.min_pool_size > config.default_pool_size {
        return fail(
            &origins.min_pool_size,
            "min_pool_size",
            format!(
                "({}) must not exceed default_pool_size ({})",
                config.min_pool_size, config.default_pool_size
            ),
        );
    }
    if config.max_client_conn == 0 {
        return fail(
            &origins.max_client_conn,
            "max_client_conn",
            "must be at least 1".into(),
        );
    }
    if config.server_lifetime.is_zero() {
        return fail(
            &origins.server_lifetime,
            "server_lifetime",
            "must be above 0 (PgBouncer's 0, use each connection once, is not supported)".into(),
        );
    }
    if config.server_connect_timeout.is_zero() {
        return fail(
            &origins.server_connect_timeout,
            "server_connect_timeout",
            "must be above 0".into(),
        );
    }
    if config.server_reset_query.trim().is_empty() {
        return fail(
            &origins.server_reset_query,
            "server_reset_query",
            "must not be empty: it cleans a server a pinned client left, before the next \
             client gets it"
                .into(),
        );
    }
    if !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&config.max_packet_size) {
        return fail(
            &origins.max_packet_size,
            "max_packet_size",
            format!(
                "({}) must be between {MIN_PACKET_SIZE} and {MAX_PACKET_SIZE} bytes",
                config.max_packet_size
            ),
        );
    }
    if config.auth_type != AuthMethod::Trust && config.auth_file.is_none() {
        return fail(
            &origins.auth_type,
            "auth_type",
            format!(
                "{} needs auth_file, the users file (or auth_type = trust, which checks no \
                 password)",
                config.auth_type
            ),
        );
    }
    tls(config, origins)
}

fn tls(config: &ProxyConfig, origins: &Origins) -> Result<(), ConfigError> {
    match (&config.client_tls_cert_file, &config.client_tls_key_file) {
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                &origins.client_tls_cert_file,
                "client_tls_cert_file",
                "is set without client_tls_key_file: set both or neither",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                &origins.client_tls_key_file,
                "client_tls_key_file",
                "is set without client_tls_cert_file: set both or neither",
            ))
        }
        (Some(cert), Some(key)) => {
            readable(cert, &origins.client_tls_cert_file, "client_tls_cert_file")?;
            readable(key, &origins.client_tls_key_file, "client_tls_key_file")?;
        }
        (None, None) if config.client_tls_sslmode != ClientTlsMode::Disable => {
            return Err(ConfigError::invalid(
                &origins.client_tls_sslmode,
                "client_tls_sslmode",
                format!(
                    "{} needs client_tls_cert_file and client_tls_key_file",
                    config.client_tls_sslmode
                ),
            ))
        }
        (None, None) => {}
    }
    Ok(())
}

/// The file exists and can be opened (the TLS layer reads it when the proxy starts).
fn readable(path: &Path, origin: &super::Origin, key: &str) -> Result<(), ConfigError> {
    std::fs::File::open(path).map(drop).map_err(|e| {
        ConfigError::invalid(origin, key, format!("cannot read {}: {e}", path.display()))
    })
}
