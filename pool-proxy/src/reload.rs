//! RELOAD (the admin console's): the configuration file and the users file read again,
//! with the same flags and environment ([`ConfigSource`](crate::config::ConfigSource)),
//! and put in force without dropping a client.
//!
//! What changes at once: each pool's options (`Pool::reconfigure`): its size (growing
//! serves waiters now, shrinking closes idle servers now and the others as they come
//! back), `min_pool_size`, `server_idle_timeout`, `server_check_delay`, and, for servers
//! opened from now on, `server_lifetime` and `server_connect_timeout`;
//! `query_wait_timeout` (for every wait that starts afterwards), the session settings
//! (`idle_transaction_timeout`, `session_state`, `abandoned_transaction`,
//! `max_packet_size`: for clients that log in afterwards), the users, `auth_type`,
//! `admin_users`, `stats_users`, `client_login_timeout`, `shutdown_timeout`. A new
//! database accepts clients; a removed one refuses new clients (`3D000`) while its
//! connected clients stay until they leave, then its pools close. A database whose URL or
//! pool mode changed, or any change of `server_reset_query` or `server_check_query`,
//! retires the routes concerned the same way: their clients keep them, new clients get new
//! pools. The settings in [`NEEDS_RESTART`] keep their running values, and each one that
//! changed is named in the log and in a NOTICE. A configuration that does not load (or a
//! pool whose options are invalid, e.g. a size below its `min_pool_size`) fails the
//! RELOAD and changes nothing.

use std::sync::Arc;

use crate::config::{ConfigError, Origin, NEEDS_RESTART};
use crate::proxy::Shared;

/// What a RELOAD did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Settings (and per-database values) that changed in the file but keep their running
    /// values until a restart.
    pub needs_restart: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Routes (`database/user`) retired: closed once their clients leave.
    pub retired: Vec<String>,
}

impl ReloadReport {
    /// The NOTICEs RELOAD sends: what did not take effect, and what was retired.
    pub fn notices(&self) -> Vec<String> {
        let mut notices: Vec<String> = self
            .needs_restart
            .iter()
            .map(|name| {
                format!("pool-proxy: {name} changed but needs a restart; the running value is kept")
            })
            .collect();
        if !self.retired.is_empty() {
            notices.push(format!(
                "pool-proxy: pools retired (their clients keep them until they leave; new \
                 clients get new pools): {}",
                self.retired.join(", ")
            ));
        }
        notices
    }
}

/// Loads the configuration again and puts it in force; on an error, nothing changes.
pub(crate) fn reload(shared: &Shared) -> Result<ReloadReport, ConfigError> {
    let old = shared.config();
    let mut new = old.source.reload()?;
    let mut report = ReloadReport::default();
    let (before, after) = (old.listing(), new.listing());
    for name in NEEDS_RESTART {
        let value = |listing: &[(String, String)]| {
            listing
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        if value(&before) != value(&after) {
            report.needs_restart.push((*name).to_owned());
            new.keep_setting(&old, name);
        }
    }
    report.added = new
        .databases
        .keys()
        .filter(|name| !old.databases.contains_key(*name))
        .cloned()
        .collect();
    // Every pool's new options are checked before any is applied: all or nothing.
    for (name, db) in &new.databases {
        if let Err(e) = new.pool_config(db).validate() {
            return Err(ConfigError::invalid(
                &Origin::Default,
                format!("databases.{name}"),
                e.to_string(),
            ));
        }
    }
    report.removed = old
        .databases
        .keys()
        .filter(|name| !new.databases.contains_key(*name))
        .cloned()
        .collect();
    report.retired = shared.routes.reconfigure(Arc::new(new));
    tracing::info!(
        added = ?report.added,
        removed = ?report.removed,
        retired = ?report.retired,
        "RELOAD: configuration reloaded"
    );
    for name in &report.needs_restart {
        tracing::warn!(setting = %name, "RELOAD: changed, but needs a restart; the running value is kept");
    }
    Ok(report)
}
