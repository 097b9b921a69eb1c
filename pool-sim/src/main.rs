//! `pool-sim`: see `pool-sim --help` and docs/simulator.md.

use clap::Parser;

fn main() {
    let cli = pool_sim::cli::Cli::parse();
    std::process::exit(pool_sim::cli::main_with(cli));
}
