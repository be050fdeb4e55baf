#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz (clang, ASan + UBSan; installs Debian's clang when it is
# missing) and runs each on a copy of its seed corpus for a bounded time. A crash, leak, sanitizer report
# or timeout fails the script (non-zero exit) and leaves the reproducer in build-fuzz/artifacts/.
#   scripts/fuzz.sh [SECONDS]         seconds per harness (default 30)
#   FUZZERS="config idx" scripts/fuzz.sh   run only those harnesses
#   NAT_FUZZ_SEED=N scripts/fuzz.sh        another mutation sequence (default 1, the same in every run)
# A reproducer reruns with: build-fuzz/fuzz_<name> build-fuzz/artifacts/<name>/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
fuzzers=${FUZZERS:-safetensors config idx image}

cc=$(command -v clang || command -v clang-14 || true)
if [ -z "$cc" ] || ! echo 'int LLVMFuzzerTestOneInput(const char*d,unsigned long n){return 0;}' |
      "$cc" -x c -fsanitize=fuzzer -o /dev/null - 2>/dev/null; then
  echo "== installing clang (libFuzzer) =="
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y clang libclang-rt-dev >/dev/null 2>&1 ||
    { $sudo apt-get update >/dev/null && $sudo apt-get install -y clang libclang-rt-dev >/dev/null; } ||
    $sudo apt-get install -y clang-14 libclang-rt-14-dev >/dev/null
  cc=$(command -v clang || command -v clang-14)
fi

jobs=$(nproc 2>/dev/null || echo 2)
echo "== build fuzzers ($cc) =="
cmake -S tests/fuzz -B build-fuzz -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=""
for f in $fuzzers; do targets="$targets fuzz_$f"; done
cmake --build build-fuzz -j"$jobs" --target $targets >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1
status=0
for f in $fuzzers; do
  corpus=build-fuzz/corpus/$f
  mkdir -p "$corpus" "build-fuzz/artifacts/$f"
  cp -n tests/fuzz/${f}_seed/* "$corpus"/ 2>/dev/null || true
  echo "== fuzz_$f: ${secs} s =="
  # rss_limit: a harness using more than 2 GB is a finding (an unbounded allocation), not a machine to kill.
  # A fixed seed (NAT_FUZZ_SEED, default 1): every CI run replays the same mutations first, so a run
  # fails on a new finding only when the code changed, not by chance; set another seed to explore.
  if ! build-fuzz/fuzz_$f "$corpus" -seed="${NAT_FUZZ_SEED:-1}" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="build-fuzz/artifacts/$f/" -print_final_stats=1 2> "build-fuzz/fuzz_$f.log"; then
    echo "fuzz_$f FAILED: see build-fuzz/fuzz_$f.log and build-fuzz/artifacts/$f/"
    tail -40 "build-fuzz/fuzz_$f.log"
    status=1
  else
    grep -E "stat::number_of_executed_runs|cov:" "build-fuzz/fuzz_$f.log" | tail -2 || true
  fi
done
exit $status
