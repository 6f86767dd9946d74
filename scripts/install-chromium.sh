#!/usr/bin/env bash
# Install Debian's chromium for the web UI's browser tests (tests/e2e), which Playwright
# drives through executable_path, so no browser download is needed. Idempotent. It needs
# root and apt-get; without them it says so and exits 0 so that `make test` still runs
# (the browser tests skip).
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    chromium --version 2>/dev/null | head -1
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: chromium is missing and cannot be installed here (needs root and" \
        "apt-get); install it yourself, or the browser tests skip" >&2
    exit 0
fi
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends chromium >/dev/null; }; then
    echo "install-chromium: apt-get could not install chromium; the browser tests skip" >&2
    exit 0
fi
chromium --version 2>/dev/null | head -1
