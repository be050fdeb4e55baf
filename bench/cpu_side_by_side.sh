#!/usr/bin/env bash
# bench/cpu_side_by_side.sh [OUT_DIR] — nat against current PyTorch (PyPI, MKL + oneDNN) on this CPU, one
# run, the default environment (only the thread count set, 2 unless OMP_NUM_THREADS says otherwise):
#   1. GEMM GFLOP/s, f32 and bf16, at 512²..2048² and every GEMM of NAT-Mini's linears at 224², batch 8:
#      nat-bench gemm, then bench/torch_gemm.py (gemm_nat.csv, gemm_torch.csv);
#   2. fused NA at NAT-Mini's 56² level, f32 against bf16 (nat-bench na2d --dtype bf16);
#   3. NAT-Mini 224², batch 8, training and inference, f32 and bf16: nat-profile (nat_mini.csv), then
#      PyTorch: training with the legacy NA in f32 and bf16 autocast, inference with the legacy NA and
#      with FlexAttention NA (always compiled; the first compile of a shape takes minutes, later runs hit
#      the inductor cache), each in f32 and bf16 autocast (bench/torch_nat.py --no-nat).
# Every log goes to OUT_DIR (default runs/cpu-side-by-side-<date>) next to machine.txt (lscpu, load).
# The PyTorch side needs a venv with current PyTorch: scripts/torch-venv.sh makes .venv; another one with
# NAT_TORCH_PYTHON=/path/to/python. NAT_BUILD picks the build directory (default build). About 15
# minutes on 2 cores; keep the machine otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/cpu-side-by-side-$(date -u +%Y%m%dT%H%MZ)}
py=${NAT_TORCH_PYTHON:-.venv/bin/python}
b=${NAT_BUILD:-build}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
for tool in "$b/nat-bench" "$b/nat-profile"; do
  [ -x "$tool" ] || { echo "cpu_side_by_side.sh: $tool missing: build first (cmake -S . -B $b && cmake --build $b)" >&2; exit 1; }
done
"$py" -c 'import torch' 2>/dev/null || { echo "cpu_side_by_side.sh: no torch in $py: run scripts/torch-venv.sh (or set NAT_TORCH_PYTHON)" >&2; exit 1; }
mkdir -p "$out"
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  lscpu | grep -E '^(Model name|CPU family|Model|CPU\(s\)):'
  echo "flags: $(grep -o -w -E 'avx2|avx512f|avx512_bf16|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "threads: $OMP_NUM_THREADS; torch $("$py" -c 'import torch; print(torch.__version__)')"
  echo "load: $(cat /proc/loadavg)"
} | tee "$out/machine.txt"

step() { echo "== $1 (load $(cut -d' ' -f1 /proc/loadavg))"; }
step "GEMM: nat"
"$b/nat-bench" gemm --dtype both --shapes all --csv "$out/gemm_nat.csv" | tee "$out/gemm_nat.txt"
step "GEMM: PyTorch"
"$py" bench/torch_gemm.py --threads "$OMP_NUM_THREADS" --csv "$out/gemm_torch.csv" | tee "$out/gemm_torch.txt"
step "fused NA, f32 against bf16, NAT-Mini level 0"
"$b/nat-bench" na2d --dtype bf16 --reps 20 | tee "$out/na_bf16.txt"
step "NAT-Mini 224², batch 8: nat"
for mode in train infer; do
  for dt in f32 bf16; do
    "$b/nat-profile" --model nat_mini --batch 8 --res 224 --mode "$mode" --dtype "$dt" --steps 5 --trace-steps 0 \
      --csv "$out/nat_mini.csv" | tee -a "$out/nat_mini_nat.txt"
  done
done
step "NAT-Mini 224², batch 8: PyTorch training (legacy NA)"
"$py" bench/torch_nat.py --no-nat --allocators glibc --mode train --torch-dtype f32,bf16 --steps 3 \
  --threads "$OMP_NUM_THREADS" | tee "$out/nat_mini_torch_train.txt"
step "NAT-Mini 224², batch 8: PyTorch inference (legacy and FlexAttention NA, compiled)"
"$py" bench/torch_nat.py --no-nat --allocators glibc --mode infer --torch-na legacy,flex --torch-dtype f32,bf16 \
  --steps 5 --warmup 2 --threads "$OMP_NUM_THREADS" | tee "$out/nat_mini_torch_infer.txt"
echo "cpu_side_by_side.sh: done; logs and CSVs in $out (load now $(cut -d' ' -f1 /proc/loadavg))"
