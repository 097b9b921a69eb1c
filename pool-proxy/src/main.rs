//! `pool-proxy --config proxy.toml`: loads the configuration (every setting also a flag
//! and an environment variable; `--help`), binds, serves until SIGTERM or SIGINT, then
//! drains (see `proxy.rs`). Exit codes: 0 after a clean shutdown or `--check-config`, 2
//! for a bad configuration, 1 when it cannot start (the port taken, a bad certificate).

use std::process::ExitCode;

use pool_proxy::config::{load_invocation, ConfigError};
use pool_proxy::Proxy;

fn main() -> ExitCode {
    let invocation = match load_invocation(std::env::args_os(), &|name| std::env::var(name).ok()) {
        Ok(invocation) => invocation,
        Err(ConfigError::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pool-proxy: {e}");
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    if invocation.check_only {
        println!("config ok");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if invocation.config.worker_threads > 0 {
        builder.worker_threads(invocation.config.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pool-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let proxy = match Proxy::bind(invocation.config).await {
            Ok(proxy) => proxy,
            Err(e) => {
                eprintln!("pool-proxy: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Scripts and tests read the address (the port may be 0: any free one).
        println!("listening on {}", proxy.local_addr());
        if let Some(addr) = proxy.metrics_addr() {
            println!("metrics on http://{addr}/metrics");
        }
        let handle = proxy.handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            handle.shutdown();
        });
        proxy.run().await;
        ExitCode::SUCCESS
    })
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
