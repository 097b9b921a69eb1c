"""psycopg 3 against PostgreSQL, directly or through pool-proxy.

Usage: conformance.py URL  (the password in PGPASSWORD, never in the URL or argv).

Prints a deterministic transcript of what it observed (values, SQLSTATEs; never timings or
backend PIDs), one fact a line, so that a run through the proxy can be compared with a run
straight to PostgreSQL line by line. Exits 1 if anything was not as expected.
Sections: transactions, parameter types (text and binary), prepared statements across
transactions (and evicted from the driver's cache with SQL DEALLOCATE), errors and
recovery, cancel, many concurrent connections.
"""

import sys
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal

import psycopg
from psycopg.types.json import Json, Jsonb

URL = sys.argv[1]
unexpected = 0


def say(line):
    print(line, flush=True)


def expect(what, got, want):
    global unexpected
    if got != want:
        unexpected += 1
        say(f"UNEXPECTED {what}: got {got!r}, want {want!r}")


def connect(**kwargs):
    # Autocommit, as behind a transaction pooler: transactions are explicit. No automatic
    # preparing: only `prepare=True` prepares, so the transcript says when it happens.
    kwargs.setdefault("prepare_threshold", None)
    # A generous timeout: 50 logins at once on a loaded machine (a debug build of the proxy
    # computes a SCRAM verifier per login) are slow, not wrong.
    return psycopg.connect(URL, autocommit=True, connect_timeout=60, **kwargs)


def sqlstate_of(run):
    try:
        run()
        return "no error"
    except psycopg.Error as e:
        return e.sqlstate


def one(conn, sql, params=None, **kwargs):
    return conn.execute(sql, params, **kwargs).fetchone()[0]


# A huge threshold: prepared only when asked (`prepare=True`), never by repetition.
conn = connect(prepare_threshold=1_000_000)
conn.execute("DROP TABLE IF EXISTS py_items")
conn.execute("CREATE TABLE py_items (id int PRIMARY KEY, note text NOT NULL)")
ids = "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '-') FROM py_items"

# ---- transactions ----
with conn.transaction():
    conn.execute("INSERT INTO py_items VALUES (1, 'committed')")
with conn.transaction():
    conn.execute("INSERT INTO py_items VALUES (2, 'rolled back')")
    say(f"transaction: ids inside the one to roll back: {one(conn, ids)}")
    raise psycopg.Rollback()
say(f"transaction: ids after commit and rollback: {one(conn, ids)}")
expect("ids after commit and rollback", one(conn, ids), "1")

# ---- parameter types, as text (%t) and binary (%b) ----
UTC = timezone.utc
CASES = [
    ("int", "int4", -2147483648),
    ("bigint", "int8", 2**62 + 1),
    ("text", "text", "héllo, 世界 🐘 'quoted' \\ back"),
    ("numeric", "numeric", Decimal("-12345678901234567890.000000000123")),
    ("bool", "bool", False),
    ("bytea", "bytea", bytes(range(256))),
    ("timestamptz", "timestamptz", datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)),
    ("json", "json", Json({"k": [1, "ü", None]})),
    ("jsonb", "jsonb", Jsonb({"b": {"nested": True}, "a": 1.5})),
    ("int[]", "int4[]", [1, None, -3]),
    ("text[]", "text[]", ["a", "ü 🐘", None, "with,comma", ""]),
    ("null", "int4", None),
]


def shown(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bytes):
        return f"{len(value)} bytes {value[:4].hex()}..{value[-4:].hex()}"
    return repr(value)


for fmt, mark in (("text", "%t"), ("binary", "%b")):
    cur = conn.cursor(binary=(fmt == "binary"))
    for label, pgtype, value in CASES:
        sql = f"SELECT v, pg_typeof(v)::text FROM (SELECT {mark}::{pgtype} AS v) s"
        got, typ = cur.execute(sql, (value,)).fetchone()
        say(f"types {fmt}: {label} -> {typ} {shown(got)}")
        expect(f"{fmt} {label}", got, getattr(value, "obj", value))

# ---- prepared statements, reused across transactions ----
insert = "INSERT INTO py_items VALUES (%s, %s)"
count = "SELECT count(*) FROM py_items WHERE note LIKE %s"
for tx in range(4):
    # The first use (the Parse) is in a transaction rolled back: statements outlive it.
    try:
        with conn.transaction():
            for j in range(2):
                conn.execute(insert, (100 + 10 * tx + j, f"prepared {tx}"), prepare=True)
            if tx == 0:
                raise psycopg.Rollback()
            if tx == 2:  # A unique violation from the prepared statement.
                conn.execute(insert, (110, "duplicate"), prepare=True)
    except psycopg.Error as e:
        say(f"prepared: transaction {tx} failed: {e.sqlstate}")
    say(f"prepared: after transaction {tx}: {one(conn, count, ('prepared%',), prepare=True)} rows")
expect("prepared rows", one(conn, count, ("prepared%",), prepare=True), 4)

# ---- a full statement cache: the evicted statements deallocated with SQL `DEALLOCATE
# name`, as psycopg does with a libpq before 17 (Debian 12's python3-psycopg, on libpq 15).
# The libpq installed here has protocol-level Close, so psycopg is told it has not. ----
import psycopg._connection_base as connection_base  # noqa: E402

has_close = connection_base._HAS_SEND_CLOSE
connection_base._HAS_SEND_CLOSE = False
evicting = connect(prepare_threshold=0)  # every query prepared at its first use
evicting.prepared_max = 2
for rnd in range(3):
    got = []
    for k in range(4):
        try:
            with evicting.transaction():
                got.append(one(evicting, f"SELECT {k} * 10 + %s::int", (rnd,)))
        except psycopg.Error as e:
            got.append(f"failed {e.sqlstate}")
    say(f"evicted: round {rnd}: {got}")
    expect(f"evicted round {rnd}", got, [k * 10 + rnd for k in range(4)])
evicting.close()
connection_base._HAS_SEND_CLOSE = has_close

# ---- errors and recovery on the same connection ----
say(f"error: SELECT 1/0 -> {sqlstate_of(lambda: conn.execute('SELECT 1/0'))}")
say(f"error: then {one(conn, 'SELECT %s::text', ('recovered',))}")
conn.execute("BEGIN")
dup = sqlstate_of(lambda: conn.execute("INSERT INTO py_items VALUES (1, 'again')"))
say(f"error: duplicate key in a transaction -> {dup}")
say(f"error: next statement -> {sqlstate_of(lambda: conn.execute('SELECT 1'))}")
say(f"error: transaction status {conn.info.transaction_status.name}")
conn.execute("ROLLBACK")
say(f"error: after ROLLBACK status {conn.info.transaction_status.name}, ids {one(conn, ids)}")
bad = sqlstate_of(lambda: conn.execute("SELECT * FROM no_such_table"))
say(f"error: unknown table -> {bad}, then {one(conn, 'SELECT 41 + 1')}")

# ---- cancel: a running pg_sleep, from another thread once the server shows it ----
SLEEP = "SELECT pg_sleep(30)"
watch_result = []


def cancel_when_running():
    with connect() as watch:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            running = one(
                watch,
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = %s",
                (SLEEP,),
            )
            if running == 1:
                conn.cancel_safe()
                watch_result.append("cancelled")
                return
            time.sleep(0.02)
        watch_result.append("never saw the sleep running")


watcher = threading.Thread(target=cancel_when_running)
watcher.start()
say(f"cancel: pg_sleep -> {sqlstate_of(lambda: conn.execute(SLEEP))}")
watcher.join()
say(f"cancel: watcher {watch_result}")
say(f"cancel: then {one(conn, 'SELECT %s::text', ('recovered',))}")
conn.cancel_safe()  # Nothing running: nothing to cancel.
say(f"cancel: while idle, then {one(conn, 'SELECT 6 * 7')}")

# ---- many concurrent connections, all open at once, a few transactions each ----
CLIENTS, TRANSACTIONS = 50, 3
started, finished = threading.Barrier(CLIENTS), threading.Barrier(CLIENTS)
outcomes = [None] * CLIENTS


def worker(w):
    try:
        with connect() as c:
            started.wait(timeout=60)
            seen = []
            for t in range(TRANSACTIONS):
                with c.transaction():
                    c.execute(insert, (1000 + 10 * w + t, f"worker {w}"))
                    c.execute("SELECT pg_sleep(0.01)")
                    seen.append(one(c, count, (f"worker {w}",)))
            finished.wait(timeout=60)
            outcomes[w] = f"saw {seen}"
    except (psycopg.Error, threading.BrokenBarrierError) as e:
        outcomes[w] = f"failed: {type(e).__name__} {getattr(e, 'sqlstate', '')}"
        started.abort()
        finished.abort()


threads = [threading.Thread(target=worker, args=(w,)) for w in range(CLIENTS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for outcome in sorted(set(outcomes)):
    say(f"concurrent: {outcomes.count(outcome)} clients {outcome}")
    expect("a concurrent client", outcome, "saw [1, 2, 3]")
rows = conn.execute(
    "SELECT count(*), count(DISTINCT note), sum(id) FROM py_items WHERE id >= 1000"
).fetchone()
say(f"concurrent: rows, workers, sum of ids: {rows}")
ids_sum = sum(1000 + 10 * w + t for w in range(CLIENTS) for t in range(TRANSACTIONS))
expect("concurrent rows", rows, (CLIENTS * TRANSACTIONS, CLIENTS, ids_sum))

conn.close()
say(f"done: {unexpected} unexpected")
sys.exit(1 if unexpected else 0)
