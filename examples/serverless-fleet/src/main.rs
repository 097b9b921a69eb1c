//! `cargo run --release -p serverless-fleet -- [--instances N] [--requests N] [--work-ms N]
//! [--max-connections N] [--pool-size N] [--proxy-bin PATH]`
//!
//! Starts a throwaway PostgreSQL, runs the fleet straight at it and then through the
//! pool-proxy binary, and prints the two side by side (see the library's docs). The
//! binary is `--proxy-bin`, else `$POOL_PROXY_BIN`, else this workspace's, built in release
//! mode with cargo. Exit status 0 when both runs completed (whatever they saw), 1 when
//! something could not start, 2 for a bad argument.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serverless_fleet::Demo;

const USAGE: &str = "usage: serverless-fleet [--instances N] [--requests N] [--work-ms N] \
[--max-connections N] [--pool-size N] [--proxy-bin PATH]

  --instances N        instances started at once (default 200)
  --requests N         requests per instance, one after another (default 3)
  --work-ms N          database time per request, pg_sleep on the server (default 20)
  --max-connections N  PostgreSQL's max_connections (default 20; 3 are the superusers')
  --pool-size N        pool-proxy's default_pool_size (default 10)
  --proxy-bin PATH     the pool-proxy binary (default: $POOL_PROXY_BIN, else built with
                       `cargo build --release -p pool-proxy`)";

fn parse(args: impl Iterator<Item = String>) -> Result<(Demo, Option<PathBuf>), String> {
    let mut demo = Demo::default();
    let mut proxy_bin = None;
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number =
            || {
                value.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("{flag}: expected a whole number above 0, got {value:?}")
                })
            };
        match flag.as_str() {
            "--instances" => demo.fleet.instances = number()? as usize,
            "--requests" => demo.fleet.requests_per_instance = number()? as usize,
            "--work-ms" => demo.fleet.work = Duration::from_millis(u64::from(number()?)),
            "--max-connections" => {
                demo.max_connections = number()?;
                if demo.max_connections < 5 {
                    return Err(
                        "--max-connections: at least 5 (3 are reserved for superusers)".into(),
                    );
                }
            }
            "--pool-size" => demo.pool_size = number()?,
            "--proxy-bin" => proxy_bin = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok((demo, proxy_bin))
}

fn main() -> ExitCode {
    let (demo, proxy_bin) = match parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) if e.is_empty() => {
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("serverless-fleet: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let binary = match proxy_bin.map_or_else(pg_harness::pool_proxy_binary, Ok) {
        Ok(binary) => binary,
        Err(e) => {
            eprintln!("serverless-fleet: no pool-proxy binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("serverless-fleet: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serverless_fleet::run(&binary, &demo)) {
        Ok(comparison) => {
            // Not print!: a closed pipe (`| head`) is not worth a panic.
            let _ = write!(std::io::stdout(), "{}", comparison.table());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("serverless-fleet: {e}");
            ExitCode::FAILURE
        }
    }
}
