//! What can happen in a run, and which concern handles each event.

use pool_core::{ConnId, LeaseId, Verdict};

use crate::db::ConnectStart;

use super::Sim;

#[derive(Clone, Copy, Debug)]
pub(super) enum Ev {
    TaskNext(u32),
    Arrival,
    Spike(u32),
    Start(usize),
    Timer(usize),
    ConnectDone {
        host: usize,
        conn: ConnId,
        start: ConnectStart,
    },
    CheckDone {
        host: usize,
        conn: ConnId,
        healthy: bool,
    },
    ResetDone {
        host: usize,
        conn: ConnId,
        ok: bool,
    },
    QueryDone {
        req: usize,
        lease: LeaseId,
    },
    Release {
        req: usize,
        lease: LeaseId,
        verdict: Verdict,
    },
    Cancel(usize),
    FaultStart(usize),
    FaultEnd(usize),
    Close,
    Retire(usize),
    Reap(usize),
    Probe,
    DirectConnected {
        req: usize,
        start: ConnectStart,
    },
    DirectDone {
        req: usize,
        backend: u64,
    },
    /// The replica set's monitor: start the probes that are due.
    Monitor,
    /// A probe's query answered on its lease.
    ProbeDone {
        req: usize,
        lease: LeaseId,
    },
    /// A slow close is over: the server lets the backend go.
    CloseDone {
        host: usize,
        conn: ConnId,
        backend: u64,
    },
}

impl Sim {
    pub(super) fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::TaskNext(t) => self.new_request(Some(t), false),
            Ev::Arrival => self.arrival(),
            Ev::Spike(n) => self.spike(n),
            Ev::Probe => self.new_request(None, true),
            Ev::Start(req) => self.acquire(req),
            Ev::Timer(h) => self.timer_fired(h),
            Ev::ConnectDone { host, conn, start } => self.connect_done(host, conn, start),
            Ev::CheckDone {
                host,
                conn,
                healthy,
            } => self.check_answered(host, conn, healthy, false),
            Ev::ResetDone { host, conn, ok } => self.check_answered(host, conn, ok, true),
            Ev::QueryDone { req, lease } => self.query_done(req, lease),
            Ev::Release {
                req,
                lease,
                verdict,
            } => self.release(req, lease, verdict),
            Ev::Cancel(req) => self.cancel(req),
            Ev::FaultStart(i) => self.fault_starts(i),
            Ev::FaultEnd(i) => self.fault_ends(i),
            Ev::Close => self.close_pools(),
            Ev::Retire(slot) => self.retire(slot),
            Ev::Reap(h) => self.reap(h),
            Ev::DirectConnected { req, start } => self.direct_connected(req, start),
            Ev::DirectDone { req, backend } => self.direct_done(req, backend),
            Ev::Monitor => self.monitor(),
            Ev::ProbeDone { req, lease } => self.probe_done(req, lease),
            Ev::CloseDone {
                host,
                conn,
                backend,
            } => self.close_done(host, conn, backend),
        }
    }
}
