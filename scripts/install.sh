#!/usr/bin/env bash
# Creates .venv (if absent) and installs the project into it, editable.
#   bash scripts/install.sh          # the toolkit
#   bash scripts/install.sh test     # the toolkit + what the tests need (the ray extra included)
#   bash scripts/install.sh ray      # the toolkit + Ray Data, for retriever index --engine ray
# torch goes in first, pinned to 2.13.0 when the venv has none: on this project's machines that
# is a local CPU wheel, and it keeps pip from pulling a multi-GB CUDA build for the `torch>=2.4` range.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet torch==2.13.0
fi
# -qq: errors still show; setuptools' editable-install banner (a warning about folders named like the package) does not
.venv/bin/python -m pip install --quiet --quiet -e ".${extras:+[$extras]}"
