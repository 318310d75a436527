#!/usr/bin/env bash
# Run a training stage by stage, one `sparkcnn stage` process per stage, up to the end of the next iteration.
# Usage: scripts/one_iteration.sh RUN_ROOT [flags for a new run, e.g. --data PATH --set train.batch_size=100]
set -euo pipefail
root="${1:?usage: scripts/one_iteration.sh RUN_ROOT [flags for a new run]}"
shift
sparkcnn="${SPARKCNN:-sparkcnn}"
if ! "$sparkcnn" status --run-root "$root" >/dev/null 2>&1; then
  "$sparkcnn" stage ingest --run-root "$root" "$@"
fi
while next=$("$sparkcnn" status --run-root "$root" --next) && [ -n "$next" ]; do
  echo "+ sparkcnn stage $next"
  # shellcheck disable=SC2086  # $next is the stage name and its --iteration/--epoch flag
  "$sparkcnn" stage $next --run-root "$root"
  case "$next" in update*) break ;; esac
done
"$sparkcnn" status --run-root "$root"
