//! Issue 13's targets ("Ahead of PgBouncer"), each checked against this invocation's rows:
//! pool-proxy's TPS at least PgBouncer's in every row PgBouncer can run, its p99 no worse,
//! `-M prepared` with no aborted client and faster than `-M simple`, `-C` at least
//! PgBouncer's and at least 0.8× the login cap, and at most twice PgBouncer's memory per
//! idle client.

use super::{peer, Cell, Mode, Outcome, Row, Target};
use crate::idle_clients::IdleMemory;
use crate::stats::{self, ratio};

/// `-C` through pool-proxy must reach this share of the login cap.
const LOGIN_CAP_SHARE: f64 = 0.8;
/// pool-proxy's memory per idle client may be at most this multiple of PgBouncer's.
const IDLE_MEMORY_MULTIPLE: f64 = 2.0;

/// One target: what it asks, what was measured, whether it is met (`None`: could not be
/// judged, the measured text says why).
struct Verdict {
    target: String,
    measured: String,
    met: Option<bool>,
}

fn verdict(target: impl Into<String>, measured: impl Into<String>, met: Option<bool>) -> Verdict {
    Verdict {
        target: target.into(),
        measured: measured.into(),
        met,
    }
}

/// pool-proxy's row in the cell `matches` picks.
fn proxy_row(rows: &[Row], matches: impl Fn(Cell) -> bool) -> Option<&Row> {
    rows.iter()
        .find(|r| r.target == Target::PoolProxy && matches(r.cell))
}

/// pool-proxy against PgBouncer in every cell both ran and PgBouncer kept all its clients.
fn against_bouncer(rows: &[Row], out: &mut Vec<Verdict>) {
    for row in rows.iter().filter(|r| r.target == Target::PoolProxy) {
        let name = row.cell.name();
        let Some(bouncer) = peer(rows, row, Target::PgBouncer).filter(|b| b.aborted == 0) else {
            continue;
        };
        let o = &row.outcome;
        if let Some(e) = &o.error {
            out.push(verdict(
                format!("TPS ≥ PgBouncer, {name}"),
                e.clone(),
                Some(false),
            ));
            continue;
        }
        out.push(verdict(
            format!("TPS ≥ PgBouncer, {name}"),
            format!(
                "{:.0} vs {:.0} ({})",
                o.tps,
                bouncer.tps,
                ratio(o.tps, bouncer.tps)
            ),
            Some(o.tps >= bouncer.tps),
        ));
        out.push(verdict(
            format!("p99 ≤ PgBouncer's, {name}"),
            format!(
                "{} vs {} ({})",
                stats::fmt_ns(o.p99_ns),
                stats::fmt_ns(bouncer.p99_ns),
                ratio(o.p99_ns as f64, bouncer.p99_ns as f64)
            ),
            Some(o.p99_ns <= bouncer.p99_ns),
        ));
    }
}

fn prepared(rows: &[Row], out: &mut Vec<Verdict>) {
    let Some(prep) = proxy_row(rows, |c| c.mode == Mode::Prepared) else {
        return;
    };
    let p = &prep.outcome;
    let bouncer = peer(rows, prep, Target::PgBouncer).map_or(String::new(), |b| {
        format!(
            " (PgBouncer: {} of {} aborted)",
            b.aborted, prep.cell.clients
        )
    });
    match &p.error {
        Some(e) => out.push(verdict(
            "-M prepared: no aborted client",
            e.clone(),
            Some(false),
        )),
        None => out.push(verdict(
            "-M prepared: no aborted client",
            format!("{} of {} aborted{bouncer}", p.aborted, prep.cell.clients),
            Some(p.aborted == 0),
        )),
    }
    let simple = proxy_row(rows, |c| {
        c.mode == Mode::Simple && c.clients == prep.cell.clients && !c.connect_each && !c.login_cap
    });
    let target = format!(
        "-M prepared faster than -M simple through pool-proxy, -c {}",
        prep.cell.clients
    );
    match simple.map(|r| &r.outcome).filter(|s| s.error.is_none()) {
        Some(s) if p.error.is_none() => out.push(verdict(
            target,
            format!("{:.0} vs {:.0} ({})", p.tps, s.tps, ratio(p.tps, s.tps)),
            Some(p.tps > s.tps && p.aborted == 0),
        )),
        _ => out.push(verdict(target, "a run failed", None)),
    }
}

fn connect_each(rows: &[Row], out: &mut Vec<Verdict>) {
    let cap = proxy_row(rows, |c| c.login_cap).map(|r| &r.outcome);
    let cap = cap.filter(|o| o.error.is_none());
    for row in rows
        .iter()
        .filter(|r| r.target == Target::PoolProxy && r.cell.connect_each && !r.cell.login_cap)
    {
        let name = row.cell.name();
        let o: &Outcome = &row.outcome;
        if o.error.is_some() {
            continue;
        }
        if let Some(b) = peer(rows, row, Target::PgBouncer) {
            out.push(verdict(
                format!("-C ≥ PgBouncer, {name}"),
                format!("{:.0} vs {:.0} ({})", o.tps, b.tps, ratio(o.tps, b.tps)),
                Some(o.tps >= b.tps),
            ));
        }
        match cap {
            Some(c) => out.push(verdict(
                format!("-C ≥ {LOGIN_CAP_SHARE}× the login cap, {name}"),
                format!("{:.0} vs cap {:.0} ({})", o.tps, c.tps, ratio(o.tps, c.tps)),
                Some(o.tps >= LOGIN_CAP_SHARE * c.tps),
            )),
            None => out.push(verdict(
                format!("-C ≥ {LOGIN_CAP_SHARE}× the login cap, {name}"),
                "the login-cap run failed",
                None,
            )),
        }
    }
}

fn idle_memory(idle: &[(Target, Result<IdleMemory, String>)], out: &mut Vec<Verdict>) {
    let per = |t: Target| {
        idle.iter()
            .find(|(target, _)| *target == t)
            .and_then(|(_, r)| r.as_ref().ok())
            .and_then(IdleMemory::per_client)
    };
    let target = format!("memory per idle client ≤ {IDLE_MEMORY_MULTIPLE}× PgBouncer's");
    match (per(Target::PoolProxy), per(Target::PgBouncer)) {
        (Some(p), Some(b)) => out.push(verdict(
            target,
            format!(
                "{:.2} KiB vs {:.2} KiB ({})",
                p / 1024.0,
                b / 1024.0,
                ratio(p, b)
            ),
            Some(p <= IDLE_MEMORY_MULTIPLE * b),
        )),
        _ => out.push(verdict(target, "a measurement failed", None)),
    }
}

/// Prints the targets table.
pub(super) fn print(rows: &[Row], idle: &[(Target, Result<IdleMemory, String>)]) {
    let mut out = Vec::new();
    against_bouncer(rows, &mut out);
    prepared(rows, &mut out);
    connect_each(rows, &mut out);
    idle_memory(idle, &mut out);
    let met = out.iter().filter(|v| v.met == Some(true)).count();
    println!(
        "Issue 13 targets (pool-proxy), {met} of {} met:\n",
        out.len()
    );
    println!("| target | pool-proxy vs reference | met |");
    println!("|---|---|---|");
    for v in out {
        let met = match v.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a",
        };
        println!("| {} | {} | {met} |", v.target, v.measured);
    }
    println!();
}
