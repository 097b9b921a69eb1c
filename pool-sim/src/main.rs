//! `pool-sim`: see `pool-sim --help` and docs/simulator.md.

fn main() {
    let cli = pool_sim::cli::parse_or_exit();
    std::process::exit(pool_sim::cli::main_with(cli));
}
