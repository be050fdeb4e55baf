#!/usr/bin/env python3
"""bench/torch_gemm.py — PyTorch's CPU matmul GFLOP/s, the peer of `nat-bench gemm` (issue 14).

Times, in one process with torch.set_num_threads(--threads) (default 2, as nat), at 2048 x 2048 x 2048
and at every distinct Linear of NAT-Mini at 224², batch 8 (tokens 8·56², 8·28², 8·14², 8·7²; C = 64·2^i;
qkv and fc1 C -> 3C, proj C -> C, fc2 3C -> C, and the head 512 -> 1000 on 8 rows), each Linear as the
three products a training step does, in the layouts autograd uses:
  fwd  Y  = X · Wᵀ      M = tokens, N = out, K = in    (torch.nn.functional.linear without bias)
  dX   dX = dY · W      M = tokens, N = in,  K = out   (dY @ W)
  dW   dW = dYᵀ · X     M = out,    N = in,  K = tokens (dY.t() @ X)
in these implementations (column impl):
  f32       float32 operands, float32 result;
  bf16      bfloat16 operands, bfloat16 result (torch.matmul on bf16 tensors);
  bf16>f32  bfloat16 operands, float32 result (torch.mm(..., out_dtype=torch.float32), where this torch
            has it; else the rows are skipped with a note);
  autocast  float32 tensors under torch.autocast("cpu", dtype=torch.bfloat16): the casts of both
            operands are inside the time, result bf16 — what a bf16-autocast model's Linear pays.
GFLOP/s = 2·M·N·K / median time over --reps runs after --warmup runs (the 2048² case uses the same
counts). Prints a table and, with --csv FILE, appends one row per (impl, shape): impl, dtype, M, N, K,
ms, gflops, threads, torch version, date, CPU model (from /proc/cpuinfo), plus the shape's name and
pass. The default environment is assumed (no OMP_*/MKL_* variables besides the thread count).

    /work/venv/bin/python bench/torch_gemm.py [--threads 2] [--reps 20] [--warmup 3]
        [--impl f32,bf16,bf16>f32,autocast] [--only square|nat] [--csv FILE]
"""
import argparse
import datetime
import os
import platform
import statistics
import time

from bench_csv import append_rows  # bench/, this script's directory


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def shapes(only):
    """(name, pass, M, N, K, layout) with layout 'nt' (A · Bᵀ), 'nn' (A · B) or 'tn' (Aᵀ · B)."""
    out = []
    if only in (None, "square"):
        out.append(("square 2048", "fwd", 2048, 2048, 2048, "nn"))
    if only in (None, "nat"):
        for i, hw in enumerate((56, 28, 14, 7)):
            T, C = 8 * hw * hw, 64 * 2 ** i
            for lin, cin, cout in (("qkv/fc1", C, 3 * C), ("proj", C, C), ("fc2", 3 * C, C)):
                name = f"L{i + 1} {lin} {T}x{cin}->{cout}"
                out.append((name, "fwd", T, cout, cin, "nt"))
                out.append((name, "dX", T, cin, cout, "nn"))
                out.append((name, "dW", cout, cin, T, "tn"))
        out.append(("head 8x512->1000", "fwd", 8, 1000, 512, "nt"))
    return out


def operands(torch, M, N, K, layout, dtype):
    g = torch.Generator().manual_seed(0)
    # stored as a real model stores them: W [out, in] for 'nt', X [tokens, in] for 'tn'
    a = torch.randn((K, M) if layout == "tn" else (M, K), generator=g).to(dtype)
    b = torch.randn((N, K) if layout == "nt" else (K, N), generator=g).to(dtype)
    return a, b


def make_fn(torch, impl, layout, a, b):
    F = torch.nn.functional
    if impl in ("f32", "bf16"):
        if layout == "nt":
            return lambda: F.linear(a, b)
        if layout == "tn":
            return lambda: torch.matmul(a.t(), b)
        return lambda: torch.matmul(a, b)
    if impl == "bf16>f32":
        A = a.t() if layout == "tn" else a
        B = b.t() if layout == "nt" else b
        return lambda: torch.mm(A, B, out_dtype=torch.float32)
    if impl == "autocast":
        def fn():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                if layout == "nt":
                    return F.linear(a, b)
                if layout == "tn":
                    return torch.matmul(a.t(), b)
                return torch.matmul(a, b)
        return fn
    raise ValueError(impl)


def median_ms(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--impl", default="f32,bf16,bf16>f32,autocast")
    ap.add_argument("--only", choices=["square", "nat"], help="only the 2048² case or only NAT-Mini's shapes")
    ap.add_argument("--csv", help="append one row per (impl, shape) to this file")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    impls = [i for i in args.impl.split(",") if i]
    if "bf16>f32" in impls:
        try:
            x = torch.ones(4, 4, dtype=torch.bfloat16)
            assert torch.mm(x, x, out_dtype=torch.float32).dtype == torch.float32
        except (TypeError, RuntimeError, AssertionError) as e:
            print(f"torch_gemm: bf16>f32 skipped: torch.mm(..., out_dtype=float32) unavailable on this CPU build ({str(e).splitlines()[0][:120]})")
            impls.remove("bf16>f32")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    model = cpu_model()
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, {model}, {now}, "
          f"load average {os.getloadavg()[0]:.2f} at start; median of {args.reps} after {args.warmup}")
    print(f"{'shape':34} {'pass':4} {'M':>6} {'N':>5} {'K':>6} " + " ".join(f"{i + ' GF/s':>14}" for i in impls))
    rows = []
    for name, pas, M, N, K, layout in shapes(args.only):
        line = f"{name:34} {pas:4} {M:6} {N:5} {K:6} "
        for impl in impls:
            dtype = torch.float32 if impl in ("f32", "autocast") else torch.bfloat16
            a, b = operands(torch, M, N, K, layout, dtype)
            fn = make_fn(torch, impl, layout, a, b)
            ms = median_ms(fn, args.reps, args.warmup)
            gf = 2.0 * M * N * K / (ms * 1e-3) / 1e9
            line += f"{gf:14.1f} "
            rows.append({"impl": impl, "dtype": {"f32": "f32", "bf16": "bf16", "bf16>f32": "bf16 in, f32 out",
                                                 "autocast": "f32 in, autocast bf16"}[impl],
                         "M": M, "N": N, "K": K, "ms": f"{ms:.4f}", "gflops": f"{gf:.2f}",
                         "threads": torch.get_num_threads(), "torch": torch.__version__, "date_utc": now,
                         "cpu": model, "shape": name, "pass": pas, "layout": layout})
        print(line, flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    append_rows(args.csv, rows)


if __name__ == "__main__":
    main()
