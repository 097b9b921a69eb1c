#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! The example service (`examples/users-service`) on 127.0.0.1:0 against a real
//! PostgreSQL, driven over real HTTP.

mod pg_common;

use std::time::Duration;

use pg_common::*;
use pg_harness::Backends;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_service_over_http() {
    let _watchdog = watchdog("users_service_over_http", Duration::from_secs(120));
    let cluster = cluster(10);
    let app = "users-service-test";
    let pool = users_service::pool_from_url(&url_for(&cluster.url(), app, "&connection_limit=3"))
        .expect("pool from DATABASE_URL");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(users_service::serve(listener, pool.clone()));
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .unwrap();

    // Create (the server creates its table on startup; retry until it listens).
    let body = json!({"name": "Ada Lovelace", "email": "ada@example.org"});
    let created = within(Duration::from_secs(20), "first POST", async {
        loop {
            match http.post(format!("{base}/users")).json(&body).send().await {
                Ok(r) => break r,
                Err(e) if e.is_connect() => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("POST /users: {e}"),
            }
        }
    })
    .await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let user: Value = created.json().await.unwrap();
    let id = user["id"].as_i64().expect("an id");
    assert_eq!(location, format!("/users/{id}"));
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["email"], "ada@example.org");

    // Read it back over HTTP, and see it really is in PostgreSQL.
    let got = http.get(format!("{base}/users/{id}")).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.json::<Value>().await.unwrap(), user);
    let client = pool.get().await.unwrap();
    let rows = client
        .query_typed(
            "SELECT name FROM users WHERE id = $1",
            &[(&id, tokio_postgres::types::Type::INT8)],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "Ada Lovelace");
    drop(client);

    // Missing: 404 with a reason.
    let missing = http
        .get(format!("{base}/users/{}", id + 1000))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let reason: Value = missing.json().await.unwrap();
    assert!(
        reason["error"].as_str().unwrap().contains("no user"),
        "{reason}"
    );

    // Bad input: 400 with a reason each time.
    for (body, content_type, expect) in [
        ("{\"name\": \"x\",", "application/json", "invalid JSON"),
        ("not json at all", "text/plain", "invalid JSON"),
        (
            "{\"email\": \"a@b.c\"}",
            "application/json",
            "missing field `name`",
        ),
        (
            "{\"name\": \"Bob\"}",
            "application/json",
            "missing field `email`",
        ),
        (
            "{\"name\": \"Bob\", \"email\": \"not-an-email\"}",
            "application/json",
            "not a valid email",
        ),
        (
            "{\"name\": 42, \"email\": \"a@b.c\"}",
            "application/json",
            "must be a string",
        ),
        ("[]", "application/json", "JSON object"),
    ] {
        let r = http
            .post(format!("{base}/users"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let reason: Value = r.json().await.unwrap();
        let text = reason["error"].as_str().expect("an error reason");
        assert!(text.contains(expect), "{body}: {text}");
    }
    let r = http.get(format!("{base}/users/abc")).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // The same email twice: 409.
    let dup = http
        .post(format!("{base}/users"))
        .json(&json!({"name": "Ada again", "email": "ada@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);

    // Concurrent requests share the pool's 3 connections.
    let posts = (0..20).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .post(format!("{base}/users"))
                .json(&json!({"name": format!("user {i}"), "email": format!("u{i}@example.org")}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    });
    let statuses = within(
        Duration::from_secs(60),
        "20 concurrent POSTs",
        futures::future::join_all(posts),
    )
    .await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert!(cluster.admin().count(&Backends::app(app)).await.unwrap() <= 3);

    // Metrics: the pool's snapshot as JSON.
    let metrics: Value = http
        .get(format!("{base}/metrics.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metrics["max_size"], 3);
    // Schema + 2 creates (one a conflict) + 1 read + 1 miss + the test's own + 20 creates.
    assert!(metrics["grants"].as_u64().unwrap() >= 26, "{metrics}");
    assert!(metrics["total"].as_u64().unwrap() <= 3, "{metrics}");
    assert!(
        metrics["wait"]["count"].as_u64().unwrap() >= 26,
        "{metrics}"
    );

    // Metrics for Prometheus: OpenTelemetry's connection-pool series, labelled with the
    // pool's name, parsed as a Prometheus server would.
    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text");
    let ours = |name: &str| -> Vec<&prometheus_parse::Sample> {
        scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == name
                    && s.labels.get("db_client_connection_pool_name") == Some("users-service")
            })
            .collect()
    };
    let gauge = |name: &str, state: Option<&str>| -> f64 {
        let samples = ours(name);
        let sample = samples
            .iter()
            .find(|s| s.labels.get("db_client_connection_state") == state)
            .unwrap_or_else(|| panic!("no {name} {state:?} in:\n{text}"));
        match sample.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    let idle = gauge("db_client_connection_count", Some("idle"));
    let used = gauge("db_client_connection_count", Some("used"));
    assert!(idle + used >= 1.0 && idle + used <= 3.0, "{idle} + {used}");
    assert_eq!(gauge("db_client_connection_max", None), 3.0);
    assert_eq!(gauge("db_client_connection_idle_min", None), 0.0);
    assert_eq!(gauge("db_client_connection_pending_requests", None), 0.0);
    assert_eq!(gauge("db_client_connection_timeouts", None), 0.0);
    for (name, at_least) in [
        ("db_client_connection_create_time", 1),
        ("db_client_connection_wait_time", 26),
        ("db_client_connection_use_time", 25),
    ] {
        let samples = ours(name);
        let histogram = samples
            .iter()
            .find_map(|s| match &s.value {
                prometheus_parse::Value::Histogram(buckets) => Some(buckets),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {name} histogram in:\n{text}"));
        let total = histogram
            .iter()
            .find(|b| b.less_than.is_infinite())
            .expect("a +Inf bucket")
            .count;
        assert!(total >= f64::from(at_least), "{name}: {total} in:\n{text}");
        assert!(
            histogram
                .iter()
                .all(|b| b.less_than.is_infinite() || b.less_than <= 30.0),
            "{name}: buckets in seconds"
        );
    }

    // Ready while the database serves.
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ready");

    server.abort();
    let _ = server.await;
}

/// Against a database that is not there: `/healthz` answers 503 naming the refused
/// connect, and the start-up wait gives up after its bound with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_service_without_a_database() {
    let _watchdog = watchdog("users_service_without_a_database", Duration::from_secs(60));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgresql://app:hunter2@127.0.0.1:{port}/app?sslmode=disable&min_idle=1");
    // Its own name: the process's metrics recorder is shared with the other test.
    let pool = users_service::pool_named(&url, "users-service-down").unwrap();
    let started = std::time::Instant::now();
    let reason = users_service::wait_for_database(&pool, Duration::from_secs(1))
        .await
        .expect_err("no database");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(reason.contains("not reachable within 1s"), "{reason}");
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
    assert!(!reason.contains("hunter2"), "{reason}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, users_service::app(pool)).await });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .unwrap();
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("not ready"), "{error}");
    assert!(error.contains("last connect error"), "{error}");
    assert!(error.to_lowercase().contains("refused"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
    server.abort();
}

/// With a primary and a hot standby (real streaming replication): `POST /users`, the
/// write route, runs on the primary and `GET /users/{id}`, the read route, on the
/// standby: while the standby's replay is paused a new user is not there yet (404), and
/// it is once the replay resumes. The metrics carry each member's pool and the set's
/// series labelled by member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_service_reads_from_a_standby_and_writes_on_the_primary() {
    let _watchdog = watchdog(
        "users_service_reads_from_a_standby",
        Duration::from_secs(60),
    );
    let primary =
        pg_harness::PgCluster::start_async(pg_harness::PgOptions::default().replication())
            .await
            .expect("primary");
    let standby = primary.start_standby_async().await.expect("standby");
    let app = "users-service-rr";
    let set = users_service::replicas_from_urls(
        &url_for(&primary.url(), app, "&connection_limit=3"),
        &[&url_for(&standby.url(), app, "&connection_limit=3")],
    )
    .expect("replica set");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(users_service::serve(listener, set.clone()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .unwrap();
    let post = |email: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = json!({"name": "Grace", "email": email});
            within(Duration::from_secs(20), "POST", async {
                loop {
                    match http.post(format!("{base}/users")).json(&body).send().await {
                        Ok(r) => break r,
                        Err(e) if e.is_connect() => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(e) => panic!("POST /users: {e}"),
                    }
                }
            })
            .await
        }
    };
    let created = post("grace@example.org").await;
    assert_eq!(created.status(), 201);
    let first: Value = created.json().await.unwrap();
    let (standby_admin, primary_admin) = (standby.admin(), primary.admin());
    let replayed = || standby_admin.wait_for_replay(&primary_admin, Duration::from_secs(10));
    replayed().await.unwrap();
    let got = http
        .get(format!("{base}/users/{}", first["id"]))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.json::<Value>().await.unwrap(), first);

    // The standby stops replaying: the next user is on the primary only.
    standby.admin().pause_replay().await.unwrap();
    let second: Value = post("grace.h@example.org").await.json().await.unwrap();
    let missing = http
        .get(format!("{base}/users/{}", second["id"]))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "the read route ran on the standby");
    standby.admin().resume_replay().await.unwrap();
    replayed().await.unwrap();
    let found = http
        .get(format!("{base}/users/{}", second["id"]))
        .send()
        .await
        .unwrap();
    assert_eq!(found.status(), 200);
    let members = set.members();
    assert!(members[1].member.counters.reads >= 3, "{}", members[1]);
    assert_eq!(members[0].member.counters.fallback_reads, 0);
    assert!(members[0].member.counters.writes >= 2);

    // Metrics: each member's pool by name, and the set's series labelled by member.
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |metric: &str, pool: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == metric && s.labels.get("db_client_connection_pool_name") == Some(pool)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {metric} for {pool} in:\n{text}"))
    };
    assert_eq!(
        value("db_client_connection_max", "users-service.primary"),
        3.0
    );
    assert_eq!(
        value("db_client_connection_max", "users-service.replica-1"),
        3.0
    );
    assert_eq!(
        value("pool_replica_in_service", "users-service.replica-1"),
        1.0
    );
    assert!(value("pool_replica_reads", "users-service.replica-1") >= 3.0);
    assert!(value("pool_replica_writes", "users-service.primary") >= 2.0);
    assert!(value("pool_replica_lag", "users-service.replica-1") >= 0.0);
    let role = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "pool_replica_in_service"
                && s.labels.get("db_client_connection_pool_name") == Some("users-service.replica-1")
        })
        .and_then(|s| s.labels.get("pool_replica_role").map(str::to_owned));
    assert_eq!(role.as_deref(), Some("replica"));

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["members"].as_array().unwrap().len(), 2);
    server.abort();
    let _ = server.await;
    set.close(Duration::from_secs(1)).await;
}
