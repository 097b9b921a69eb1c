//! Reports: a scenario's runs and claim ([`Report`], serialized for `--json`), and the
//! text forms of runs and tables.

use std::fmt::Write as _;

use serde::Serialize;

use crate::world::RunResult;

/// The text form of a run lives here, with the tables; the run's data lives in `world`.
impl RunResult {
    pub fn rejections_text(&self) -> String {
        if self.rejections.is_empty() {
            return "none".into();
        }
        self.rejections
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The detailed text report of one run.
    pub fn detail(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "  [{}]", self.label);
        let _ = writeln!(
            w,
            "    database connections   peak {} / final {} (max_connections {}, peak server memory {} MB)",
            self.peak_db_connections,
            self.final_db_connections,
            self.max_connections,
            self.peak_server_mem_mb
        );
        let _ = writeln!(
            w,
            "    connects               {} made, {} failed",
            self.connects_ok, self.connects_failed
        );
        for (msg, n) in &self.connect_failures {
            let _ = writeln!(w, "      {n:>8} x {msg}");
        }
        let _ = writeln!(
            w,
            "    acquire wait           p50 {} ms, p99 {} ms, max {} ms ({} granted)",
            self.wait_p50_ms,
            self.wait_p99_ms,
            self.wait_max_ms,
            self.completed + self.query_errors
        );
        let _ = writeln!(
            w,
            "    requests               {} issued, {} queries ok, {} failed on a dead connection, {:.1}/s",
            self.requests, self.completed, self.query_errors, self.throughput_per_s
        );
        let _ = writeln!(w, "    rejections             {}", self.rejections_text());
        for (k, e) in &self.rejection_examples {
            let _ = writeln!(w, "      e.g. {k}: {e}");
        }
        if self.cancelled + self.leaked + self.leaks_suspected + self.half_opened > 0 {
            let _ = writeln!(
                w,
                "    client faults          {} cancelled ({} mid-query), {} leaked, {} leaks reported by the pool, {} backends went half-open ({} left)",
                self.cancelled,
                self.cancelled_mid_query,
                self.leaked,
                self.leaks_suspected,
                self.half_opened,
                self.half_open_left
            );
        }
        if !self.closes.is_empty() {
            let closes: Vec<String> = self
                .closes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(w, "    closes by reason       {}", closes.join(", "));
        }
        if let Some(d) = &self.drained {
            let _ = writeln!(
                w,
                "    drained                at {} ms, {} leases forced",
                d.at_ms, d.forced
            );
        }
        if let Some(a) = &self.abandoned {
            let _ = writeln!(
                w,
                "    abandoned queries      {} (slot busy at most {} ms; next borrower waits p99 {} ms, max {} ms; at most {} queries running at the server)",
                a.abandoned,
                a.slot_busy_max_ms,
                a.next_wait_p99_ms,
                a.next_wait_max_ms,
                a.peak_running_queries
            );
        }
        if let Some(t) = self.first_ok_after_faults_ms {
            let _ = writeln!(w, "    first query ok after the last fault window: {t} ms");
        }
        if let Some(rs) = &self.replicas {
            let by: Vec<String> = rs
                .reads_by_member
                .iter()
                .enumerate()
                .map(|(i, n)| match i {
                    0 => format!("primary {n}"),
                    i => format!("replica-{i} {n}"),
                })
                .collect();
            let _ = writeln!(
                w,
                "    replica set            {} reads ({}), {} writes; {} reads and {} writes failed",
                rs.reads(),
                by.join(", "),
                rs.writes,
                rs.reads_failed,
                rs.writes_failed
            );
            let _ = writeln!(
                w,
                "    read wait              p99 {} ms, max {} ms; {} hops timed out; {} stale reads",
                rs.read_wait_p99_ms, rs.read_wait_max_ms, rs.hops_timed_out, rs.stale_reads
            );
            for (i, (b, r)) in rs.benched_at_ms.iter().zip(&rs.restored_at_ms).enumerate() {
                if !b.is_empty() || !r.is_empty() {
                    let _ = writeln!(w, "      member {i}: benched at {b:?} ms, back at {r:?} ms");
                }
            }
            for m in &rs.members {
                let _ = writeln!(w, "      {m}");
            }
        }
        let _ = writeln!(
            w,
            "    pool at end            {} connections ({} idle, {} leased), {} waiting",
            self.final_pool_total,
            self.final_pool_idle,
            self.final_pool_leased,
            self.final_pool_waiters
        );
        let _ =
            writeln!(
            w,
            "    core                   {} inputs, {} actions, {} invariant checks, all passed{}",
            self.pool_inputs,
            self.pool_actions,
            self.invariant_checks,
            if self.error.is_some() { " until the failure" } else { "" }
        );
        if let Some(e) = &self.error {
            let _ = writeln!(w, "    FAILURE: {e}");
        }
        for l in &self.liveness {
            let _ = writeln!(w, "    LIVENESS: {l}");
        }
        s
    }
}

/// A scenario's report: its runs and its headline claim.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub summary: String,
    pub runs: Vec<RunResult>,
    pub claim: String,
    pub claim_holds: bool,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.claim_holds && self.runs.iter().all(|r| r.error.is_none())
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "scenario {} (seed {})", self.scenario, self.seed);
        let _ = writeln!(s, "  {}", self.summary);
        for r in &self.runs {
            s.push_str(&r.detail());
        }
        let _ = writeln!(
            s,
            "  claim: {} ... {}",
            self.claim,
            if self.claim_holds {
                "HOLDS"
            } else {
                "DOES NOT HOLD"
            }
        );
        s
    }
}

/// One summary table over several reports (the tour).
pub fn summary_table(reports: &[Report]) -> String {
    let header = [
        "scenario",
        "variant",
        "peak db",
        "final db",
        "connects ok/failed",
        "wait p99 ms",
        "rejected",
        "queries/s",
        "checks",
        "claim",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for rep in reports {
        for (i, r) in rep.runs.iter().enumerate() {
            rows.push(vec![
                if i == 0 {
                    rep.scenario.clone()
                } else {
                    String::new()
                },
                r.label.clone(),
                r.peak_db_connections.to_string(),
                r.final_db_connections.to_string(),
                format!("{}/{}", r.connects_ok, r.connects_failed),
                format!("{}", r.wait_p99_ms),
                r.rejected_total().to_string(),
                format!("{:.0}", r.throughput_per_s),
                r.invariant_checks.to_string(),
                if i + 1 == rep.runs.len() {
                    if rep.ok() {
                        "holds".into()
                    } else {
                        "FAILS".into()
                    }
                } else {
                    String::new()
                },
            ]);
        }
    }
    table(&header, &rows)
}

/// A plain text table, columns padded to their widest cell; numbers right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let numeric = i > 0 && c.chars().next().is_some_and(|ch| ch.is_ascii_digit());
            if i > 0 {
                out.push_str("  ");
            }
            if numeric {
                let _ = write!(out, "{c:>w$}");
            } else {
                let _ = write!(out, "{c:<w$}");
            }
        }
        s.push_str(out.trim_end());
        s.push('\n');
    };
    line(&mut s, header.to_vec());
    let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    s.push_str(&"-".repeat(total));
    s.push('\n');
    for r in rows {
        line(&mut s, r.iter().map(|c| c.as_str()).collect());
    }
    s
}
