//! Replica sets from connection URLs: a primary URL and replica URLs (Prisma's
//! `DATABASE_URL` and its replicas), or one libpq multi-host URL.

use std::fmt;

use pool_router::Role;
use tokio_postgres::config::TargetSessionAttrs;

use super::{ReplicaSet, ReplicaSetBuilder, SetBuildError};
use crate::builder::Builder;
use crate::pool::Pool;
use crate::postgres::{PgManager, UrlError};

/// Why a member's URL cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaUrlError {
    /// What [`PgManager::from_url`] said.
    Url(UrlError),
    /// A multi-host URL asking for something other than the primary.
    TargetSessionAttrs,
}

impl fmt::Display for ReplicaUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaUrlError::Url(e) => e.fmt(f),
            ReplicaUrlError::TargetSessionAttrs => f.write_str(
                "`target_session_attrs` of a replica set's multi-host URL says where writes go: \
                 read-write (the default here) or any; reads are routed to the other hosts by \
                 the set, not by libpq",
            ),
        }
    }
}

impl std::error::Error for ReplicaUrlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplicaUrlError::Url(e) => Some(e),
            ReplicaUrlError::TargetSessionAttrs => None,
        }
    }
}

/// One member's pool from its URL: the URL's pool options, then `configure`'s, named
/// `<set>.<member>`.
fn member_pool(
    set: &str,
    member: &str,
    role: Role,
    url: &str,
    adjust: impl FnOnce(PgManager) -> PgManager,
    configure: &dyn Fn(Builder<PgManager>, Role) -> Builder<PgManager>,
) -> Result<Pool<PgManager>, SetBuildError> {
    let (manager, options) = PgManager::from_url(url).map_err(|e| SetBuildError::Url {
        member: member.to_owned(),
        error: ReplicaUrlError::Url(e),
    })?;
    let builder = Pool::builder(adjust(manager))
        .name(format!("{set}.{member}"))
        .options(options);
    configure(builder, role)
        .build()
        .map_err(|error| SetBuildError::Pool {
            member: member.to_owned(),
            error,
        })
}

impl ReplicaSet<PgManager> {
    /// A set from a primary URL and replica URLs, each with its own pool options
    /// (`connection_limit`, `pool_timeout`, TLS, ...). The primary is opened with
    /// [`PgManager::expect_primary`]. `configure` adjusts each member's pool builder
    /// (hooks, `acquire_timeout`, ...) by role. Pools are named `<name>.primary`,
    /// `<name>.replica-1`, ... Must run inside a tokio runtime.
    pub fn from_urls(
        name: &str,
        primary: &str,
        replicas: &[&str],
        configure: impl Fn(Builder<PgManager>, Role) -> Builder<PgManager>,
    ) -> Result<ReplicaSetBuilder<PgManager>, SetBuildError> {
        let pool = member_pool(
            name,
            "primary",
            Role::Primary,
            primary,
            PgManager::expect_primary,
            &configure,
        )?;
        let mut builder = ReplicaSet::builder(pool).name(name);
        for (i, url) in replicas.iter().enumerate() {
            let member = format!("replica-{}", i + 1);
            let pool = member_pool(name, &member, Role::Replica, url, |m| m, &configure)?;
            builder = builder.replica(pool);
        }
        Ok(builder)
    }

    /// A set from one URL. With one host it is a primary alone (reads go to it). With
    /// libpq's several hosts (`postgresql://u:pw@h1:5432,h2:5432,h3:5432/db`), writes go
    /// to whichever host takes them (the URL with `target_session_attrs=read-write`,
    /// following a failover) and every host is a replica candidate: the monitor benches
    /// the one that is not in recovery (the primary) and serves reads from the others.
    /// `target_session_attrs`, if given, must be `read-write` or `any`.
    pub fn from_url(
        name: &str,
        url: &str,
        configure: impl Fn(Builder<PgManager>, Role) -> Builder<PgManager>,
    ) -> Result<ReplicaSetBuilder<PgManager>, SetBuildError> {
        let hosts = crate::postgres::split_hosts(url).map_err(|e| SetBuildError::Url {
            member: "primary".into(),
            error: ReplicaUrlError::Url(e),
        })?;
        let (probe, _) = PgManager::from_url(url).map_err(|e| SetBuildError::Url {
            member: "primary".into(),
            error: ReplicaUrlError::Url(e),
        })?;
        if probe.config().get_target_session_attrs() == TargetSessionAttrs::ReadOnly {
            return Err(SetBuildError::Url {
                member: "primary".into(),
                error: ReplicaUrlError::TargetSessionAttrs,
            });
        }
        if hosts.len() == 1 {
            return Self::from_urls(name, url, &[], configure);
        }
        let pool = member_pool(
            name,
            "primary",
            Role::Primary,
            url,
            PgManager::expect_primary,
            &configure,
        )?;
        let mut builder = ReplicaSet::builder(pool).name(name);
        for (i, host) in hosts.iter().enumerate() {
            let member = format!("replica-{}", i + 1);
            let any = |m: PgManager| {
                m.configure(|c| {
                    c.target_session_attrs(TargetSessionAttrs::Any);
                })
            };
            let pool = member_pool(name, &member, Role::Replica, host, any, &configure)?;
            builder = builder.replica(pool);
        }
        Ok(builder)
    }
}
