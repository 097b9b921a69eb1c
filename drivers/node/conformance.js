// node-postgres (pg) against PostgreSQL, directly or through pool-proxy.
//
// Usage: node conformance.js URL  (the password in PGPASSWORD, never in the URL or argv).
//
// Prints a deterministic transcript of what it observed (values, SQLSTATEs; never timings
// or backend PIDs), one fact a line, so that a run through the proxy can be compared with a
// run straight to PostgreSQL line by line. Exits 1 if anything was not as expected.
// Sections: transactions, parameter types, named prepared statements across transactions,
// errors and recovery, cancel, many concurrent connections.
'use strict'

const pg = require('pg')

const URL = process.argv[2]
let unexpected = 0

const say = (line) => console.log(line)
const expect = (what, got, want) => {
  if (got !== want) {
    unexpected += 1
    say(`UNEXPECTED ${what}: got ${got}, want ${want}`)
  }
}

async function connect() {
  // A generous timeout: 50 logins at once on a loaded machine (a debug build of the proxy
  // computes a SCRAM verifier per login) are slow, not wrong.
  const client = new pg.Client({ connectionString: URL, connectionTimeoutMillis: 60000 })
  await client.connect()
  return client
}

async function sqlstateOf(promise) {
  try {
    await promise
    return 'no error'
  } catch (e) {
    return e.code || `not a server error: ${e.message}`
  }
}

async function one(client, query, values) {
  const result = await client.query(query, values)
  return result.rows[0][result.fields[0].name]
}

function shown(value) {
  if (Buffer.isBuffer(value)) {
    return `${value.length} bytes ${value.subarray(0, 4).toString('hex')}..${value.subarray(-4).toString('hex')}`
  }
  if (value instanceof Date) return value.toISOString()
  if (typeof value === 'bigint') return JSON.stringify(value.toString())
  return JSON.stringify(value)
}

const ids = "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '-') AS ids FROM node_items"
const insert = (id, note) => ({ name: 'insert_item', text: 'INSERT INTO node_items VALUES ($1, $2)', values: [id, note] })
const count = (like) => ({ name: 'count_items', text: 'SELECT count(*)::int AS n FROM node_items WHERE note LIKE $1', values: [like] })

async function main() {
  const conn = await connect()
  await conn.query('DROP TABLE IF EXISTS node_items')
  await conn.query('CREATE TABLE node_items (id int PRIMARY KEY, note text NOT NULL)')

  // ---- transactions ----
  await conn.query('BEGIN')
  await conn.query("INSERT INTO node_items VALUES (1, 'committed')")
  await conn.query('COMMIT')
  await conn.query('BEGIN')
  await conn.query("INSERT INTO node_items VALUES (2, 'rolled back')")
  say(`transaction: ids inside the one to roll back: ${await one(conn, ids)}`)
  await conn.query('ROLLBACK')
  say(`transaction: ids after commit and rollback: ${await one(conn, ids)}`)
  expect('ids after commit and rollback', await one(conn, ids), '1')

  // ---- parameter types (node-postgres sends parameters as text) ----
  const cases = [
    ['int', 'int4', -2147483648],
    ['bigint', 'int8', 4611686018427387905n], // Read back as a string: pg's default.
    ['text', 'text', "héllo, 世界 🐘 'quoted' \\ back"],
    ['numeric', 'numeric', '-12345678901234567890.000000000123'],
    ['bool', 'bool', false],
    ['bytea', 'bytea', Buffer.from(Array.from({ length: 256 }, (_, i) => i))],
    ['timestamptz', 'timestamptz', new Date(Date.UTC(2024, 1, 29, 23, 59, 58, 123))],
    ['json', 'json', { k: [1, 'ü', null] }],
    ['jsonb', 'jsonb', { a: 1.5, b: { nested: true } }],
    ['int[]', 'int4[]', [1, null, -3]],
    ['text[]', 'text[]', ['a', 'ü 🐘', null, 'with,comma', '', 'quote " and \\']],
    ['null', 'int4', null],
  ]
  for (const [label, type, value] of cases) {
    const sql = `SELECT v, pg_typeof(v)::text AS t FROM (SELECT $1::${type} AS v) s`
    const { rows } = await conn.query(sql, [value])
    say(`types: ${label} -> ${rows[0].t} ${shown(rows[0].v)}`)
    expect(label, shown(rows[0].v), shown(value))
  }

  // ---- named prepared statements, reused across transactions ----
  for (let tx = 0; tx < 4; tx++) {
    // The first use (the Parse) is in a transaction rolled back: statements outlive it.
    await conn.query('BEGIN')
    try {
      for (let j = 0; j < 2; j++) await conn.query(insert(100 + 10 * tx + j, `prepared ${tx}`))
      if (tx === 2) await conn.query(insert(110, 'duplicate')) // A unique violation.
      await conn.query(tx === 0 ? 'ROLLBACK' : 'COMMIT')
    } catch (e) {
      say(`prepared: transaction ${tx} failed: ${e.code}`)
      await conn.query('ROLLBACK')
    }
    say(`prepared: after transaction ${tx}: ${await one(conn, count('prepared%'))} rows`)
  }
  expect('prepared rows', await one(conn, count('prepared%')), 4)

  // ---- errors and recovery on the same connection ----
  say(`error: SELECT 1/0 -> ${await sqlstateOf(conn.query('SELECT 1/0'))}`)
  say(`error: then ${await one(conn, 'SELECT $1::text AS v', ['recovered'])}`)
  await conn.query('BEGIN')
  say(`error: duplicate key in a transaction -> ${await sqlstateOf(conn.query("INSERT INTO node_items VALUES (1, 'again')"))}`)
  say(`error: next statement -> ${await sqlstateOf(conn.query('SELECT 1'))}`)
  say(`error: transaction status ${conn.getTransactionStatus()}`)
  await conn.query('ROLLBACK')
  say(`error: after ROLLBACK status ${conn.getTransactionStatus()}, ids ${await one(conn, ids)}`)
  const bad = await sqlstateOf(conn.query('SELECT * FROM no_such_table'))
  say(`error: unknown table -> ${bad}, then ${await one(conn, 'SELECT 41 + 1 AS v')}`)

  // ---- cancel: a running pg_sleep, by a CancelRequest once the server shows it ----
  // node-postgres's only CancelRequest is the undocumented `Client#cancel(client, query)`
  // (used on a fresh, unconnected Client): it opens a connection to the same host and
  // port and sends the target client's BackendKeyData.
  const SLEEP = 'SELECT pg_sleep(30)'
  const sleep = new pg.Query(SLEEP)
  const slept = new Promise((resolve) => {
    sleep.on('error', (e) => resolve(e.code || e.message))
    sleep.on('end', () => resolve('no error'))
  })
  conn.query(sleep)
  const watch = await connect()
  let watcher = 'never saw the sleep running'
  const running = "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query = $1"
  for (const deadline = Date.now() + 15000; Date.now() < deadline; ) {
    if ((await one(watch, running, [SLEEP])) === 1) {
      const canceller = new pg.Client({ connectionString: URL })
      canceller.connection.on('error', () => {}) // The server closes it after reading.
      canceller.cancel(conn, sleep)
      watcher = 'cancelled'
      break
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  await watch.end()
  say(`cancel: pg_sleep -> ${await slept}`)
  say(`cancel: watcher ${watcher}`)
  say(`cancel: then ${await one(conn, 'SELECT $1::text AS v', ['recovered'])}`)

  // ---- many concurrent connections, all open at once, a few transactions each ----
  const CLIENTS = 50
  const TRANSACTIONS = 3
  const clients = await Promise.all(Array.from({ length: CLIENTS }, connect))
  const outcomes = await Promise.all(
    clients.map(async (c, w) => {
      try {
        const seen = []
        for (let t = 0; t < TRANSACTIONS; t++) {
          await c.query('BEGIN')
          await c.query('INSERT INTO node_items VALUES ($1, $2)', [1000 + 10 * w + t, `worker ${w}`])
          await c.query('SELECT pg_sleep(0.01)')
          seen.push(await one(c, 'SELECT count(*)::int AS n FROM node_items WHERE note = $1', [`worker ${w}`]))
          await c.query('COMMIT')
        }
        return `saw ${JSON.stringify(seen)}`
      } catch (e) {
        return `failed: ${e.code || e.message}`
      }
    }),
  )
  await Promise.all(clients.map((c) => c.end()))
  for (const outcome of [...new Set(outcomes)].sort()) {
    say(`concurrent: ${outcomes.filter((o) => o === outcome).length} clients ${outcome}`)
    expect('a concurrent client', outcome, 'saw [1,2,3]')
  }
  const { rows } = await conn.query(
    'SELECT count(*)::int AS n, count(DISTINCT note)::int AS workers, sum(id)::int AS ids FROM node_items WHERE id >= 1000',
  )
  say(`concurrent: rows, workers, sum of ids: ${JSON.stringify(rows[0])}`)
  expect('concurrent rows', rows[0].n, CLIENTS * TRANSACTIONS)

  await conn.end()
  say(`done: ${unexpected} unexpected`)
  return unexpected ? 1 : 0
}

// Exits explicitly: after a failure, clients still open would keep node running.
main().then(
  (code) => process.exit(code),
  (e) => {
    say(`UNEXPECTED failure: ${e.code || 'not a server error'}: ${e.message}`)
    process.exit(1)
  },
)
