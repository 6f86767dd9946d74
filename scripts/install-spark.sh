#!/usr/bin/env bash
# Install what data.engine: spark needs: Java (when missing) and the project's spark extra.
# Idempotent: a second run changes nothing. Java comes from apt and needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"

if ! command -v java >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-spark: java is missing; run as root, or install a JDK/JRE 17+ yourself" >&2
        exit 1
    fi
    apt-get update
    apt-get install -y --no-install-recommends openjdk-17-jre-headless
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "install-spark: no virtual environment at $VENV; run 'make install' first" >&2
    exit 1
fi
if ! "$VENV/bin/python" -c "import pyspark" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet -e ".[spark]"
fi
java -version 2>&1 | head -n 1
"$VENV/bin/python" -c "import pyspark; print('pyspark', pyspark.__version__)"
