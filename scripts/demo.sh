#!/usr/bin/env bash
# Set up (if needed) and run the demo team on the embedded model: scripts/demo.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/botlab run teams/demo-cpu.yaml --steps "${1:-3}"
