#!/usr/bin/env bash
# Train a config on the full CIFAR-10 and print the test accuracy per epoch and the wall time.
# Usage: scripts/accuracy.sh [CONFIG.toml] [sparkcnn train flags...]
#   (default conf/default.toml; data ../shared/data/cifar-10-python.tar.gz unless --data is given;
#    run root runs/<config name>-full unless --run-root is given)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
conf="$here/conf/default.toml"
if [[ $# -gt 0 && "$1" == *.toml ]]; then conf="$1"; shift; fi
name="$(basename "$conf" .toml)"
sparkcnn="${SPARKCNN:-$here/.venv/bin/sparkcnn}"
root="$here/runs/$name-full"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --run-root) root="${args[$((i + 1))]:-$root}" ;;
    --run-root=*) root="${args[$i]#--run-root=}" ;;
  esac
done
start=$(date +%s)
"$sparkcnn" train --config "$conf" --data "$here/../shared/data/cifar-10-python.tar.gz" --run-root "$root" "$@"
echo "config $conf, wall time $(( $(date +%s) - start )) s; test accuracy per epoch:"
"$sparkcnn" status --run-root "$root" | grep '^epoch'
