#!/usr/bin/env bash
# Train the default config on the full CIFAR-10 and print test accuracy per epoch.
# Usage: scripts/accuracy.sh [DATA.tar.gz] [RUN_ROOT] [extra sparkcnn train flags...]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
data="${1:-$here/../shared/data/cifar-10-python.tar.gz}"
root="${2:-$here/runs/cifar10-full}"
shift $(( $# > 2 ? 2 : $# ))
sparkcnn="${SPARKCNN:-$here/.venv/bin/sparkcnn}"
"$sparkcnn" train --data "$data" --run-root "$root" "$@"
echo "test accuracy per epoch:"
"$sparkcnn" status --run-root "$root" | grep '^epoch'
