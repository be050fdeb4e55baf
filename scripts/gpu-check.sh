#!/usr/bin/env bash
# scripts/gpu-check.sh — the GPU checks of the CUDA backend and of the NA CUDA kernels, as one call on a
# machine with an NVIDIA GPU that has the driver and CUDA but none of nat's Debian libraries (the lent
# H100/H200 machines: no network, no apt).
#
#   here (Debian 12, nvcc):  bash scripts/gpu-check.sh --prepare [--arch 90]
#       builds nat with CUDA in build-gpu/ (Release, CMAKE_CUDA_ARCHITECTURES=90 by default: Hopper) and
#       stages in .gpu/ (ignored by git, ~55 MiB) what the GPU machine needs: bin/ (the GPU test suites,
#       na-lab, nat-profile), lib/ (OpenBLAS, inih, stb, zlib, gfortran, libgomp, check's subunit, the
#       ctypes driver of bench/na_vs_torch.py). Then check it here: bash scripts/gpu-check.sh --local
#   on the GPU machine:      bash scripts/gpu-check.sh        (the device tool: carry [".gpu"])
#       1. nvidia-smi;
#       2. the GPU suites (CK_FORK=no): every core op, the optimizers, mixed precision and the NA kernels
#          (v0..v3) against the CPU reference, on the device;
#       3. na-lab: each NA kernel version validated against the CPU reference at batch 2, then timed
#          (median, L2 flushed) on NAT-Mini's levels at batch 128, a 256² map and a 3-D case;
#       4. nat-profile on NAT-Mini at 224², batch 64: training and inference, f32 and bf16 (images/s,
#          device memory peak);
#       5. bench/na_vs_torch.py: nat's fused NA against PyTorch's legacy NA and FlexAttention (bf16).
#       Logs and CSVs go to $OUT (default gpu-out/); a summary table is printed last.
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
  cmake --build build-gpu -j"$(nproc)" --target nat-profile na-lab nat_na_driver "${gpu_suites[@]}"
  rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib
  cp build-gpu/nat-profile build-gpu/na-lab .gpu/bin/
  for t in "${gpu_suites[@]}"; do cp "build-gpu/tests/$t" .gpu/bin/; done
  cp -L build-gpu/libnat_na_driver.so .gpu/lib/
  # every shared library the binaries need that is not CUDA's, glibc's or the C++ runtime's
  for b in .gpu/bin/* .gpu/lib/libnat_na_driver.so; do
    ldd "$b" | awk '/=> \// {print $3}'
  done | sort -u | grep -vE '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so|/libcu|/libnv' |
    while read -r lib; do cp -L "$lib" .gpu/lib/; done
  du -sh .gpu
  echo "gpu-check.sh: staged .gpu/; on the GPU machine: bash scripts/gpu-check.sh (carry .gpu)"
  exit 0
fi

[ -x .gpu/bin/nat-profile ] || { echo "gpu-check.sh: .gpu/ missing: run bash scripts/gpu-check.sh --prepare here first" >&2; exit 1; }
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
export LD_LIBRARY_PATH="$PWD/.gpu/lib${cudalibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CK_FORK=no OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
summary=()

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 && head -n 15 "$OUT/nvidia-smi.txt" || echo "no nvidia-smi (no GPU here)"

echo "== GPU test suites"
for t in "${gpu_suites[@]}"; do
  timeout 600 ".gpu/bin/$t" > "$OUT/$t.log" 2>&1
  rc=$?
  case $rc in 0) r=passed ;; 77) r="skipped (no device)" ;; *) r="FAILED (exit $rc)" ;; esac
  tail -n 3 "$OUT/$t.log"
  summary+=("$t: $r")
done

echo "== na-lab: NA kernel versions, validated then timed"
timeout 900 .gpu/bin/na-lab > "$OUT/na-lab.txt" 2>&1
rc=$?
tail -n 40 "$OUT/na-lab.txt"
summary+=("na-lab: exit $rc (77: no device)")

echo "== nat-profile: NAT-Mini 224², batch 64, on cuda:0"
for dt in f32 bf16; do
  for m in train infer; do
    if timeout 600 .gpu/bin/nat-profile --model nat_mini --device cuda --dtype "$dt" --mode "$m" --batch 64 \
         --steps 10 --trace-steps 1 --csv "$OUT/profile.csv" > "$OUT/profile-$m-$dt.txt" 2>&1; then
      summary+=("nat-profile $m $dt: $(grep -m1 -o 'throughput: [0-9.]* images/s' "$OUT/profile-$m-$dt.txt"), $(grep -m1 -o 'allocator peak [0-9.]* MiB' "$OUT/profile-$m-$dt.txt")")
    else
      summary+=("nat-profile $m $dt: failed: $(tail -n 1 "$OUT/profile-$m-$dt.txt")")
    fi
  done
done

echo "== bench/na_vs_torch.py"
timeout 900 python3 bench/na_vs_torch.py --lib .gpu/lib/libnat_na_driver.so --csv "$OUT/na_vs_torch.csv" \
  > "$OUT/na_vs_torch.txt" 2>&1
rc=$?
tail -n 25 "$OUT/na_vs_torch.txt"
summary+=("na_vs_torch.py: exit $rc")

echo "== summary ($(date -u '+%Y-%m-%d %H:%M UTC'))"
printf '  %s\n' "${summary[@]}"
