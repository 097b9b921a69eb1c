//! The binary: determinism (byte-identical output for the same command and seed) and bad
//! input (a clear message naming the valid choices, exit status 2, no panic).

use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pool-sim"))
        .args(args)
        .output()
        .expect("run pool-sim")
}

fn twice_identical(args: &[&str]) -> String {
    let a = sim(args);
    let b = sim(args);
    assert_eq!(a.status.code(), b.status.code());
    assert_eq!(a.stdout, b.stdout, "{args:?}: output differs between runs");
    assert!(!a.stdout.is_empty());
    String::from_utf8(a.stdout).unwrap()
}

#[test]
fn same_command_same_bytes() {
    let tour = twice_identical(&[]);
    assert!(tour.contains("spike") && tour.contains("serverless"));
    assert!(!tour.contains("FAILS"), "{tour}");
    twice_identical(&["run", "cancel-storm", "--seed", "7"]);
    let json = twice_identical(&["run", "serverless", "--seed", "3", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["scenario"], "serverless");
    assert_eq!(v["runs"].as_array().unwrap().len(), 3);
    assert!(v["runs"][0]["wait_p99_ms"].is_number());
    twice_identical(&["swarm", "--seeds", "30", "--from", "100"]);
    twice_identical(&[
        "size",
        "--rate",
        "500",
        "--query-ms",
        "4",
        "--connect-ms",
        "30",
        "--p99-wait-ms",
        "5",
    ]);
}

#[test]
fn the_seed_matters() {
    let a = sim(&["run", "cancel-storm", "--seed", "1"]).stdout;
    let b = sim(&["run", "cancel-storm", "--seed", "2"]).stdout;
    assert_ne!(a, b);
}

fn bad(args: &[&str], must_mention: &[&str]) {
    let o = sim(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for m in must_mention {
        assert!(err.contains(m), "{args:?}: `{m}` not in: {err}");
    }
}

#[test]
fn bad_input_exits_2_with_the_valid_choices() {
    bad(
        &["run", "nope"],
        &[
            "invalid value 'nope'",
            "spike",
            "serverless",
            "close-under-load",
        ],
    );
    bad(
        &[
            "size",
            "--rate",
            "-5",
            "--query-ms",
            "2",
            "--connect-ms",
            "10",
            "--p99-wait-ms",
            "5",
        ],
        &["greater than zero"],
    );
    bad(
        &[
            "size",
            "--rate",
            "abc",
            "--query-ms",
            "2",
            "--connect-ms",
            "10",
            "--p99-wait-ms",
            "5",
        ],
        &["not a number"],
    );
    bad(&["run", "spike", "--seed", "x"], &["--seed"]);
    bad(&["swarm", "--seeds", "-1"], &["--seeds"]);
    bad(&["frobnicate"], &["run", "swarm", "size"]);
}

#[test]
fn run_writes_a_plot() {
    let dir = std::env::temp_dir().join(format!("pool-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spike.svg");
    let o = sim(&["run", "spike", "--plot", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let svg = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(svg.contains("<svg") && svg.contains("spike (seed 1)"));
}
