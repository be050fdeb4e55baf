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
        [--torch-na legacy,flex] [--torch-dtype f32,bf16] [--compile] [--warmup 1] [--no-nat]
        [--allocators glibc,jemalloc] [--csv FILE]

PyTorch variants (issue 14's peers; every combination of --torch-na x --torch-dtype is one child run):
  --torch-na legacy  the gather NA above (default);
  --torch-na flex    torch.nn.attention.flex_attention (torch >= 2.5) with a block mask from a mask_mod
                     that is NATTEN's clamped window and a score_mod adding the rpb (bench/na_vs_torch.py's
                     na_mask_mod / na_score_mod), one block mask per feature-map size, built before the
                     timed steps. FlexAttention on a CPU runs only compiled, so flex implies --compile.
  --torch-dtype f32  float32 (default); bf16: the forward (and the loss) under
                     torch.autocast("cpu", dtype=torch.bfloat16), weights and optimizer state float32.
  --compile          torch.compile(model) (inductor, default mode) for legacy too. The first --warmup
                     steps (compile included) are not timed; the child reports the first step's time and
                     "compile_s" = first step minus the median step.
Every child also saves its first step's logits; the parent compares each variant's logits with
PyTorch's eager legacy float32 forward of the same weights and input (max |difference|, and relative to
max |logit|) — flex must match legacy (to float32 rounding in f32, to bf16 rounding under autocast).
--no-nat skips nat-profile (PyTorch's side only: the peer figures). Needs a torch with torch.compile and
flex_attention for flex (e.g. /work/venv/bin/python, PyTorch 2.15 from PyPI); Debian's 1.13 runs legacy
only. Peer run of issue 14 (the default environment: only the thread count set):

    /work/venv/bin/python bench/torch_nat.py --no-nat --allocators glibc --mode infer \
        --torch-na legacy,flex --torch-dtype f32,bf16 --steps 5
    /work/venv/bin/python bench/torch_nat.py --no-nat --allocators glibc --mode train --torch-dtype f32,bf16

The PyTorch model has no drop-path (nat_torch.py is deterministic); nat's run keeps the variant's
drop-path, so nat does slightly more work. Medians of --steps steps after --warmup (default 1) warm-up steps.
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

from bench_csv import append_rows  # bench/, this script's directory

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


def flexify(model, res, torch):
    """Swaps every NeighborhoodAttention2D of model for FlexNeighborhoodAttention2D (same parameters) and
    builds each layer's block mask and score_mod for input resolution res."""
    sys.path.insert(0, HERE)
    from na_vs_torch import na_mask_mod, na_score_mod  # noqa: E402
    from nat_torch import NeighborhoodAttention2D  # noqa: E402
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: E402

    class FlexNeighborhoodAttention2D(NeighborhoodAttention2D):
        """NeighborhoodAttention2D with the gather NA replaced by flex_attention (padding, qkv, crop and
        proj are the base class's)."""

        def attend(self, q, k, v):
            B, heads, H, W, d = q.shape
            block_mask, score_mod = self.flex[(H, W)]
            o = flex_attention(q.reshape(B, heads, H * W, d), k.reshape(B, heads, H * W, d),
                               v.reshape(B, heads, H * W, d), score_mod=score_mod, block_mask=block_mask,
                               scale=self.scale)
            return o.reshape(B, heads, H, W, d)

    masks = {}
    # feature map of level i: tokenizer (two stride-2 3x3 convs, pad 1), then one per downsampler
    side = res
    for _ in range(2):
        side = (side + 1) // 2
    for level in model.levels:
        for blk in level.blocks:
            m = blk.attn
            H = W = max(side, m.window_size)
            key = (H, W, m.kernel_size, m.dilation)
            if key not in masks:
                masks[key] = create_block_mask(na_mask_mod(torch, (H, W), m.kernel_size, m.dilation), None, None,
                                               H * W, H * W, device="cpu")
            m.__class__ = FlexNeighborhoodAttention2D
            m.flex = {(H, W): (masks[key], na_score_mod(torch, (H, W), m.kernel_size, m.dilation, m.rpb))}
        side = (side + 1) // 2
    return model


def child(args):
    """One PyTorch measurement; prints one JSON line."""
    import contextlib

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model)
    x = torch.randn(args.batch, 3, args.res, args.res)
    y = torch.randint(0, 1000, (args.batch,))
    if args.torch_na == "flex":
        model = flexify(model, args.res, torch)
    compiled = args.compile or args.torch_na == "flex"
    net = torch.compile(model) if compiled else model
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.torch_dtype == "bf16" \
        else contextlib.nullcontext
    times = []
    first_logits = None
    if args.mode == "train":
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith("rpb")]
        keep = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.endswith("rpb"))]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": keep, "weight_decay": 0.0}],
                                lr=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        for s in range(args.steps + args.warmup):
            t0 = time.perf_counter()
            with amp():
                logits = net(x)
                loss = loss_fn(logits, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t0)
            if first_logits is None:
                first_logits = logits.detach().float()
    else:
        model.eval()
        with torch.inference_mode():
            for s in range(args.steps + args.warmup):
                t0 = time.perf_counter()
                with amp():
                    logits = net(x)
                times.append(time.perf_counter() - t0)
                if first_logits is None:
                    first_logits = logits.float().clone()
    if args.logits:
        torch.save(first_logits, args.logits)
    med = statistics.median(times[args.warmup:])
    print(json.dumps({"step_s": med, "first_s": times[0], "images_per_s": args.batch / med,
                      "compile_s": times[0] - med if compiled else 0.0, "steps": len(times) - args.warmup,
                      "all_s": times, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)


def reference_logits(args):
    """Eager legacy float32 inference logits on the children's weights and input (same seeds)."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model)
    x = torch.randn(args.batch, 3, args.res, args.res)
    model.eval()
    with torch.inference_mode():
        return model(x).float()


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


def torch_run(args, mode, allocator, na="legacy", dtype="f32"):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env.pop("LD_PRELOAD", None)
    if allocator == "jemalloc":
        env["LD_PRELOAD"] = JEMALLOC
    logits = f"/tmp/torch_nat_{os.getpid()}_logits.pt"
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--model", args.model, "--mode", mode, "--batch",
           str(args.batch), "--res", str(args.res), "--steps", str(args.steps), "--threads", str(args.threads),
           "--warmup", str(args.warmup), "--torch-na", na, "--torch-dtype", dtype, "--logits", logits] + \
        (["--compile"] if args.compile else [])
    out, rss = run_measured(cmd, env)
    r = json.loads(out.strip().splitlines()[-1])
    r["rss_peak"] = rss
    r["compiled"] = args.compile or na == "flex"
    if args.check:
        import torch

        got = torch.load(logits)
        if not hasattr(args, "_ref"):
            args._ref = reference_logits(args)
        ref = args._ref
        r["max_abs_diff"] = (got - ref).abs().max().item()
        r["max_abs_logit"] = ref.abs().max().item()
    if os.path.exists(logits):
        os.unlink(logits)
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
    ap.add_argument("--steps", type=int, default=3, help="PyTorch steps timed (after --warmup steps)")
    ap.add_argument("--nat-steps", type=int, default=5, help="nat steps timed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", default="train,infer")
    ap.add_argument("--allocators", default="glibc,jemalloc")
    ap.add_argument("--nat-variants", default="plain,recompute",
                    help="nat runs in training: plain, recompute (activation checkpointing), or both")
    ap.add_argument("--nat-profile", default=os.path.join(HERE, "..", "build", "nat-profile"))
    ap.add_argument("--csv", help="append one row per (mode, implementation) to this file")
    ap.add_argument("--show-nat", action="store_true", help="print nat-profile's per-layer tables")
    ap.add_argument("--torch-na", default="legacy", help="PyTorch NA: legacy, flex, or both (comma list)")
    ap.add_argument("--torch-dtype", default="f32", help="f32, bf16 (autocast), or both (comma list)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the PyTorch model (flex always is)")
    ap.add_argument("--warmup", type=int, default=1, help="PyTorch steps run before the timed ones")
    ap.add_argument("--no-nat", action="store_true", help="PyTorch only: do not run nat-profile")
    ap.add_argument("--no-check", action="store_true",
                    help="do not compare the variants' logits with the eager legacy float32 forward")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--logits", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    nas = [a for a in args.torch_na.split(",") if a]
    dtypes = [a for a in args.torch_dtype.split(",") if a]
    if set(nas) - {"legacy", "flex"} or set(dtypes) - {"f32", "bf16"}:
        sys.exit("torch_nat: --torch-na takes legacy,flex and --torch-dtype f32,bf16")
    variants = [(na, dt) for na in nas for dt in dtypes]
    args.check = not args.no_check and (args.compile or variants != [("legacy", "f32")])
    if not args.no_nat and not os.access(args.nat_profile, os.X_OK):
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
        for na, dt in variants:
            for a in allocators:
                plain = (na, dt) == ("legacy", "f32") and not args.compile
                comp = args.compile or na == "flex"
                key = f"PyTorch ({a})" if plain else f"PyTorch {na} {dt}{' compiled' if comp else ''} ({a})"
                r = results[key] = torch_run(args, mode, a, na, dt)
                r.update(na=na, dtype=dt, allocator=a)
                extra = f", compile {r['compile_s']:.1f} s (first step {r['first_s']:.1f} s)" if comp else ""
                if "max_abs_diff" in r:
                    extra += (f", logits vs eager legacy f32: max |diff| {r['max_abs_diff']:.3g} "
                              f"(max |logit| {r['max_abs_logit']:.3g})")
                print(f"  {mode}: PyTorch {r['torch']} {na} NA {dt}{' compiled' if comp else ''} with {a}: "
                      f"{r['images_per_s']:.3f} images/s (median of {r['steps']}, step {r['step_s'] * 1e3:.0f} ms), "
                      f"RSS peak {gib(r['rss_peak']):.2f} GiB{extra}; load average {os.getloadavg()[0]:.2f}",
                      flush=True)
        if args.no_nat:
            best = max(results, key=lambda k: results[k]["images_per_s"])
            print(f"  {mode}: fastest PyTorch variant: {best}, {results[best]['images_per_s']:.3f} images/s\n")
            for k, r in results.items():
                rows.append({"date_utc": now, "model": args.model, "mode": mode, "batch": args.batch,
                             "res": args.res, "threads": args.threads, "baseline": k,
                             "baseline_images_per_s": f"{r['images_per_s']:.4f}",
                             "baseline_rss_gib": f"{gib(r['rss_peak']):.3f}", "torch": r["torch"],
                             "torch_na": r["na"], "torch_dtype": r["dtype"], "torch_compiled": int(r["compiled"]),
                             "step_ms_median": f"{r['step_s'] * 1e3:.1f}", "steps": r["steps"],
                             "compile_s": f"{r['compile_s']:.1f}",
                             "max_abs_diff_vs_legacy_f32": f"{r.get('max_abs_diff', float('nan')):.4g}",
                             "load_avg_end": f"{os.getloadavg()[0]:.2f}"})
            continue
        variants_nat = [v for v in args.nat_variants.split(",") if v] if mode == "train" else ["plain"]
        nats = {v: nat_run(args, mode, v == "recompute") for v in variants_nat}
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
                             "speedup": f"{speed:.2f}", "memory_ratio_rss": f"{mem_ratio:.2f}", "nat_variant": v,
                             "torch_na": r["na"], "torch_dtype": r["dtype"], "torch_compiled": int(r["compiled"])})
        print(flush=True)
    append_rows(args.csv, rows)


if __name__ == "__main__":
    main()
