#!/usr/bin/env bash
# pxpo against trl 0.23.1's DDPOTrainer (the last trl with DDPO), side by side in one venv.
#
#   bash benchmarks/vs_trl.sh [--rounds=3] [--threads=1] [--modes=full,lora] [--json=PATH]
#
# Builds its own venv (PXPO_TRL_VENV, default .venv-trl) on first use: pxpo's pinned dependencies
# (CPU torch==2.13.0, diffusers, transformers, peft, accelerate) plus trl==0.23.1, with this checkout
# installed editable; then runs benchmarks/vs_trl.py in it. Not part of CI: it needs PyPI and a few
# minutes to build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PXPO_TRL_VENV:-.venv-trl}
if ! "$VENV/bin/python" -c "import trl, pxpo, diffusers" 2>/dev/null; then
    echo "building $VENV (torch==2.13.0 CPU, pxpo's pins, trl==0.23.1) ..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q torch==2.13.0
    "$VENV/bin/pip" install -q -e . trl==0.23.1
fi
"$VENV/bin/python" -c "import trl, torch; print(f'trl {trl.__version__}, torch {torch.__version__}')" >&2
exec "$VENV/bin/python" benchmarks/vs_trl.py "$@"
