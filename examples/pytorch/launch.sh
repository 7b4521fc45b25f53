#!/usr/bin/env bash
# Start this host's part of a torchrun job once the cluster is complete. Run on every
# host after `idstore serve` is up there:
#
#   WORKERS=3 examples/pytorch/launch.sh
#
# IDSTORE: the idstore command (default `idstore`); PYTHON: the interpreter with torch.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export IDSTORE_CONFIG="${IDSTORE_CONFIG:-$here/idstore.toml}"
IDSTORE="${IDSTORE:-idstore}"
PYTHON="${PYTHON:-python3}"

$IDSTORE wait --count "${WORKERS:-3}" --timeout "${WAIT_TIMEOUT:-300}"
# NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT as PET_* (torchrun reads those for absent
# flags), PET_RDZV_BACKEND=static (else torchrun ignores the rank), and
# GLOO_SOCKET_IFNAME & co. naming the interface of this node's published address.
values="$($IDSTORE env --format torchrun)"  # (an assignment: set -e stops on a failure)
eval "$values"
# the master's name resolves through this host's own resolver, as torch will resolve it
getent hosts "$MASTER_ADDR" >/dev/null || {
  echo "launch: $MASTER_ADDR does not resolve on this host; see the README" >&2; exit 1; }
exec $PYTHON -m torch.distributed.run --nproc-per-node 1 "$here/train.py"
