#!/usr/bin/env bash
# scripts/gpu-check.sh — the GPU checks of the CUDA backend and of the NA CUDA kernels, as one call on a
# machine with an NVIDIA GPU that has the driver and CUDA but none of nat's Debian libraries (the lent
# H100/H200 machines: no network, no apt).
#
#   here (Debian 12, nvcc):  bash scripts/gpu-check.sh --prepare [--arch 90]
#       builds nat with CUDA in build-gpu/ (Release, CMAKE_CUDA_ARCHITECTURES=90 by default: Hopper) and
#       packs into .gpu/stage.tar.xz (ignored by git, ~11 MB) what the GPU machine needs: bin/ (the GPU test suites,
#       na-lab, nat-profile), lib/ (oneDNN, inih, stb, zlib, libgomp, check's subunit, the
#       ctypes driver of bench/na_vs_torch.py). Then check it here: bash scripts/gpu-check.sh --local
#   on the GPU machine:      bash scripts/gpu-check.sh        (the device tool: carry [".gpu"])
#       1. nvidia-smi;
#       2. the GPU suites (CK_FORK=no): every core op, the optimizers, mixed precision and the NA kernels
#          (v0..v3) against the CPU reference, on the device;
#       3. na-lab: each NA kernel version validated against the CPU reference at batch 2, then timed
#          (median, L2 flushed) on NAT-Mini's levels at batch 128, a 256² map and a 3-D case;
#       3b. compute-sanitizer (when the machine has it) on the op and NA suites;
#       4. nat-profile on NAT-Mini at 224², batch 64 and 128: training and inference, f32 and bf16
#          (images/s, device memory peak);
#       4b. nat-train configs/nat_mini.cfg on cuda for 300 steps in f32, bf16 and f16 (Fashion-MNIST's
#          test split staged as a small training set), each checkpoint resumed on the CPU for 10 steps;
#       5. bench/na_vs_torch.py: nat's fused NA against PyTorch's legacy NA and FlexAttention (bf16).
#       Logs and CSVs go to $OUT (default gpu-out/); a summary table is printed last.
# Exit status: 0 when every step that ran passed; 1 when a suite, a kernel check, a run or the
# sanitizer failed. A step that needs a device and finds none counts as skipped, unless
# NAT_REQUIRE_GPU=1, which makes every skip a failure (the setting for a lent GPU machine).
# --local runs the same steps on this machine (no GPU: the suites report Skipped and the rest says why
# it cannot run), to check the staging before spending device time.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=run arch=90
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) mode=prepare; shift ;;
    --local) mode=local; shift ;;
    --arch) arch=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "gpu-check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

gpu_suites=(test_cuda_device test_cuda_ops test_cuda_dispatch test_mixed_precision test_na_cuda test_na_cuda_autocast)

if [ "$mode" = prepare ]; then
  set -e
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DNAT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
        -DNAT_NATIVE=OFF > /dev/null
  cmake --build build-gpu -j"$(nproc)" --target nat-profile nat-train na-lab nat_na_driver "${gpu_suites[@]}"
  st=$(mktemp -d /tmp/nat-gpu-stage.XXXXXX)
  mkdir -p "$st/bin" "$st/lib" "$st/data"
  cp build-gpu/nat-profile build-gpu/nat-train build-gpu/na-lab "$st/bin/"
  for t in "${gpu_suites[@]}"; do cp "build-gpu/tests/$t" "$st/bin/"; done
  cp -L build-gpu/libnat_na_driver.so "$st/lib/"
  # every shared library the binaries need that is not CUDA's, glibc's or the C++ runtime's
  for b in "$st"/bin/* "$st/lib/libnat_na_driver.so"; do
    ldd "$b" | awk '/=> \// {print $3}'
  done | sort -u | grep -vE '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so|/libcu|/libnv' |
    while read -r lib; do cp -L "$lib" "$st/lib/"; done
  # Fashion-MNIST's 10,000 test images serve as the training set too: a few hundred steps need no more.
  fm=/usr/share/datasets/fashion-mnist
  for part in images-idx3 labels-idx1; do
    cp "$fm/t10k-$part-ubyte.gz" "$st/data/"
    ln -s "t10k-$part-ubyte.gz" "$st/data/train-$part-ubyte.gz"
  done
  strip --strip-unneeded "$st"/bin/* "$st"/lib/*.so* 2>/dev/null || true
  # Packed: oneDNN alone is tens of MB, and the working tree travels with .gpu under the device tool's
  # 64 MiB. The run unpacks it outside the tree.
  rm -rf .gpu && mkdir -p .gpu
  tar -C "$st" -cJf .gpu/stage.tar.xz bin lib data
  rm -rf "$st"
  du -sh .gpu/stage.tar.xz
  echo "gpu-check.sh: staged .gpu/stage.tar.xz; on the GPU machine: bash scripts/gpu-check.sh (carry .gpu)"
  exit 0
fi

[ -f .gpu/stage.tar.xz ] || { echo "gpu-check.sh: .gpu/stage.tar.xz missing: run bash scripts/gpu-check.sh --prepare here first" >&2; exit 1; }
# Unpacked outside the tree, so nothing of it travels back or along next time.
G=$(mktemp -d /tmp/nat-gpu.XXXXXX)
tar -C "$G" -xJf .gpu/stage.tar.xz
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
# CUDA's libraries: the toolkit's, or the ones PyTorch's wheels brought
cudalibs=""
for n in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9; do
  if ! ldconfig -p 2>/dev/null | grep -q "$n"; then
    f=$(find /usr/local/cuda*/lib* /usr/lib /opt /usr/local/lib -name "$n" 2>/dev/null | head -n 1)
    [ -n "$f" ] && cudalibs="$cudalibs:$(dirname "$f")"
  fi
done
export LD_LIBRARY_PATH="$G/lib${cudalibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CK_FORK=no OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
summary=()
failures=0
require=${NAT_REQUIRE_GPU:-0}
# result NAME RC [SKIP_RC]: records a step; RC 0 passed, RC == SKIP_RC (77) skipped (a failure when a GPU
# is required), anything else failed.
result() {
  local name=$1 rc=$2 skip=${3:-77}
  if [ "$rc" -eq 0 ]; then summary+=("$name: passed")
  elif [ "$rc" -eq "$skip" ] && [ "$require" != 1 ]; then summary+=("$name: skipped (no device)")
  else summary+=("$name: FAILED (exit $rc)"); failures=$((failures + 1)); fi
}

have_gpu=0
if nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1; then have_gpu=1; head -n 15 "$OUT/nvidia-smi.txt"; else echo "no nvidia-smi (no GPU here)"; fi

echo "== GPU test suites"
for t in "${gpu_suites[@]}"; do
  args=()
  [ "$t" = test_mixed_precision ] && args=(gpu) # its GPU case alone (the CPU cases ran in CI)
  timeout 600 "$G/bin/$t" "${args[@]}" > "$OUT/$t.log" 2>&1
  rc=$?
  tail -n 3 "$OUT/$t.log"
  result "$t" "$rc"
done

echo "== compute-sanitizer on the op and NA suites"
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)
if [ "$have_gpu" = 1 ] && [ -n "$sanitizer" ]; then
  for t in test_cuda_ops test_na_cuda; do
    timeout 900 "$sanitizer" --error-exitcode 99 "$G/bin/$t" > "$OUT/sanitizer-$t.log" 2>&1
    rc=$?
    tail -n 2 "$OUT/sanitizer-$t.log"
    result "compute-sanitizer $t" "$rc"
  done
else
  result "compute-sanitizer" 77
fi

echo "== na-lab: NA kernel versions, validated then timed"
timeout 900 "$G"/bin/na-lab > "$OUT/na-lab.txt" 2>&1
rc=$?
tail -n 40 "$OUT/na-lab.txt"
result na-lab "$rc"

echo "== nat-profile: NAT-Mini 224², batch 64 and 128, on cuda:0"
for b in 64 128; do
  for dt in f32 bf16; do
    for m in train infer; do
      f="$OUT/profile-$m-$dt-b$b.txt"
      if [ "$have_gpu" != 1 ]; then result "nat-profile $m $dt b$b" 77; continue; fi
      if timeout 600 "$G"/bin/nat-profile --model nat_mini --device cuda --dtype "$dt" --mode "$m" --batch "$b" \
           --steps 10 --trace-steps 1 --csv "$OUT/profile.csv" > "$f" 2>&1; then
        summary+=("nat-profile $m $dt b$b: $(grep -m1 -o 'throughput: [0-9.]* images/s' "$f"), $(grep -m1 -o 'allocator peak [0-9.]* MiB' "$f")")
      else
        result "nat-profile $m $dt b$b ($(tail -n 1 "$f"))" 1
      fi
    done
  done
done

echo "== nat-train on cuda:0 (300 steps), then its checkpoint resumed on the CPU"
for dt in f32 bf16 f16; do
  if [ "$have_gpu" != 1 ]; then result "nat-train cuda $dt" 77; continue; fi
  run="$OUT/train-$dt"
  timeout 600 "$G"/bin/nat-train configs/nat_mini.cfg --set data.root="$G/data" --set train.device=cuda \
    --set train.precision="$dt" --set train.replicas=1 --set train.max_steps=300 --set train.eval_every=0 \
    --set data.test_limit=2000 --out "$run" > "$run.txt" 2>&1
  rc=$?
  result "nat-train cuda $dt ($(grep -m1 -o 'test top-1 [0-9.]*%' "$run.txt"))" "$rc"
  timeout 300 "$G"/bin/nat-train --resume "$run" --set train.device=cpu --set train.max_steps=310 \
    --set data.root="$G/data" --set data.test_limit=500 > "$run-resume-cpu.txt" 2>&1
  rc=$?
  result "nat-train $dt checkpoint resumed on the CPU" "$rc"
done

echo "== bench/na_vs_torch.py"
timeout 900 python3 bench/na_vs_torch.py --lib "$G"/lib/libnat_na_driver.so --csv "$OUT/na_vs_torch.csv" \
  > "$OUT/na_vs_torch.txt" 2>&1
rc=$?
tail -n 25 "$OUT/na_vs_torch.txt"
result na_vs_torch.py "$rc" 2 # 2: no CUDA or no FlexAttention here (the script says which)

echo "== summary ($(date -u '+%Y-%m-%d %H:%M UTC'))"
printf '  %s\n' "${summary[@]}"
echo "gpu-check.sh: $failures failure(s)$([ "$require" = 1 ] && echo ', skips counted as failures (NAT_REQUIRE_GPU=1)')"
[ "$failures" -eq 0 ]
