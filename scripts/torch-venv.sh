#!/usr/bin/env bash
# scripts/torch-venv.sh [DIR] — a virtual environment (default .venv, ignored by git) with the current
# PyTorch from PyPI (MKL + oneDNN on the CPU) and numpy: the peer of every side-by-side benchmark
# (bench/*.py) and the generator of the golden data (tests/golden/). Not Debian's python3-torch 1.13:
# a user comparing today picks the current release. About 5 GB (PyPI's Linux wheel carries CUDA's
# libraries); nat itself never needs Python.
#   TORCH_VERSION=2.x.y scripts/torch-venv.sh   pins a version (default: the newest)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.venv}
if [ ! -x "$dir/bin/python" ]; then
  python3 -m venv "$dir" || { echo "torch-venv.sh: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
fi
spec=torch${TORCH_VERSION:+==$TORCH_VERSION}
"$dir/bin/python" -m pip install -q --upgrade pip
"$dir/bin/python" -m pip install -q "$spec" numpy
"$dir/bin/python" -c 'import torch; print("torch-venv.sh: torch", torch.__version__, "in", torch.__file__.rsplit("/", 2)[0], "| threads", torch.get_num_threads(), "| oneDNN", torch.backends.mkldnn.is_available())'
