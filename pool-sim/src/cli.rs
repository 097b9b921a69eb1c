//! The command line. Bad input is reported by clap with the valid choices and exit
//! status 2; nothing here panics on user input.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

use crate::report::{summary_table, Report};
use crate::scenarios;

#[derive(Parser, Debug)]
#[command(
    name = "pool-sim",
    about = "Deterministic simulator for the pool-core connection pool: a virtual clock, a simulated PostgreSQL and simulated clients. With no arguments: a tour of the headline scenarios."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one built-in scenario and print its report.
    Run {
        /// The scenario.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(scenarios::names()))]
        scenario: String,
        /// Seed of the random generator (same seed, same output).
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        seed: u64,
        /// Write an SVG plot of connections and waiters over virtual time.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<std::path::PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Random configurations, workloads and faults per seed: a safety phase with faults,
    /// then a liveness phase without.
    Swarm {
        /// How many seeds.
        #[arg(long, default_value_t = 1000, allow_negative_numbers = true)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        from: u64,
        /// Print one line per seed.
        #[arg(long)]
        verbose: bool,
    },
    /// Search pool sizes in simulation; recommend the smallest meeting a p99 wait target.
    Size {
        /// Arrival rate, requests per second (open loop, Poisson).
        #[arg(long, value_parser = positive_f64, allow_negative_numbers = true)]
        rate: f64,
        /// Mean query time in milliseconds.
        #[arg(long, value_parser = positive_f64, allow_negative_numbers = true)]
        query_ms: f64,
        /// Mean connect time in milliseconds.
        #[arg(long, value_parser = positive_f64, allow_negative_numbers = true)]
        connect_ms: f64,
        /// Target 99th percentile of acquire wait, in milliseconds.
        #[arg(long, value_parser = positive_f64, allow_negative_numbers = true)]
        p99_wait_ms: f64,
        /// Seed of the random generator.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        seed: u64,
        /// Largest pool size to try.
        #[arg(long, default_value_t = 200, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        max_size: u64,
    },
    /// List the built-in scenarios.
    List,
}

/// Parse the process arguments; on bad input print clap's message (plus the valid
/// commands, which clap omits for an unknown subcommand) and exit with status 2.
pub fn parse_or_exit() -> Cli {
    match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidSubcommand => {
            eprint!("{}", e.render());
            eprintln!("valid commands: run, swarm, size, list (or no command for the tour)");
            std::process::exit(2);
        }
        Err(e) => e.exit(),
    }
}

/// A number that is finite and greater than zero.
fn positive_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number (expected e.g. 250 or 2.5)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("`{s}` must be a finite number greater than zero"));
    }
    Ok(v)
}

/// The tour: every scenario at seed 1, one summary table and the claims.
pub fn tour() -> (String, bool) {
    let mut reports: Vec<Report> = Vec::new();
    for name in scenarios::names() {
        match scenarios::run(name, 1, false) {
            Ok(r) => reports.push(r),
            Err(e) => return (format!("error: {e}\n"), false),
        }
    }
    let mut out = String::new();
    out.push_str("pool-sim: the real pool-core state machine against a simulated PostgreSQL, on a virtual clock (seed 1).\n\n");
    out.push_str(&summary_table(&reports));
    out.push('\n');
    let mut ok = true;
    for r in &reports {
        ok &= r.ok();
        out.push_str(&format!(
            "{:<17} {} [{}]\n",
            r.scenario,
            r.claim,
            if r.ok() { "holds" } else { "FAILS" }
        ));
    }
    out.push_str("\nMore: pool-sim run <scenario> [--seed N] [--plot FILE.svg] [--json] | pool-sim swarm --seeds N | pool-sim size --help\n");
    (out, ok)
}

/// Run the command line; returns the exit code.
pub fn main_with(cli: Cli) -> i32 {
    match cli.command {
        None => {
            let (out, ok) = tour();
            print!("{out}");
            if ok {
                0
            } else {
                1
            }
        }
        Some(Command::List) => {
            for sc in scenarios::SCENARIOS {
                println!("{:<17} {}", sc.name, sc.summary);
            }
            0
        }
        Some(Command::Run {
            scenario,
            seed,
            plot,
            json,
        }) => {
            let report = match scenarios::run(&scenario, seed, plot.is_some()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 2;
                }
            };
            if let Some(path) = &plot {
                if let Err(e) = crate::plot::write_svg(&report, path) {
                    eprintln!("error: cannot write plot {}: {e}", path.display());
                    return 1;
                }
            }
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return 1;
                    }
                }
            } else {
                print!("{}", report.text());
                if let Some(path) = &plot {
                    println!("plot written to {}", path.display());
                }
            }
            if report.ok() {
                0
            } else {
                1
            }
        }
        Some(Command::Swarm {
            seeds,
            from,
            verbose,
        }) => {
            let progress = std::io::stderr().is_terminal();
            let summary = crate::swarm::run_range(from, seeds, progress, verbose);
            print!("{}", summary.text());
            if summary.failures.is_empty() {
                0
            } else {
                1
            }
        }
        Some(Command::Size {
            rate,
            query_ms,
            connect_ms,
            p99_wait_ms,
            seed,
            max_size,
        }) => {
            let r = crate::size::search(&crate::size::SizeQuery {
                rate,
                query_ms,
                connect_ms,
                p99_wait_ms,
                seed,
                max_size: max_size as usize,
            });
            print!("{}", r.text());
            if r.recommended.is_some() {
                0
            } else {
                1
            }
        }
    }
}
