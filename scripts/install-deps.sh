#!/usr/bin/env bash
# Installs nat's build and test dependencies from Debian's packages (Debian 12).
# Idempotent: packages already present are left alone, and apt is not touched when nothing is missing.
# Run as root, or with sudo available.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config
  libdnnl-dev              # oneDNN: GEMMs and convolutions, f32 and bf16, OpenMP (one pool with our loops)
  zlib1g-dev               # gzipped IDX files
  check                    # unit tests
  libinih-dev              # INI configs
  libcjson-dev             # safetensors headers
  libstb-dev               # image decoding/encoding
  dataset-fashion-mnist    # the main job's data set
  gnuplot-nox              # scripts/plots.sh: the benchmark plots in docs/plots (PNG and SVG, no X11)
  libopenmpi-dev openmpi-bin # multi-process training (mpirun; docs/distributed.md) and its tests
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

echo "install-deps: done"
