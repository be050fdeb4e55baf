#!/usr/bin/env bash
# Installs what is missing, builds nat (with CUDA when nvcc is present) and runs the whole test suite,
# then builds and runs it once more under AddressSanitizer + UndefinedBehaviorSanitizer.
# This is the README's test command and what CI runs (.ci/run).
#   NAT_SKIP_SANITIZE=1  skip the sanitizer pass (quicker local runs)
#   NAT_FUZZ_SECONDS=N   seconds per fuzzer (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# PyTorch and PIL are optional for nat (install-deps.sh leaves them out); the tests install Debian's so
# the converter test (test_convert: scripts/nat_convert.py against PyTorch's logits, ~100 s on 2
# cores) runs in CI instead of reporting skipped.
if ! python3 -c 'import torch, PIL' 2>/dev/null && ! /usr/bin/python3 -c 'import torch, PIL' 2>/dev/null; then
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends python3-torch python3-pil
fi

jobs=$(nproc 2>/dev/null || echo 2)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$jobs}

echo "== build (Release) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
echo "== tests (Release) =="
ctest --test-dir build --output-on-failure

echo "== install to a temporary prefix; build and run the examples out of tree against it =="
prefix=$(mktemp -d /tmp/nat-install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install build --prefix "$prefix" >/dev/null
# Everything a user gets, nothing else: the installed files against tests/tools/install_manifest.txt
# (a tool, header or library dropped from install(), or a private header leaking, fails here).
if ! diff -u tests/tools/install_manifest.txt <(cd "$prefix" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort); then
  echo "the installed files differ from tests/tools/install_manifest.txt (lines: - expected, + installed)" >&2
  exit 1
fi
echo "install: $(wc -l < tests/tools/install_manifest.txt) files, as tests/tools/install_manifest.txt lists"
cmake -S examples -B "$prefix/build-examples" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/build-examples" -j"$jobs"
LD_LIBRARY_PATH="$prefix/lib" "$prefix/build-examples/embed_na"
LD_LIBRARY_PATH="$prefix/lib" "$prefix/build-examples/train_mlp" --epochs 1 --limit 2048
# The pkg-config route too, as a plain C program would use it.
cc -o "$prefix/embed_na_pc" examples/embed_na.c $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs nat) -lm
LD_LIBRARY_PATH="$prefix/lib" "$prefix/embed_na_pc"

if [ "${NAT_SKIP_SANITIZE:-0}" != "1" ]; then
  echo "== build (ASan + UBSan, CPU only) =="
  cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNAT_SANITIZE=ON -DNAT_CUDA=OFF
  cmake --build build-sanitize -j"$jobs"
  echo "== tests (ASan + UBSan) =="
  # Check forks each test; leaks of a forked child are its own, so leak checking stays on.
  ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp \
    ctest --test-dir build-sanitize --output-on-failure -E '^test_convert$' # its C side ran above; Python + ASan is slow
fi
echo "== fuzzers (libFuzzer, ASan + UBSan), ${NAT_FUZZ_SECONDS:-30} s each =="
bash scripts/fuzz.sh "${NAT_FUZZ_SECONDS:-30}"
echo "== all tests passed =="
