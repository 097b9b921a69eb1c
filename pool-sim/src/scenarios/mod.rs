//! The built-in scenarios: each sets up one or more runs, and states a headline claim that
//! its numbers must bear out (the tests check every claim). The scenarios themselves are
//! grouped by what goes wrong: the load (`load`), the database (`database`), the clients
//! (`clients`), a read replica (`replicas`).

mod clients;
mod database;
mod load;
mod replicas;

use std::time::Duration;

use crate::report::Report;
use crate::world::{RunResult, Setup, Sim};

/// A claim's sentence, with the run's numbers in it, and whether the numbers bear it out.
type Claim = fn(&[RunResult]) -> (String, bool);

/// One built-in scenario.
pub struct Scenario {
    pub name: &'static str,
    /// One line, for `list` and the top of the report.
    pub summary: &'static str,
    /// The runs, in order, and the claim over their results.
    pub build: fn() -> (Vec<Setup>, Claim),
}

/// Every built-in scenario, in tour order. The CLI's choices and the tour come from here.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "spike",
        summary: "HikariCP's spike: 50 requests at once, 150 ms connects, 2 ms queries, min idle 5, max 50",
        build: load::spike,
    },
    Scenario {
        name: "serverless",
        summary: "2,000 req/s from 50 short-lived instances: (a) connection per request, (b) pool per instance, (c) one shared external pool",
        build: load::serverless,
    },
    Scenario {
        name: "db-restart",
        summary: "the database restarts under load: every connection killed, connects refused for 2 s",
        build: database::db_restart,
    },
    Scenario {
        name: "db-down-at-start",
        summary: "the database is down for the first 3 s: timeouts must say why",
        build: database::db_down_at_start,
    },
    Scenario {
        name: "half-open",
        summary: "4 connections silently stop answering (half-open sockets)",
        build: database::half_open,
    },
    Scenario {
        name: "cancel-storm",
        summary: "half of all requests are cancelled at random points, including mid-query",
        build: clients::cancel_storm,
    },
    Scenario {
        name: "leak",
        summary: "a few borrowers never give their connection back",
        build: clients::leak,
    },
    Scenario {
        name: "close-under-load",
        summary: "the pool is closed under load with a 2 s drain window",
        build: clients::close_under_load,
    },
    Scenario {
        name: "auth-fail",
        summary: "the password is wrong and stays wrong: fail fast with the real cause",
        build: database::auth_fail,
    },
    Scenario {
        name: "slow-paths",
        summary: "connects slow past connect_timeout for 3 s while connections expire; 20% of releases take 300 ms",
        build: database::slow_paths,
    },
    Scenario {
        name: "slow-close",
        summary: "closes take 800 ms for 6 s while connections expire: max_size still caps what the server sees",
        build: database::slow_close,
    },
    Scenario {
        name: "abandoned-query",
        summary: "requests time out at 100 ms on slow queries still running at the server: the reset cancels them, the next borrower is served at once",
        build: clients::abandoned_query,
    },
    Scenario {
        name: "replica-down",
        summary: "a primary and 2 read replicas: replica-1 is killed at 4 s and restarts at 7 s under read load",
        build: replicas::replica_down,
    },
    Scenario {
        name: "replica-lag",
        summary: "a primary and 2 read replicas: replica-1's replay pauses for 4 s while the primary writes",
        build: replicas::replica_lag,
    },
];

pub fn names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|sc| sc.name).collect()
}

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|sc| sc.name == name)
}

fn s(x: u64) -> Duration {
    Duration::from_secs(x)
}
fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

/// Run a built-in scenario. `Err` names the valid scenarios.
pub fn run(name: &str, seed: u64, timeline: bool) -> Result<Report, String> {
    let Some(scenario) = find(name) else {
        return Err(format!(
            "unknown scenario `{name}`; valid scenarios: {}",
            names().join(", ")
        ));
    };
    let (setups, claim) = (scenario.build)();
    let mut runs = Vec::new();
    for (i, mut st) in setups.into_iter().enumerate() {
        st.timeline = timeline;
        let sim = Sim::new(st, seed.wrapping_add(i as u64 * 0x1000_0000))?;
        runs.push(sim.run());
    }
    let (claim, claim_holds) = claim(&runs);
    Ok(Report {
        scenario: name.to_string(),
        seed,
        summary: scenario.summary.to_string(),
        runs,
        claim,
        claim_holds,
    })
}
