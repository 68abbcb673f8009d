#!/usr/bin/env bash
# Set everything up and run the whole test suite (lint included) on two workers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -n 2 --durations=25 "$@"
