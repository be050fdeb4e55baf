#!/usr/bin/env bash
# scripts/scaling.sh [BUILD_DIR] — the data-parallel scaling figures of docs/benchmarks.md on a 2-core
# machine: the same job as one process with two OpenMP threads, as one process with train.replicas=2 (one
# thread each), and as mpirun -np 2 (one thread per rank), on the main job (configs/nat_mini.cfg,
# Fashion-MNIST 28², batch 128) and on NAT-Mini at 224² (Fashion-MNIST resized, batch 8). Prints the
# median images/s of each (train_log.csv, first steps left out as warm-up) and the ratios, with the load
# before and after (the machine may be shared: rerun on a quiet one).
#   NAT_SCALING_STEPS=N      steps of the main job per round (default 100; NAT-Mini 224²: N/10, at least 10)
#   NAT_SCALING_ROUNDS=R     rounds of the three set-ups in turn (default 2)
#   NAT_SCALING_JOBS=main    only the main job (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
steps=${NAT_SCALING_STEPS:-100}
big_steps=$((steps / 10 > 10 ? steps / 10 : 10))
tmp=$(mktemp -d /tmp/nat_scaling.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI's defaults on one machine: shared memory between the ranks, each rank bound to a core. (Loopback
# TCP and --bind-to none, as the tests run, measured 0.82-0.95 of train.replicas=2 instead.)
mpi=(mpirun --oversubscribe -x OMP_NUM_THREADS=1 -np 2)

main=(configs/nat_mini.cfg --set train.eval_every=0 --set data.test_limit=256 --set log.print_every=100000)
big=(configs/imagenet/nat_mini.cfg --set data.format=fashion-mnist --set data.img_size=224 --set data.workers=1
     --set aug.crop=none --set aug.hflip=0 --set aug.erasing=0 --set aug.mixup=0 --set aug.cutmix=0
     --set train.batch_size=8 --set train.accum_steps=1 --set train.eval_every=0 --set train.eval_batch_size=8
     --set data.test_limit=16 --set log.print_every=100000)

# median SKIP DIR...: the median images/s over the train_log.csv rows of the DIRs after each one's first SKIP steps.
median() {
  local skip=$1
  shift
  for d in "$@"; do tail -n +$((2 + skip)) "$d/train_log.csv" | cut -d, -f6; done | sort -g |
    awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}

# run_job NAME STEPS SKIP ARGS...: the three set-ups in turn, NAT_SCALING_ROUNDS times (default 2), so a
# change of load on a shared machine falls on all three alike; one table row.
run_job() {
  local name=$1 n=$2 skip=$3 rounds=${NAT_SCALING_ROUNDS:-2} k
  shift 3
  for k in $(seq "$rounds"); do
    OMP_NUM_THREADS=2 "$build/nat-train" "$@" --set train.max_steps="$n" --set train.threads=2 --set train.replicas=1 \
      --out "$tmp/threads$k" >"$tmp/threads$k.log" 2>&1
    OMP_NUM_THREADS=1 "$build/nat-train" "$@" --set train.max_steps="$n" --set train.threads=1 --set train.replicas=2 \
      --out "$tmp/replicas$k" >"$tmp/replicas$k.log" 2>&1
    "${mpi[@]}" "$build/nat-train" "$@" --set train.max_steps="$n" --set train.threads=1 --set train.replicas=1 \
      --out "$tmp/np2$k" >"$tmp/np2$k.log" 2>&1
  done
  local a b c
  a=$(median "$skip" "$tmp"/threads?)
  b=$(median "$skip" "$tmp"/replicas?)
  c=$(median "$skip" "$tmp"/np2?)
  rm -rf "${tmp:?}"/*
  awk -v n="$name" -v s="$n" -v r="$rounds" -v a="$a" -v b="$b" -v c="$c" 'BEGIN {
    printf "| %s (%d x %d steps) | %.1f | %.1f | %.1f | %.2f | %.2f |\n", n, r, s, a, b, c, c / a, c / b }'
}

echo "scaling: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| job | 1 process, 2 threads (img/s) | train.replicas=2 (img/s) | mpirun -np 2 (img/s) | np2 / threads | np2 / replicas |"
echo "|---|---|---|---|---|---|"
run_job "main job (NAT on Fashion-MNIST 28², batch 128)" "$steps" 10 "${main[@]}"
[ "${NAT_SCALING_JOBS:-all}" = main ] || run_job "NAT-Mini 224², batch 8" "$big_steps" 2 "${big[@]}"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
