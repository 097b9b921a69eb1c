//! The `pool-proxy` binary as an operator runs it: a bad configuration is reported on
//! stderr with its file, line and key, and exit status 2; a good one with `--check-config`
//! says "config ok" and exits 0. The child gets an empty environment, so nothing from the
//! test's own (a stray `POOL_PROXY_*`) changes the outcome.

use std::path::PathBuf;
use std::process::Command;

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pool-proxy-binary-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_pool-proxy"))
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn a_bad_config_exits_2_naming_the_file_line_and_key() {
    let dir = scratch("bad");
    let path = dir.join("proxy.toml");
    std::fs::write(
        &path,
        "auth_type = \"trust\"\ndefault_pool_size = 0\n\n[databases]\napp = \"postgres://app:s3cret@db/app\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["--config", path.to_str().unwrap(), "--check-config"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stderr,
        format!(
            "pool-proxy: {}:2: default_pool_size: must be at least 1\n",
            path.display()
        )
    );
    assert_eq!(stdout, "");
}

#[test]
fn a_good_config_is_checked_and_exits_0() {
    let dir = scratch("good");
    let path = dir.join("proxy.toml");
    std::fs::write(
        &path,
        "auth_type = \"trust\"\n[databases]\napp = \"postgres://app:s3cret@db/app\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["--config", path.to_str().unwrap(), "--check-config"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (Some(0), "config ok\n", "")
    );
}

#[test]
fn help_exits_0_and_a_bad_flag_exits_2() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("--default-pool-size"), "{stdout}");
    let (code, _, stderr) = run(&["--default-pool-size"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--default-pool-size"), "{stderr}");
}
