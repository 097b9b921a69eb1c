#!/usr/bin/env bash
# Installs what the real-PostgreSQL integration tests need: PostgreSQL server binaries
# (initdb, pg_ctl, postgres) and PgBouncer. Idempotent: does nothing when both are present.
# Never leaves the Debian-managed default cluster running: the test harness starts its own
# throwaway clusters on free loopback ports.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

have_initdb() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

have_pgbouncer() {
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || [ -x /usr/bin/pgbouncer ]
}

missing=()
have_initdb || missing+=(postgresql)
have_pgbouncer || missing+=(pgbouncer)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps: postgresql and pgbouncer already installed"
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y "${missing[@]}"

# The packages may start a default cluster / pgbouncer service; the tests need neither.
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header 2>/dev/null | while read -r ver name _rest; do
        $SUDO pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
    done
fi
$SUDO service postgresql stop >/dev/null 2>&1 || true
$SUDO service pgbouncer stop >/dev/null 2>&1 || true

have_initdb || { echo "install-deps: initdb still missing" >&2; exit 1; }
have_pgbouncer || { echo "install-deps: pgbouncer still missing" >&2; exit 1; }
echo "install-deps: done"
