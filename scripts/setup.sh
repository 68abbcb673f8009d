#!/usr/bin/env bash
# Create ./.venv (if absent) and install anomalib-medical into it, editable, with the test tools.
# TORCH_SPEC picks the PyTorch build; the default is the release this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC2086  # TORCH_SPEC holds several requirement specifiers
.venv/bin/python -m pip install --disable-pip-version-check -q $TORCH_SPEC
.venv/bin/python -m pip install --disable-pip-version-check -q -e ".[test]"
