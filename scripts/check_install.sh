#!/usr/bin/env bash
# Check the README's install lines in fresh virtual environments, from a fresh clone of this checkout:
#   1. `python -m build` makes a wheel;
#   2. `pip install "<wheel>[onnx]"` alone serves manifest.json + model.onnx (the README's Python example),
#      with no TensorFlow installed;
#   3. `pip install ".[onnx]"` and `pip install -e ".[onnx]"` from the clone run `python -m runtime info`.
# Prints the wall time of each step. Usage: scripts/check_install.sh ARTIFACTS [WORKDIR]
# (ARTIFACTS: a folder written by `python -m export`; WORKDIR: scratch space, default a new temp folder).
set -euo pipefail
artifacts="$(cd "${1:?usage: scripts/check_install.sh ARTIFACTS [WORKDIR]}" && pwd)"
work="${2:-$(mktemp -d)}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$work"
step() { local name="$1"; shift; local t0=$SECONDS; "$@"; echo "[$((SECONDS - t0)) s] $name"; }

step "git clone" git clone -q "$repo" "$work/clone"
step "python -m build (sdist + wheel)" bash -c "cd '$work/clone' && python3 -m build --outdir '$work/dist' . >'$work/build.log' 2>&1"
wheel="$(ls "$work"/dist/featuremaps-*.whl)"

# --- ONNX-only deployment: two files and one pip line ---
mkdir -p "$work/deploy/artifacts"
cp "$artifacts/manifest.json" "$artifacts/model.onnx" "$work/deploy/artifacts/"
step "venv + pip install \"featuremaps[onnx]\" from the wheel" bash -c \
  "python3 -m venv '$work/venv-wheel' && '$work/venv-wheel/bin/pip' install -q '$wheel[onnx]'"
cd "$work/deploy"
step "README Python example (onnx backend, no TensorFlow)" "$work/venv-wheel/bin/python" - <<'PY'
import importlib.util
assert importlib.util.find_spec("tensorflow") is None, "TensorFlow is installed in the ONNX-only deployment"
import runtime
from runtime.mnist import shipped_digits
digits, labels = shipped_digits()
with runtime.load("artifacts", backend="onnx", device="cpu") as model:
    maps = model.run(digits[:8])
print({k: v.shape for k, v in maps.items()}, "predicted", maps["dense_1"].argmax(1), "labels", labels[:8])
assert (maps["dense_1"].argmax(1) == labels[:8]).mean() >= 0.75
PY
step "python -m runtime info (wheel install)" bash -c "'$work/venv-wheel/bin/python' -m runtime info artifacts --backend onnx >/dev/null"

# --- from the clone ---
cd "$work/clone"
step "venv + pip install \".[onnx]\" (clone)" bash -c \
  "python3 -m venv '$work/venv-clone' && '$work/venv-clone/bin/pip' install -q '.[onnx]'"
step "python -m runtime info (clone install)" bash -c "cd '$work/deploy' && '$work/venv-clone/bin/python' -m runtime info artifacts --backend onnx >/dev/null"
step "venv + pip install -e \".[onnx]\" (clone)" bash -c \
  "python3 -m venv '$work/venv-editable' && '$work/venv-editable/bin/pip' install -q -e '.[onnx]'"
step "python -m runtime info (editable install)" bash -c "cd '$work/deploy' && '$work/venv-editable/bin/python' -m runtime info artifacts --backend onnx >/dev/null"
echo "all install checks passed in $work"
