#!/usr/bin/env python3
"""bench/na_torch_legacy.py — nat's fused NA against what PyTorch users run on a CPU today.

Times, in one run on the same cores, 2-D neighborhood attention with rpb, forward + backward, on
NAT-Mini's four levels at 224² (batch 8, kernel 7, head dim 32):
  * PyTorch (Debian's python3-torch) with the legacy pure-PyTorch method NATTEN's fallback used:
    materialise every query's k×k keys and values, then matmul, softmax, matmul; autograd backward.
    (tests/golden/nat_torch.py's na2d, which gathers neighbours with index tensors.)
  * nat's fused kernel, through `nat-bench na2d --impl fused --pass fwdbwd` (subprocess).
and prints milliseconds and the speed-up. Run with Debian's interpreter:
    /usr/bin/python3 bench/na_torch_legacy.py [--nat-bench build/nat-bench] [--reps 5] [--threads 2]
PyTorch's allocator matters on CPU: preload jemalloc (LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2,
Debian's libjemalloc2) for its best figure; the script says which allocator it ran with.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
from nat_torch import na2d  # noqa: E402  (pure-PyTorch NA from docs/design.md §2)

LEVELS = [(56, 2), (28, 4), (14, 8), (7, 16)]  # (size, heads) of NAT-Mini at 224²


def time_torch(size, heads, batch, dim, kernel, reps):
    g = torch.Generator().manual_seed(0)
    shape = (batch, heads, size, size, dim)
    q = torch.randn(shape, generator=g, requires_grad=True)
    k = torch.randn(shape, generator=g, requires_grad=True)
    v = torch.randn(shape, generator=g, requires_grad=True)
    rpb = torch.randn((heads, 2 * kernel - 1, 2 * kernel - 1), generator=g, requires_grad=True)
    times = []
    for r in range(reps + 1):
        t0 = time.perf_counter()
        out = na2d(q, k, v, rpb, kernel, 1)  # na2d scales q by dim^-0.5 itself
        out.backward(torch.ones_like(out))
        t = time.perf_counter() - t0
        for x in (q, k, v, rpb):
            x.grad = None
        if r > 0:  # first run is the warm-up
            times.append(t)
    return statistics.median(times) * 1e3


def time_nat(nat_bench, size, heads, batch, dim, kernel, reps, impl):
    cmd = [nat_bench, "na2d", "--batch", str(batch), "--heads", str(heads), "--size", str(size), "--dim", str(dim),
           "--kernel", str(kernel), "--impl", impl, "--pass", "fwdbwd", "--reps", str(reps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    m = re.search(r"RESULT impl=\S+ pass=\S+ ms=([0-9.]+) gflops=([0-9.]+) peak_mib=([0-9.]+)", out)
    if not m:
        raise RuntimeError(f"no RESULT line from {' '.join(cmd)}:\n{out}")
    return float(m.group(1)), float(m.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nat-bench", default="build/nat-bench")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    if not os.access(args.nat_bench, os.X_OK):
        sys.exit(f"na_torch_legacy: {args.nat_bench} not found: build nat first (cmake --build build)")
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    alloc = "jemalloc" if "jemalloc" in os.environ.get("LD_PRELOAD", "") else "glibc malloc"
    print(f"PyTorch {torch.__version__} ({alloc}), {args.threads} threads; nat: {args.nat_bench}; "
          f"batch {args.batch}, kernel 7, head dim 32, fwd+bwd, median of {args.reps}")
    print(f"{'level':>10} {'torch legacy ms':>16} {'nat gather ms':>14} {'nat fused ms':>13} "
          f"{'fused GFLOP/s':>14} {'vs torch':>9} {'vs gather':>10}")
    for size, heads in LEVELS:
        t_torch = time_torch(size, heads, args.batch, 32, 7, args.reps)
        t_gather, _ = time_nat(args.nat_bench, size, heads, args.batch, 32, 7, args.reps, "gather")
        t_fused, gf = time_nat(args.nat_bench, size, heads, args.batch, 32, 7, args.reps, "fused")
        print(f"{f'{size}²/{heads}h':>10} {t_torch:16.1f} {t_gather:14.1f} {t_fused:13.2f} {gf:14.1f} "
              f"{t_torch / t_fused:8.1f}× {t_gather / t_fused:9.1f}×", flush=True)


if __name__ == "__main__":
    main()
