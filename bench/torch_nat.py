#!/usr/bin/env python3
"""bench/torch_nat.py — nat against PyTorch on the same NAT, same batch and resolution, same cores, one run.

Builds NAT / DiNAT in PyTorch (tests/golden/nat_torch.py: PyTorch NAT's modules, neighborhood attention
written in PyTorch the legacy way — every query's k×k keys and values gathered with index tensors, then
einsum, softmax, einsum — which is what NATTEN's pure-PyTorch fallback did and what runs on a CPU without
NATTEN's kernels), and times
  * a training step: forward, label-smoothed (0.1) cross-entropy, backward, AdamW step (wd 0.05 off
    norms/biases/rpb), zero_grad;
  * inference: forward under torch.inference_mode();
each in a child process of its own — once with glibc malloc, once with jemalloc preloaded
(LD_PRELOAD=libjemalloc.so.2, Debian's libjemalloc2) — whose peak memory is the child's maxrss from
wait4 (the whole process: weights, activations, allocator caches). Then runs `nat-profile` on the same
model, batch and resolution (a subprocess too: its images/s, nat's allocator peak and its RSS peak) and
prints images/s and peak memory side by side with the ratios. For training nat runs twice: as is, and
with activation checkpointing (`nat-profile --recompute`: each layer's input kept, the layer recomputed
in the backward), the memory-saving mode; --nat-variants picks.

    /usr/bin/python3 bench/torch_nat.py [--model nat_mini] [--batch 8] [--res 224] [--steps 3]
        [--threads 2] [--mode train,infer] [--nat-variants plain,recompute] [--nat-profile build/nat-profile]
        [--csv FILE]

The PyTorch model has no drop-path (nat_torch.py is deterministic); nat's run keeps the variant's
drop-path, so nat does slightly more work. Medians of --steps steps after one warm-up step.
"""
import argparse
import csv
import datetime
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"

# C, depths, heads, mlp ratio, layer scale; DiNAT dilations as docs/design.md §3 / nat_desc.c
SIZES = {
    "mini": (64, [3, 4, 6, 5], [2, 4, 8, 16], 3.0, None),
    "tiny": (64, [3, 4, 18, 5], [2, 4, 8, 16], 3.0, None),
    "small": (96, [3, 4, 18, 5], [3, 6, 12, 24], 2.0, 1e-5),
    "base": (128, [3, 4, 18, 5], [4, 8, 16, 32], 2.0, 1e-5),
}


def build(name):
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))
    from nat_torch import NAT  # noqa: E402

    family, size = name.split("_", 1)
    C, depths, heads, mlp, ls = SIZES[size]
    dilations = None
    if family == "dinat":
        big = [8, 4, 2]
        dilations = [[(big[i] if j % 2 else 1) if i < 3 else 1 for j in range(depths[i])] for i in range(4)]
    return NAT(C, depths, heads, 7, dilations, mlp, ls, 3, 1000)


def child(args):
    """One PyTorch measurement; prints one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model)
    x = torch.randn(args.batch, 3, args.res, args.res)
    y = torch.randint(0, 1000, (args.batch,))
    times = []
    if args.mode == "train":
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith("rpb")]
        keep = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.endswith("rpb"))]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": keep, "weight_decay": 0.0}],
                                lr=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        for s in range(args.steps + 1):
            t0 = time.perf_counter()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t0)
    else:
        model.eval()
        with torch.inference_mode():
            for s in range(args.steps + 1):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    med = statistics.median(times[1:])
    print(json.dumps({"step_s": med, "first_s": times[0], "images_per_s": args.batch / med,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)


def run_measured(cmd, env):
    """Runs cmd; returns (stdout, maxrss bytes of that process alone)."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-3000:]}")
    return out, ru.ru_maxrss * 1024


def torch_run(args, mode, allocator):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env.pop("LD_PRELOAD", None)
    if allocator == "jemalloc":
        env["LD_PRELOAD"] = JEMALLOC
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--model", args.model, "--mode", mode, "--batch",
           str(args.batch), "--res", str(args.res), "--steps", str(args.steps), "--threads", str(args.threads)]
    out, rss = run_measured(cmd, env)
    r = json.loads(out.strip().splitlines()[-1])
    r["rss_peak"] = rss
    return r


def nat_run(args, mode, recompute):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env.pop("LD_PRELOAD", None)
    tmp = f"/tmp/torch_nat_{os.getpid()}.csv"
    if os.path.exists(tmp):
        os.unlink(tmp)
    cmd = [args.nat_profile, "--model", args.model, "--mode", mode, "--batch", str(args.batch), "--res",
           str(args.res), "--steps", str(args.nat_steps), "--csv", tmp] + (["--recompute"] if recompute else [])
    out, rss = run_measured(cmd, env)
    with open(tmp) as f:
        row = list(csv.DictReader(f))[-1]
    os.unlink(tmp)
    return {"images_per_s": float(row["images_per_s"]), "step_s": float(row["step_ms_median"]) / 1e3,
            "alloc_peak": float(row["alloc_peak_mib"]) * 2**20, "rss_peak": rss,
            "gflops": float(row["gflops"]), "mfu": float(row["mfu"]), "table": out}


def gib(b):
    return b / 2**30


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="nat_mini")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--steps", type=int, default=3, help="PyTorch steps timed (after one warm-up)")
    ap.add_argument("--nat-steps", type=int, default=5, help="nat steps timed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", default="train,infer")
    ap.add_argument("--allocators", default="glibc,jemalloc")
    ap.add_argument("--nat-variants", default="plain,recompute",
                    help="nat runs in training: plain, recompute (activation checkpointing), or both")
    ap.add_argument("--nat-profile", default=os.path.join(HERE, "..", "build", "nat-profile"))
    ap.add_argument("--csv", help="append one row per (mode, implementation) to this file")
    ap.add_argument("--show-nat", action="store_true", help="print nat-profile's per-layer tables")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if not os.access(args.nat_profile, os.X_OK):
        sys.exit(f"torch_nat: {args.nat_profile} not found: build nat first (cmake --build build)")
    allocators = [a for a in args.allocators.split(",") if a]
    if "jemalloc" in allocators and not os.path.exists(JEMALLOC):
        sys.exit(f"torch_nat: {JEMALLOC} missing: apt-get install libjemalloc2 (or --allocators glibc)")
    now = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
    print(f"{args.model} at {args.res}², batch {args.batch}, {args.threads} threads, {now}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    rows = []
    for mode in args.mode.split(","):
        results = {}
        for a in allocators:
            results[f"PyTorch ({a})"] = torch_run(args, mode, a)
            print(f"  {mode}: PyTorch {results[f'PyTorch ({a})']['torch']} with {a}: "
                  f"{results[f'PyTorch ({a})']['images_per_s']:.3f} images/s, "
                  f"RSS peak {gib(results[f'PyTorch ({a})']['rss_peak']):.2f} GiB", flush=True)
        variants = [v for v in args.nat_variants.split(",") if v] if mode == "train" else ["plain"]
        nats = {v: nat_run(args, mode, v == "recompute") for v in variants}
        if args.show_nat:
            for n in nats.values():
                print(n["table"])
        print(f"\n{mode} ({'forward, loss, backward, AdamW' if mode == 'train' else 'forward'}), "
              f"load average {os.getloadavg()[0]:.2f} at the end:")
        print(f"  {'':28} {'images/s':>9} {'step ms':>9} {'peak memory':>34}")
        for k, r in results.items():
            print(f"  {k:28} {r['images_per_s']:9.3f} {r['step_s'] * 1e3:9.0f} {'RSS ' + format(gib(r['rss_peak']), '.2f') + ' GiB':>34}")
        for v, n in nats.items():
            name = "nat (fused NA)" if v == "plain" else "nat (fused NA, recompute)"
            mem = f"allocator {gib(n['alloc_peak']):.2f} GiB, RSS {gib(n['rss_peak']):.2f} GiB"
            print(f"  {name:28} {n['images_per_s']:9.3f} {n['step_s'] * 1e3:9.0f} {mem:>34}")
            print(f"  {'':28} {n['gflops']:.1f} GFLOP/s, {100 * n['mfu']:.1f}% of the sgemm roofline")
        for v, n in nats.items():
            for k, r in results.items():
                speed = n["images_per_s"] / r["images_per_s"]
                mem_ratio = r["rss_peak"] / n["rss_peak"]
                mem_alloc = r["rss_peak"] / n["alloc_peak"]
                print(f"  nat{' (recompute)' if v == 'recompute' else ''} vs {k}: {speed:.1f}x the images/s; "
                      f"{mem_ratio:.1f}x less peak memory (RSS vs RSS; {mem_alloc:.1f}x against nat's allocator peak)")
                rows.append({"date_utc": now, "model": args.model, "mode": mode, "batch": args.batch, "res": args.res,
                             "threads": args.threads, "baseline": k,
                             "baseline_images_per_s": f"{r['images_per_s']:.4f}",
                             "baseline_rss_gib": f"{gib(r['rss_peak']):.3f}",
                             "nat_images_per_s": f"{n['images_per_s']:.4f}",
                             "nat_alloc_peak_gib": f"{gib(n['alloc_peak']):.3f}", "nat_rss_gib": f"{gib(n['rss_peak']):.3f}",
                             "speedup": f"{speed:.2f}", "memory_ratio_rss": f"{mem_ratio:.2f}", "nat_variant": v})
        print(flush=True)
    if args.csv and rows:
        new = not os.path.exists(args.csv) or os.path.getsize(args.csv) == 0
        with open(args.csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            if new:
                w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
