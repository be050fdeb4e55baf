#!/usr/bin/env python3
"""bench/na_vs_torch.py — nat's fused neighborhood attention against PyTorch's ways of doing NA on a GPU.

Times, on the same card and in the same process, 2-D/3-D neighborhood attention with rpb in bf16
(forward, and forward + backward):
  * nat: nat_na under autocast bf16 (v3 tensor cores where they apply, else v1), through ctypes on
    libnat_na_driver.so (bench/na_driver.c; built with nat: `cmake --build build --target nat_na_driver`);
  * legacy: the unfold-style pure-PyTorch NA (tests/golden/nat_torch.py's na2d: gather every query's
    k x k keys and values, matmul, softmax, matmul; autograd backward) — what NATTEN's fallback did;
  * flex: torch.nn.attention.flex_attention (torch >= 2.5) with a block mask from a mask_mod that is
    NATTEN's clamped window (dilation groups, windows shifted inward at borders) and a score_mod adding
    the rpb entry (k - 1) + key_pos - query_pos per axis, compiled with torch.compile.
Shapes: NAT-Mini's levels at batch 128 (56², 28², 14², 7²; heads 2, 4, 8, 16; head dim 32; k 7), a 256²
map with 4 heads of 64 (k 13), and a 3-D 16x28x28 problem (k 5; legacy is 2-D only). Each time is the
median of --reps runs after a warm-up, with a 256 MiB buffer written before each run (no L2 reuse).
Prints ms and ratios (legacy / nat, flex / nat: > 1 means nat is faster) and writes a CSV.

    python3 bench/na_vs_torch.py [--lib build/libnat_na_driver.so] [--reps 20] [--csv na_vs_torch.csv]
    python3 bench/na_vs_torch.py --check-cpu     # correctness of the references, on the CPU

--check-cpu needs no GPU: on a small problem it compares nat's CPU op (through the driver, f32) with the
legacy implementation and with dense attention masked by the same mask_mod / score_mod the flex
benchmark uses (evaluated on index grids, so it runs on torch without flex_attention), forward and the
gradients of q, k, v and rpb. Without a CUDA device or without flex_attention the benchmark itself
exits with a message saying which is missing (exit code 2).
"""
import argparse
import csv
import ctypes
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# (name, batch, heads, spatial, head dim, kernel)
SHAPES = [
    ("mini-56", 128, 2, (56, 56), 32, 7),
    ("mini-28", 128, 4, (28, 28), 32, 7),
    ("mini-14", 128, 8, (14, 14), 32, 7),
    ("mini-7", 128, 16, (7, 7), 32, 7),
    ("map-256", 1, 4, (256, 256), 64, 13),
    ("3d-16x28x28", 2, 4, (16, 28, 28), 32, 5),
]


# ---------------------------------------------------------------------------------------------------
# NATTEN's window as a flex_attention mask_mod / score_mod (docs/design.md §2), any number of axes


def _coords(idx, spatial):
    """Per-axis coordinates of flat pixel indices (row-major over `spatial`)."""
    out = []
    for n in reversed(spatial):
        out.append(idx % n)
        idx = idx // n
    return out[::-1]


def _window_start(torch, p_idx, length, kernel, dilation):
    g = p_idx % dilation
    p = p_idx // dilation
    lg = (length - g + dilation - 1) // dilation
    s = torch.clamp(p - kernel // 2, min=0)
    return torch.minimum(s, lg - kernel), g, p


def na_mask_mod(torch, spatial, kernel, dilation):
    def mask_mod(b, h, q_idx, kv_idx):
        ok = None
        for qi, ki, length in zip(_coords(q_idx, spatial), _coords(kv_idx, spatial), spatial):
            s, g, _ = _window_start(torch, qi, length, kernel, dilation)
            kp = ki // dilation
            m = (ki % dilation == g) & (kp >= s) & (kp < s + kernel)
            ok = m if ok is None else ok & m
        return ok

    return mask_mod


def na_score_mod(torch, spatial, kernel, dilation, rpb):
    """Adds rpb[h, (k-1) + key_pos - query_pos per axis] (positions inside the dilation group)."""
    ext = 2 * kernel - 1

    def score_mod(score, b, h, q_idx, kv_idx):
        flat = None
        for qi, ki in zip(_coords(q_idx, spatial), _coords(kv_idx, spatial)):
            r = torch.clamp(ki // dilation - qi // dilation + kernel - 1, 0, ext - 1)  # masked keys: any valid slot
            flat = r if flat is None else flat * ext + r
        return score + rpb.view(rpb.shape[0], -1)[h, flat]

    return score_mod


def dense_masked_reference(torch, q, k, v, rpb, kernel, dilation):
    """Attention over all pixels with the mask_mod / score_mod above evaluated on index grids."""
    B, H = q.shape[:2]
    spatial = tuple(q.shape[2:-1])
    D = q.shape[-1]
    n = 1
    for s in spatial:
        n *= s
    qi = torch.arange(n)[:, None]
    ki = torch.arange(n)[None, :]
    mask = na_mask_mod(torch, spatial, kernel, dilation)(0, 0, qi, ki)
    qf, kf, vf = (t.reshape(B, H, n, D) for t in (q, k, v))
    score = torch.einsum("bhqd,bhkd->bhqk", qf, kf) * D ** -0.5
    sm = na_score_mod(torch, spatial, kernel, dilation, rpb)
    hh = torch.arange(H)[:, None, None]
    score = score + (sm(torch.zeros(()), 0, hh, qi[None], ki[None]))
    score = score.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhqk,bhkd->bhqd", torch.softmax(score, -1), vf).reshape(q.shape)


# ---------------------------------------------------------------------------------------------------
# nat through ctypes


class Nat:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.nat_na_driver_run.restype = ctypes.c_int
        self.lib.nat_na_driver_time.restype = ctypes.c_double
        self.lib.nat_na_driver_error.restype = ctypes.c_char_p
        self.flush_t = ctypes.CFUNCTYPE(None)

    def _shape(self, shape):
        return (ctypes.c_int64 * len(shape))(*shape)

    def run(self, device, prec, q, k, v, rpb, kernel, dilation, grads=True):
        """Forward (and gradients of sum(out)) on float32 CPU tensors; returns (out, [dq, dk, dv, drpb])."""
        import torch

        ndim = q.dim() - 3
        ptr = lambda t: ctypes.c_void_p(t.data_ptr()) if t is not None else None  # noqa: E731
        q, k, v, rpb = (t.contiguous().float() for t in (q, k, v, rpb))
        out = torch.empty_like(q)
        g = [torch.empty_like(t) for t in (q, k, v, rpb)] if grads else [None] * 4
        rc = self.lib.nat_na_driver_run(device, prec, ndim, self._shape(q.shape), kernel, dilation, 0, ptr(q), ptr(k),
                                        ptr(v), ptr(rpb), ptr(out), *(ptr(x) for x in g))
        if rc != 0:
            raise RuntimeError(self.lib.nat_na_driver_error().decode())
        return out, g

    def time(self, device, prec, shape, kernel, dilation, backward, reps, flush):
        cb = self.flush_t(flush)
        ms = self.lib.nat_na_driver_time(device, prec, len(shape) - 3, self._shape(shape), kernel, dilation, 0, 1,
                                         1 if backward else 0, reps, cb)
        if ms < 0:
            raise RuntimeError(self.lib.nat_na_driver_error().decode())
        return ms


# ---------------------------------------------------------------------------------------------------


def check_cpu(nat, torch):
    from nat_torch import na2d  # tests/golden: pure-PyTorch NA (legacy, unfold-style gathers)

    torch.manual_seed(0)
    worst = 0.0
    cases = [(2, 2, (9, 10), 16, 5, 1), (1, 2, (11, 13), 8, 3, 3), (1, 1, (7, 7), 32, 7, 1), (1, 2, (5, 6, 7), 8, 3, 1),
             (1, 1, (40,), 16, 9, 2)]
    for (B, H, spatial, D, kernel, dil) in cases:
        shape = (B, H) + spatial + (D,)
        q, k, v = (torch.randn(shape, dtype=torch.float64) for _ in range(3))
        rpb = torch.randn((H,) + (2 * kernel - 1,) * len(spatial), dtype=torch.float64) * 0.5
        ours, g_ours = nat.run(-1, 0, q, k, v, rpb, kernel, dil)
        results = {}
        for name in ("legacy", "mask_mod") if len(spatial) == 2 else ("mask_mod",):
            x = [t.clone().requires_grad_(True) for t in (q, k, v, rpb)]
            if name == "legacy":
                out = na2d(x[0], x[1], x[2], x[3], kernel, dil)  # scales q by D^-1/2 itself
            else:
                out = dense_masked_reference(torch, x[0], x[1], x[2], x[3], kernel, dil)
            out.sum().backward()
            results[name] = (out.detach(), [t.grad for t in x])
        for name, (out, grads) in results.items():
            errs = [(out.float() - ours).abs().max().item() / max(out.abs().max().item(), 1.0)]
            errs += [(g.float() - go).abs().max().item() / max(g.abs().max().item(), 1.0) for g, go in zip(grads, g_ours)]
            worst = max(worst, max(errs))
            print(f"  {str(shape):>22} k{kernel} d{dil}: nat (CPU, f32) vs {name:>8}: forward {errs[0]:.2e}, "
                  f"dq {errs[1]:.2e}, dk {errs[2]:.2e}, dv {errs[3]:.2e}, drpb {errs[4]:.2e}")
    ok = worst <= 1e-4
    print(f"check-cpu: worst relative error {worst:.2e} ({'ok' if ok else 'FAILED'}, tolerance 1e-4)")
    return 0 if ok else 1


def median_ms(torch, fn, reps, flush):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    times = []
    for _ in range(reps):
        flush()
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--lib", default=os.path.join(HERE, "..", "build", "libnat_na_driver.so"),
                    help="path to libnat_na_driver.so (default: build/libnat_na_driver.so)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--csv", default="na_vs_torch.csv")
    ap.add_argument("--shape", action="append", help="only these shape names (repeatable)")
    ap.add_argument("--check-cpu", action="store_true", help="check the references against nat on the CPU and exit")
    args = ap.parse_args()

    try:
        import torch
    except ImportError:  # exit 2, as for the other missing prerequisites below
        print("na_vs_torch: PyTorch is not installed for this interpreter (try /usr/bin/python3, or "
              "scripts/torch-venv.sh)", file=sys.stderr)
        sys.exit(2)
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))
    if not os.path.exists(args.lib):
        sys.exit(f"na_vs_torch: {args.lib} not found: build it (cmake --build build --target nat_na_driver) "
                 "or pass --lib")
    nat = Nat(args.lib)
    if args.check_cpu:
        sys.exit(check_cpu(nat, torch))

    if not torch.cuda.is_available():
        print(f"na_vs_torch: no CUDA device visible to PyTorch {torch.__version__}: nothing to time "
              "(--check-cpu runs the CPU correctness checks)", file=sys.stderr)
        sys.exit(2)
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        print(f"na_vs_torch: torch.nn.attention.flex_attention is missing (PyTorch {torch.__version__}; it needs "
              ">= 2.5)", file=sys.stderr)
        sys.exit(2)
    from nat_torch import na2d

    dev = torch.device("cuda", 0)
    flush_buf = torch.empty(64 << 20, dtype=torch.float32, device=dev)
    flush = lambda: flush_buf.zero_()  # noqa: E731
    flex = torch.compile(flex_attention, dynamic=False)
    rows = []
    print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name(dev)}; bf16; median of {args.reps}, "
          "L2 flushed before each run")
    print(f"{'shape':>12} {'pass':>7} {'nat ms':>9} {'legacy ms':>10} {'flex ms':>9} {'legacy/nat':>11} {'flex/nat':>9}")
    for name, B, H, spatial, D, kernel in SHAPES:
        if args.shape and name not in args.shape:
            continue
        shape = (B, H) + spatial + (D,)
        n = 1
        for s in spatial:
            n *= s
        rpb_shape = (H,) + (2 * kernel - 1,) * len(spatial)
        mk = lambda: [torch.randn(shape, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]  # noqa
        q, k, v = mk()
        rpb = (torch.randn(rpb_shape, device=dev, dtype=torch.bfloat16) * 0.5).requires_grad_(True)
        block_mask = create_block_mask(na_mask_mod(torch, spatial, kernel, 1), None, None, n, n, device=dev)
        score_mod = na_score_mod(torch, spatial, kernel, 1, rpb)

        def run_flex(bwd):
            out = flex(*(t.view(B, H, n, D) for t in (q, k, v)), score_mod=score_mod, block_mask=block_mask)
            if bwd:
                out.backward(torch.ones_like(out))

        def run_legacy(bwd):
            out = na2d(q, k, v, rpb, kernel, 1)
            if bwd:
                out.backward(torch.ones_like(out))

        for bwd in (False, True):
            pass_name = "fwd+bwd" if bwd else "fwd"
            t_nat = nat.time(0, 1, shape, kernel, 1, bwd, args.reps, flush)
            with torch.set_grad_enabled(bwd):
                t_flex = median_ms(torch, lambda: run_flex(bwd), args.reps, flush)
                t_leg = float("nan")
                if len(spatial) == 2:
                    try:
                        t_leg = median_ms(torch, lambda: run_legacy(bwd), args.reps, flush)
                    except torch.cuda.OutOfMemoryError:
                        torch.cuda.empty_cache()
            print(f"{name:>12} {pass_name:>7} {t_nat:9.3f} {t_leg:10.3f} {t_flex:9.3f} {t_leg / t_nat:10.2f}x "
                  f"{t_flex / t_nat:8.2f}x", flush=True)
            rows.append(dict(shape=name, batch=B, heads=H, spatial="x".join(map(str, spatial)), dim=D, kernel=kernel,
                             dtype="bf16", pass_=pass_name, nat_ms=t_nat, legacy_ms=t_leg, flex_ms=t_flex,
                             legacy_over_nat=t_leg / t_nat, flex_over_nat=t_flex / t_nat))
            for t in (q, k, v, rpb):
                t.grad = None
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["shape"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
