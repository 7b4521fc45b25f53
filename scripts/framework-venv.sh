#!/usr/bin/env bash
# The virtualenv the example tests run real TensorFlow and PyTorch jobs in, cached
# between runs (~1 GB; a second run installs nothing). Prints its path.
#
# - tensorflow-cpu 2.20 (2.21 needs protobuf >= 6); Keras 3's fit fails under
#   MultiWorkerMirroredStrategy in 2.20, so tf-keras with --no-deps (plain tf-keras pulls
#   the full tensorflow over tensorflow-cpu), and the jobs set TF_USE_LEGACY_KERAS=1;
# - torch only as a CPU build (PyPI's Linux wheel pulls several GB of CUDA packages):
#   torch==2.13.0 where pip finds one (a local wheel through pip's configuration); when
#   none is found the venv has no torch and the PyTorch test says so when it skips.
set -euo pipefail
venv="${IDSTORE_FRAMEWORK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/idstore/framework-venv}"
pip_q=(-q --disable-pip-version-check)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c 'import tensorflow, tf_keras' 2>/dev/null; then
  echo "== framework venv: installing tensorflow-cpu and tf-keras into $venv" >&2
  "$py" -m pip install "${pip_q[@]}" 'tensorflow-cpu==2.20.*' >&2
  "$py" -m pip install "${pip_q[@]}" --no-deps 'tf-keras==2.20.*' >&2
fi
if ! "$py" -c 'import torch' 2>/dev/null && [ ! -e "$venv/.no-cpu-torch" ]; then
  # --only-binary and the exact pin: a CPU build or nothing, never the CUDA download.
  if "$py" -m pip download "${pip_q[@]}" --no-deps --only-binary=:all: -d "$venv/.wheels" \
      'torch==2.13.0' >&2 && ls "$venv/.wheels"/torch-*+cpu-*.whl >/dev/null 2>&1; then
    echo "== framework venv: installing a CPU-only torch" >&2
    "$py" -m pip install "${pip_q[@]}" "$venv/.wheels"/torch-*+cpu-*.whl >&2
    rm -rf "$venv/.wheels"  # installed: the wheel's copy is 200 MB of nothing
  else
    echo "== framework venv: no CPU-only torch available; the PyTorch example test will skip" >&2
    echo "no CPU-only torch wheel (torch==2.13.0+cpu) was available to pip (remove $venv/.no-cpu-torch to look again)" > "$venv/.no-cpu-torch"
  fi
fi
echo "$venv"
