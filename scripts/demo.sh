#!/usr/bin/env bash
# Installs everything, then runs the guided demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ./bin/switchyard demo "$@"
