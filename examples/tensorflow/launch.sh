#!/usr/bin/env bash
# Start this host's TensorFlow worker once the cluster is complete. Run on every host
# after `idstore serve` is up there (systemd unit, cloud-init, ...):
#
#   WORKERS=3 examples/tensorflow/launch.sh
#
# IDSTORE: the idstore command (default `idstore`); PYTHON: the interpreter with
# tensorflow-cpu and tf-keras (default python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export IDSTORE_CONFIG="${IDSTORE_CONFIG:-$here/idstore.toml}"
IDSTORE="${IDSTORE:-idstore}"
PYTHON="${PYTHON:-python3}"

# 1. every worker holds its name (and so every name resolves)
$IDSTORE wait --count "${WORKERS:-3}" --timeout "${WAIT_TIMEOUT:-300}"
# 2. TF_CONFIG (every worker with its own port), this node's index, IDSTORE_*
values="$($IDSTORE env --format shell)"  # (an assignment: set -e stops on a failure)
eval "$values"
# 3. the names resolve through this host's own resolver, as TensorFlow will resolve them
getent hosts "$IDSTORE_NAME" >/dev/null || {
  echo "launch: $IDSTORE_NAME does not resolve on this host; see the README" >&2; exit 1; }
# Keras 3's fit fails under MultiWorkerMirroredStrategy in TensorFlow 2.20: tf-keras.
export TF_USE_LEGACY_KERAS=1
exec $PYTHON "$here/train.py"
