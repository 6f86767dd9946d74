#!/usr/bin/env bash
# Install PostgreSQL for the fine-tuning service's shared-queue tests (tests marked `postgres`
# skip without it). Idempotent: a second run changes nothing. PostgreSQL comes from apt and
# needs root; without root or apt, it says so and exits 0 so that `make test` still runs
# (those tests skip).
set -euo pipefail

find_pg_ctl() {
    # Debian keeps the server binaries off PATH, one directory per major version.
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        command -v pg_ctl
        return 0
    fi
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$bin" ] && [ -x "$bin/pg_ctl" ] && [ -x "$bin/initdb" ]; then
        echo "$bin/pg_ctl"
        return 0
    fi
    return 1
}

if pg_ctl=$(find_pg_ctl); then
    "$pg_ctl" --version
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-postgres: PostgreSQL is missing and cannot be installed here (needs root and" \
        "apt-get); install it yourself, or the postgres tests skip" >&2
    exit 0
fi
if ! { apt-get update && apt-get install -y --no-install-recommends postgresql; }; then
    echo "install-postgres: apt-get could not install PostgreSQL; the postgres tests skip" >&2
    exit 0
fi
# The package's cluster and service are not wanted: the tests initdb and start their own server
# on a free port.
if ! pg_ctl=$(find_pg_ctl); then
    echo "install-postgres: apt-get ran but no pg_ctl was found; the postgres tests skip" >&2
    exit 0
fi
"$pg_ctl" --version
