#!/usr/bin/env bash
# Install redis-server for the response-cache tests (tests marked `redis` skip without it).
# Idempotent: a second run changes nothing. redis-server comes from apt and needs root;
# without root or apt, it says so and exits 0 so that `make test` still runs (those tests skip).
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    redis-server --version
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-redis: redis-server is missing and cannot be installed here (needs root and" \
        "apt-get); install it yourself, or the redis tests skip" >&2
    exit 0
fi
if ! { apt-get update && apt-get install -y --no-install-recommends redis-server; }; then
    echo "install-redis: apt-get could not install redis-server; the redis tests skip" >&2
    exit 0
fi
# The package's service is not wanted: the tests start their own server on a free port.
redis-server --version
