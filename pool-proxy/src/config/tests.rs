//! `load` end to end: real files in a scratch directory, flags as a shell passes them,
//! the environment through the injected function (the process's is never read).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::auth::{AuthMethod, Secret};
use crate::session::{AbandonedTransactionPolicy, PoolMode, StatePolicy};

/// A directory of its own per test, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("pool-proxy-config-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const DB: &str = "[databases]\napp = \"postgres://app:s3cret-url-pw@db.internal:5432/app\"\n";

/// Loads `file` (as proxy.toml in a scratch directory, when given) with these flags and
/// variables.
fn load_with(
    test: &str,
    file: Option<&str>,
    flags: &[&str],
    vars: &[(&str, &str)],
) -> Result<ProxyConfig, ConfigError> {
    let scratch = Scratch::new(test);
    let mut args: Vec<OsString> = vec!["pool-proxy".into()];
    if let Some(text) = file {
        let path = scratch.write("proxy.toml", text);
        args.push("--config".into());
        args.push(path.into());
    }
    args.extend(flags.iter().map(OsString::from));
    let env = |name: &str| {
        vars.iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| value.to_string())
    };
    load(args, &env)
}

/// The error `file` gets, as text.
fn file_error(test: &str, file: &str) -> String {
    load_with(test, Some(file), &[], &[])
        .unwrap_err()
        .to_string()
}

/// Asserts `err` names the file, `line` and `key`, and says `problem`.
#[track_caller]
fn assert_names(err: &str, line: usize, key: &str, problem: &str) {
    let place = format!("proxy.toml:{line}: {key}: ");
    assert!(err.contains(&place), "expected {place:?} in: {err}");
    assert!(err.contains(problem), "expected {problem:?} in: {err}");
}

#[test]
fn a_minimal_file_gets_every_default() {
    let config = load_with(
        "minimal",
        Some(&format!("auth_type = \"trust\"\n{DB}")),
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(config.listen_addr, "127.0.0.1");
    assert_eq!(config.listen_port, 6432);
    assert_eq!(config.pool_mode, PoolMode::Transaction);
    assert_eq!(config.default_pool_size, 20);
    assert_eq!(config.query_wait_timeout, Some(Duration::from_secs(120)));
    assert_eq!(config.server_lifetime, Duration::from_secs(3600));
    assert_eq!(config.client_login_timeout, Some(Duration::from_secs(60)));
    assert_eq!(config.client_tls_sslmode, ClientTlsMode::Disable);
    assert_eq!(config.session_state, StatePolicy::Pin);
    assert_eq!(
        config.abandoned_transaction,
        AbandonedTransactionPolicy::Rollback
    );
    assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
    let app = &config.databases["app"];
    assert_eq!(
        (app.pool_size, app.min_pool_size, app.pool_mode),
        (20, 0, PoolMode::Transaction)
    );
    assert_eq!(app.manager.config().get_dbname(), Some("app"));
    assert!(config.users.is_empty());
}

#[test]
fn a_flag_beats_a_variable_beats_the_file_beats_the_default() {
    let file = "auth_type = \"trust\"\nlisten_port = 1111\ndefault_pool_size = 30\n\
                min_pool_size = 3\n[databases]\napp = \"postgres://a@file/app\"\n\
                logs = \"postgres://a@file/logs\"\nonly_file = \"postgres://a@file/x\"\n";
    let config = load_with(
        "precedence",
        Some(file),
        &[
            "--listen-port",
            "3333",
            "--database",
            "app=postgres://a@flag/app",
        ],
        &[
            ("POOL_PROXY_LISTEN_PORT", "2222"),
            ("POOL_PROXY_DEFAULT_POOL_SIZE", "40"),
            (
                "POOL_PROXY_DATABASES",
                "app=postgres://a@env/app logs=postgres://a@env/logs",
            ),
        ],
    )
    .unwrap();
    assert_eq!(config.listen_port, 3333, "flag over variable and file");
    assert_eq!(config.default_pool_size, 40, "variable over file");
    assert_eq!(config.min_pool_size, 3, "file over default");
    assert_eq!(config.max_client_conn, 100, "default");
    let host = |name: &str| format!("{:?}", config.databases[name].manager.config().get_hosts());
    assert!(host("app").contains("flag"), "{}", host("app"));
    assert!(host("logs").contains("env"), "{}", host("logs"));
    assert!(host("only_file").contains("file"), "{}", host("only_file"));
}

#[test]
fn durations_are_seconds_or_carry_a_unit_in_every_source() {
    let file = format!(
        "auth_type = \"trust\"\nquery_wait_timeout = 2.5\nserver_idle_timeout = \"250ms\"\n\
         client_login_timeout = 0\nserver_check_delay = 0\nidle_transaction_timeout = 90\n{DB}"
    );
    let config = load_with(
        "durations",
        Some(&file),
        &["--shutdown-timeout", "2min"],
        &[("POOL_PROXY_SERVER_LIFETIME", "1.5")],
    )
    .unwrap();
    assert_eq!(config.query_wait_timeout, Some(Duration::from_millis(2500)));
    assert_eq!(config.server_idle_timeout, Some(Duration::from_millis(250)));
    assert_eq!(config.client_login_timeout, None, "0 is off");
    assert_eq!(
        config.server_check_delay,
        Duration::ZERO,
        "0 is check always"
    );
    assert_eq!(
        config.idle_transaction_timeout,
        Some(Duration::from_secs(90))
    );
    assert_eq!(config.shutdown_timeout, Duration::from_secs(120));
    assert_eq!(config.server_lifetime, Duration::from_millis(1500));
}

#[test]
fn every_kind_of_bad_file_names_the_key_and_its_line() {
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "auth_type = \"trust\"\n\ndefault_poolsize = 5\n",
            3,
            "default_poolsize",
            "did you mean `default_pool_size`?",
        ),
        (
            "reserve_pool_size = 5\n",
            1,
            "reserve_pool_size",
            "PgBouncer's `reserve_pool_size` is not supported",
        ),
        (
            "[pgbouncer]\nlisten_port = 1\n",
            1,
            "pgbouncer",
            "write its settings as top-level keys",
        ),
        (
            "frobnicate = 1\n",
            1,
            "frobnicate",
            "unknown key `frobnicate` (`pool-proxy --help`",
        ),
        (
            "listen_port = \"6432\"\n",
            1,
            "listen_port",
            "expected a whole number, found a TOML string",
        ),
        (
            "listen_port = 70000\n",
            1,
            "listen_port",
            "must be at most 65535",
        ),
        (
            "auth_type = \"trust\"\ndefault_pool_size = 0\n",
            2,
            "default_pool_size",
            "must be at least 1",
        ),
        (
            "auth_type = \"trust\"\ndefault_pool_size = 5\nmin_pool_size = 6\n",
            3,
            "min_pool_size",
            "(6) must not exceed default_pool_size (5)",
        ),
        (
            "auth_type = \"trust\"\nmax_client_conn = 0\n",
            2,
            "max_client_conn",
            "must be at least 1",
        ),
        (
            "pool_mode = \"statement\"\n",
            1,
            "pool_mode",
            "statement mode is not supported",
        ),
        (
            "auth_type = \"password\"\n",
            1,
            "auth_type",
            "expected one of scram-sha-256, md5, trust",
        ),
        (
            "session_state = \"ignore\"\n",
            1,
            "session_state",
            "expected one of pin, refuse",
        ),
        (
            "query_wait_timeout = \"5 minutes\"\n",
            1,
            "query_wait_timeout",
            "unknown unit \"minutes\"",
        ),
        (
            "query_wait_timeout = true\n",
            1,
            "query_wait_timeout",
            "found a TOML boolean",
        ),
        (
            "auth_type = \"trust\"\nserver_lifetime = 0\n",
            2,
            "server_lifetime",
            "must be above 0",
        ),
        (
            "auth_type = \"trust\"\nserver_reset_query = \"\"\n",
            2,
            "server_reset_query",
            "must not be empty",
        ),
        (
            "auth_type = \"trust\"\nmax_packet_size = 100\n",
            2,
            "max_packet_size",
            "must be between 8192 and 2147483647",
        ),
        (
            "\nauth_type = \"md5\"\n",
            2,
            "auth_type",
            "md5 needs auth_file",
        ),
        (
            "auth_type = \"trust\"\nclient_tls_cert_file = \"cert.pem\"\n",
            2,
            "client_tls_cert_file",
            "without client_tls_key_file",
        ),
        (
            "auth_type = \"trust\"\nclient_tls_key_file = \"key.pem\"\n",
            2,
            "client_tls_key_file",
            "without client_tls_cert_file",
        ),
        (
            "auth_type = \"trust\"\nclient_tls_sslmode = \"require\"\n",
            2,
            "client_tls_sslmode",
            "require needs client_tls_cert_file",
        ),
        (
            "client_tls_sslmode = \"verify-full\"\n",
            1,
            "client_tls_sslmode",
            "client certificates are not checked",
        ),
        (
            "admin_users = [\"a\", 1]\n",
            1,
            "admin_users",
            "found a TOML integer in it",
        ),
    ];
    for (i, &(file, line, key, problem)) in cases.iter().enumerate() {
        let err = file_error(&format!("bad-{i}"), &format!("{file}{DB}"));
        assert_names(&err, line, key, problem);
    }
}

#[test]
fn bad_databases_name_the_entry_and_its_line() {
    let head = "auth_type = \"trust\"\n[databases]\n";
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "app = \"mysql://a@h/app\"\n",
            3,
            "databases.app",
            "must start with postgres://",
        ),
        (
            "app = \"postgres://a:s3cret@h/app?frobs=1\"\n",
            3,
            "databases.app",
            "unknown connection URL parameter `frobs`",
        ),
        (
            "app = \"postgres://a@h/app?connection_limit=5\"\n",
            3,
            "databases.app",
            "the URL sets the pool's max_size",
        ),
        (
            "app = 5\n",
            3,
            "databases.app",
            "expected a URL string or a table",
        ),
        (
            "app = { pool_size = 2 }\n",
            3,
            "databases.app",
            "has no `url",
        ),
        (
            "app = { url = \"postgres://a@h/app\", poolsize = 2 }\n",
            3,
            "databases.app.poolsize",
            "did you mean `pool_size`?",
        ),
        (
            "\napp = { url = \"postgres://a@h/app\", pool_size = 0 }\n",
            4,
            "databases.app.pool_size",
            "must be at least 1",
        ),
        (
            "app = { url = \"postgres://a@h/app\", pool_size = 2, min_pool_size = 3 }\n",
            3,
            "databases.app.min_pool_size",
            "(3) must not exceed the pool size (2)",
        ),
        (
            "app = { url = \"postgres://a@h/app\", pool_mode = \"stmt\" }\n",
            3,
            "databases.app.pool_mode",
            "unknown pool_mode",
        ),
        (
            "app = \"postgres://a@h/app\"\nlisten_port = 7000\n",
            4,
            "databases.listen_port",
            "is a setting, not a database",
        ),
        (
            "\"\" = \"postgres://a@h/app\"\n",
            3,
            "databases.",
            "a database needs a name",
        ),
    ];
    for (i, &(entries, line, key, problem)) in cases.iter().enumerate() {
        let err = file_error(&format!("db-{i}"), &format!("{head}{entries}"));
        assert_names(&err, line, key, problem);
        assert!(!err.contains("s3cret"), "{err}");
    }
    let err = file_error("db-table", "auth_type = \"trust\"\ndatabases = \"app\"\n");
    assert_names(&err, 2, "databases", "expected a table of databases");
}

#[test]
fn a_database_inherits_the_global_pool_settings_unless_it_sets_its_own() {
    let file = "auth_type = \"trust\"\ndefault_pool_size = 8\nmin_pool_size = 4\npool_mode = \"session\"\n\
                [databases]\nbig = \"postgres://a@h/big\"\n\
                small = { url = \"postgres://a@h/small\", pool_size = 2 }\n\
                own = { url = \"postgres://a@h/own\", pool_size = 3, min_pool_size = 1, pool_mode = \"transaction\" }\n";
    let config = load_with("inherit", Some(file), &[], &[]).unwrap();
    let sizes = |name: &str| {
        let db = &config.databases[name];
        (db.pool_size, db.min_pool_size, db.pool_mode)
    };
    assert_eq!(sizes("big"), (8, 4, PoolMode::Session));
    assert_eq!(
        sizes("small"),
        (2, 2, PoolMode::Session),
        "min capped at the pool size"
    );
    assert_eq!(sizes("own"), (3, 1, PoolMode::Transaction));
}

#[test]
fn invalid_toml_names_its_line() {
    let err = file_error("toml", "auth_type = \"trust\"\nlisten_port = = 5\n");
    assert!(err.contains("proxy.toml:2: not valid TOML"), "{err}");
    let err = file_error("dup", "listen_port = 1\nlisten_port = 2\n");
    assert!(err.contains("proxy.toml:2: not valid TOML"), "{err}");
}

#[test]
fn a_missing_file_is_named() {
    let err = load(
        ["pool-proxy", "--config", "/nonexistent/proxy.toml"].map(OsString::from),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("/nonexistent/proxy.toml: cannot read the configuration file"),
        "{err}"
    );
}

#[test]
fn the_file_may_be_named_by_a_variable() {
    let scratch = Scratch::new("config-env");
    let path = scratch.write(
        "proxy.toml",
        &format!("auth_type = \"trust\"\nlisten_port = 7777\n{DB}"),
    );
    let path = path.to_str().unwrap().to_owned();
    let env = |name: &str| (name == "POOL_PROXY_CONFIG").then(|| path.clone());
    let config = load([OsString::from("pool-proxy")], &env).unwrap();
    assert_eq!(config.listen_port, 7777);
}

#[test]
fn bad_flags_and_variables_are_named() {
    let flag = load_with("flag", None, &["--listen-port", "abc"], &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        flag,
        "flag --listen-port: listen_port: expected a whole number, found \"abc\""
    );
    let var = load_with(
        "var",
        None,
        &[
            "--auth-type",
            "trust",
            "--database",
            "app=postgres://a@h/app",
        ],
        &[("POOL_PROXY_DEFAULT_POOL_SIZE", "0")],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        var,
        "environment variable POOL_PROXY_DEFAULT_POOL_SIZE: default_pool_size: must be at least 1"
    );
    let db = load_with("db-flag", None, &["--database", "postgres://a@h/app"], &[]).unwrap_err();
    assert!(
        db.to_string()
            .starts_with("flag --database: databases: expected name=postgres://"),
        "{db}"
    );
    let db = load_with(
        "db-var",
        None,
        &["--auth-type", "trust"],
        &[("POOL_PROXY_DATABASES", "app=mysql://h")],
    )
    .unwrap_err();
    assert!(
        db.to_string()
            .starts_with("environment variable POOL_PROXY_DATABASES: databases.app: "),
        "{db}"
    );
    let unknown = load_with("unknown", None, &["--listen-prot", "1"], &[]).unwrap_err();
    assert!(
        matches!(&unknown, ConfigError::Usage(text) if text.contains("--listen-prot")),
        "{unknown}"
    );
    assert_eq!(unknown.exit_code(), 2);
    // The underscore spelling of a flag works too (PgBouncer's names).
    let config = load_with(
        "alias",
        None,
        &[
            "--auth_type",
            "trust",
            "--database",
            "app=postgres://a@h/app",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(config.auth_type, AuthMethod::Trust);
}

#[test]
fn no_database_is_an_error() {
    let err = load_with("nodb", Some("auth_type = \"trust\"\n"), &[], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "databases (by default): no database is configured: add a [databases] table to the \
         file (--config), --database name=postgres://..., or POOL_PROXY_DATABASES"
    );
}

#[test]
fn tls_is_offered_when_a_certificate_and_key_are_given_unless_told_otherwise() {
    let scratch = Scratch::new("tls");
    let cert = scratch.write("cert.pem", "not read yet");
    let key = scratch.write("key.pem", "not read yet");
    let flags = |extra: &[&str]| {
        let mut flags = vec![
            "pool-proxy".to_owned(),
            "--auth-type=trust".into(),
            "--database=app=postgres://a@h/app".into(),
            format!("--client-tls-cert-file={}", cert.display()),
            format!("--client-tls-key-file={}", key.display()),
        ];
        flags.extend(extra.iter().map(|s| s.to_string()));
        flags.into_iter().map(OsString::from)
    };
    let mode = |extra: &[&str]| load(flags(extra), &|_| None).unwrap().client_tls_sslmode;
    assert_eq!(mode(&[]), ClientTlsMode::Prefer);
    assert_eq!(
        mode(&["--client-tls-sslmode=disable"]),
        ClientTlsMode::Disable
    );
    assert_eq!(
        mode(&["--client-tls-sslmode=require"]),
        ClientTlsMode::Require
    );
    let missing = load(
        flags(&["--client-tls-key-file=/nonexistent/key.pem"]),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        missing.starts_with(
            "flag --client-tls-key-file: client_tls_key_file: cannot read /nonexistent/key.pem"
        ),
        "{missing}"
    );
}

#[test]
fn the_users_file_is_loaded_relative_to_the_config_file() {
    let scratch = Scratch::new("users");
    scratch.write(
        "users.txt",
        "; the users\n\"alice\" \"${ALICE_PASSWORD}\"\n\"bob\" \"md50123456789abcdef0123456789abcdef\"\n",
    );
    let config = scratch.write("proxy.toml", &format!("auth_file = \"users.txt\"\n{DB}"));
    let args = || {
        [
            "pool-proxy".into(),
            "--config".into(),
            config.clone().into_os_string(),
        ]
    };
    let env = |name: &str| (name == "ALICE_PASSWORD").then(|| "s3cret-user-pw".to_owned());
    let loaded = load(args(), &env).unwrap();
    assert_eq!(
        loaded.auth_file.as_deref(),
        Some(scratch.0.join("users.txt").as_path())
    );
    assert_eq!(loaded.users["alice"].password(), Some("s3cret-user-pw"));
    assert!(matches!(loaded.users["bob"], Secret::Md5(_)));
    let err = load(args(), &|_| None).unwrap_err().to_string();
    assert!(
        err.ends_with(
            "users.txt:2: user \"alice\": environment variable ALICE_PASSWORD is not set"
        ),
        "{err}"
    );

    let missing = scratch.write("missing.toml", &format!("auth_file = \"nope.txt\"\n{DB}"));
    let err = load(
        [
            "pool-proxy".into(),
            "--config".into(),
            missing.into_os_string(),
        ],
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("nope.txt: cannot read the users file (auth_file)"),
        "{err}"
    );
}

/// Neither `Debug` nor the listing shows a password, from a URL or the users file.
#[test]
fn no_password_is_shown() {
    let scratch = Scratch::new("redact");
    scratch.write("users.txt", "\"alice\" \"s3cret-user-pw\"\n");
    let file = format!(
        "auth_file = \"users.txt\"\n{DB}other = {{ url = \"postgres://o@h/o?password=s3cret-query-pw\", pool_size = 2 }}\n"
    );
    let path = scratch.write("proxy.toml", &file);
    let config = load(
        [
            "pool-proxy".into(),
            "--config".into(),
            path.into_os_string(),
        ],
        &|_| None,
    )
    .unwrap();
    assert_eq!(config.users["alice"].password(), Some("s3cret-user-pw"));
    let debug = format!("{config:?}");
    let listing = format!("{:?}", config.listing());
    for shown in [&debug, &listing] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }
    assert!(
        listing.contains(
            "(\"databases.app\", \"postgres://app:<redacted>@db.internal:5432/app (pool_size 20"
        ),
        "{listing}"
    );
    assert!(listing.contains("(\"users\", \"alice\")"), "{listing}");
    assert!(debug.contains("Secret::Password(<redacted>)"), "{debug}");
    assert_eq!(
        config.databases["app"].url.expose(),
        "postgres://app:s3cret-url-pw@db.internal:5432/app"
    );
}

#[test]
fn the_listing_shows_each_setting_as_it_would_be_written() {
    let config = load_with(
        "listing",
        Some(&format!("auth_type = \"trust\"\nadmin_users = [\"alice\", \"bob\"]\nidle_transaction_timeout = \"1.5s\"\n{DB}")),
        &[],
        &[],
    )
    .unwrap();
    let listing = config.listing();
    let value = |name: &str| {
        listing
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(value("admin_users"), Some("alice, bob"));
    assert_eq!(value("idle_transaction_timeout"), Some("1500ms"));
    assert_eq!(value("client_login_timeout"), Some("60s"));
    assert_eq!(value("auth_type"), Some("trust"));
    assert_eq!(value("auth_file"), Some(""));
    let names: Vec<_> = listing
        .iter()
        .take(SETTINGS.len())
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, SETTINGS.iter().map(|s| s.name).collect::<Vec<_>>());
}

/// `--help` lists exactly the settings' flags (and the few that are not settings), each
/// with its variable.
#[test]
fn help_lists_every_setting() {
    let help = match load_with("help", None, &["--help"], &[]) {
        Err(ConfigError::Help(text)) => text,
        other => panic!("--help gave {other:?}"),
    };
    assert_eq!(help, super::help());
    let flags: BTreeSet<&str> = help
        .lines()
        .filter(|line| line.trim_start().starts_with('-'))
        .filter_map(|line| line.split_once("--"))
        .filter_map(|(_, rest)| rest.split([' ', '=']).next())
        .collect();
    let mut expected: BTreeSet<String> =
        SETTINGS.iter().map(|s| s.flag()[2..].to_owned()).collect();
    expected.extend(["config", "check-config", "database", "help", "version"].map(String::from));
    assert_eq!(flags, expected.iter().map(String::as_str).collect());
    for setting in SETTINGS {
        let default = match (setting.default)() {
            text if text.is_empty() => "not set".to_owned(),
            text => text,
        };
        let tail = format!("[default: {default}] [env: {}]", setting.env());
        assert!(help.contains(&tail), "{}: no {tail:?}", setting.name);
        assert!(
            help.contains(&setting.paragraph()),
            "{}: no doc",
            setting.name
        );
    }
    assert!(
        help.contains("Value: one of transaction, session. [default: transaction]"),
        "{help}"
    );
    let short = match load_with("short-help", None, &["-h"], &[]) {
        Err(ConfigError::Help(text)) => text,
        other => panic!("-h gave {other:?}"),
    };
    assert!(
        short.contains("The TCP port to listen on [default: 6432]"),
        "{short}"
    );
}

#[test]
fn check_config_is_reported() {
    let scratch = Scratch::new("check");
    let path = scratch.write("proxy.toml", &format!("auth_type = \"trust\"\n{DB}"));
    let args = |check: bool| {
        let mut args: Vec<OsString> =
            vec!["pool-proxy".into(), "--config".into(), path.clone().into()];
        if check {
            args.push("--check-config".into());
        }
        args
    };
    assert!(load_invocation(args(true), &|_| None).unwrap().check_only);
    assert!(!load_invocation(args(false), &|_| None).unwrap().check_only);
}

#[test]
fn the_settings_map_onto_the_session_and_the_pool() {
    let file = format!(
        "auth_type = \"trust\"\nmax_packet_size = 65536\nsession_state = \"refuse\"\n\
         abandoned_transaction = \"close\"\nidle_transaction_timeout = 5\nquery_wait_timeout = 0\n\
         server_check_query = \"\"\nmax_client_conn = 7\nmin_pool_size = 1\n{DB}"
    );
    let config = load_with("mapping", Some(&file), &[], &[]).unwrap();
    let session = config.session_config();
    assert_eq!(session.max_client_message_len, 65536);
    assert_eq!(session.max_server_message_len, 65536);
    assert_eq!(session.on_session_state, StatePolicy::Refuse);
    assert_eq!(
        session.on_abandoned_transaction,
        AbandonedTransactionPolicy::Close
    );
    assert_eq!(
        session.idle_transaction_timeout,
        Some(Duration::from_secs(5))
    );
    let pool = config.pool_config(&config.databases["app"]);
    pool.validate().unwrap();
    assert_eq!(pool.max_size, 20);
    assert_eq!(pool.min_idle, 1);
    assert_eq!(pool.max_waiters, 7);
    assert_eq!(pool.acquire_timeout, pool_tokio::postgres::NO_TIMEOUT);
    assert_eq!(pool.connect_timeout, Duration::from_secs(15));
    assert_eq!(
        pool.check_after_idle, None,
        "empty server_check_query: no check"
    );
    assert_eq!(pool.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(pool.max_lifetime, Some(Duration::from_secs(3600)));

    let defaults = load_with(
        "mapping-defaults",
        Some(&format!("auth_type = \"trust\"\n{DB}")),
        &[],
        &[],
    )
    .unwrap();
    let pool = defaults.pool_config(&defaults.databases["app"]);
    assert_eq!(pool.acquire_timeout, Duration::from_secs(120));
    assert_eq!(pool.check_after_idle, Some(Duration::from_secs(30)));
    // The session's defaults, but the queue holds one largest message and a read.
    assert_eq!(
        defaults.session_config(),
        crate::session::SessionConfig {
            max_queued_bytes: 16 * 1024 * 1024 + 64 * 1024,
            ..crate::session::SessionConfig::default()
        }
    );
}

/// docs/proxy-settings.md has a row for every setting, and none for a setting that is
/// not in the list.
#[test]
fn the_settings_table_names_every_setting() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/proxy-settings.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let rows: BTreeSet<&str> = doc
        .lines()
        .skip_while(|line| *line != "## Settings")
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    let names: BTreeSet<&str> = SETTINGS.iter().map(|s| s.name).collect();
    assert_eq!(rows, names, "the table in {}", path.display());
}
