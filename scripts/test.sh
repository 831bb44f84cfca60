#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install, lint, type-check, test.
# README's test command and .ci/run both call exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "install (torch 2.13.0 CPU build, detflow with [dev,examples,lightning,mlflow])"
python -m pip install --quiet "torch==2.13.0" -e ".[dev,examples,lightning,mlflow]"

step "a real two-node Slurm for the launcher tests (scripts/local-slurm.sh)"
if [ "$(id -u)" = 0 ]; then
    bash scripts/local-slurm.sh start
elif bash scripts/local-slurm.sh status >/dev/null 2>&1; then
    echo "Slurm is running"
else
    echo "not root and no Slurm running: the Slurm tests will be skipped (they fail under CI=true)"
fi

step "ruff"
ruff check .
ruff format --check .

step "mypy"
mypy

step "lint-imports (the layer contract, README \"Layout\")"
lint-imports

step "pytest"
python -m pytest -q "$@"
