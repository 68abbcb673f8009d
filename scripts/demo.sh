#!/usr/bin/env bash
# Set everything up and run the main job: train and test a model on DigitAnatomy (no download), print metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/anomalib train --model Squid --data DigitAnatomy --config configs/squid_digit_anatomy.yaml "$@"
