//! `pool-proxy`: for now, loads and checks its configuration (`--check-config`), and says
//! so. The network layer is not built yet.

use std::process::ExitCode;

use pool_proxy::config::{load_invocation, ConfigError};

fn main() -> ExitCode {
    match load_invocation(std::env::args_os(), &|name| std::env::var(name).ok()) {
        Ok(invocation) => {
            println!("config ok");
            if invocation.check_only {
                return ExitCode::SUCCESS;
            }
            // The listener comes here.
            ExitCode::SUCCESS
        }
        Err(ConfigError::Help(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pool-proxy: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
        }
    }
}
