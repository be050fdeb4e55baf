#!/usr/bin/env python3
"""bench/train_parity.py — does nat learn as well as PyTorch? The same config, the same network, the same
recipe, trained by nat-train and by PyTorch, several seeds each; test top-1 (weights and EMA), images/s
and peak memory side by side.

    .venv/bin/python bench/train_parity.py configs/nat_mini.cfg [--seeds 0,1,2] [--side both|nat|torch]
        [--nat-train build/nat-train] [--threads 2] [--out DIR] [--csv FILE] [--reuse]
        [--set section.key=value ...]

How the two sides agree on the recipe. The config is resolved by nat-train itself (`nat-train CONFIG
--dry-run` prints every key after defaults, presets and --set), and PyTorch's side reads that: model
(embed_dim, depths, heads, kernel_size, dilations, mlp_ratio, drop_path, layer_scale, patch_stride), data
(fashion-mnist / mnist IDX files, mean/std, train/test limits), aug (random_crop with zero padding,
hflip, label_smoothing), optim (AdamW: lr, warmup_lr, warmup_epochs, min_lr, betas, eps, weight decay off
biases / norms / rpb / gammas, clip_grad), train (epochs, batch_size, accum_steps, seed, ema, ema_decay,
eval_every, precision f32 or bf16 autocast). A key PyTorch's side does not implement (mixup, cutmix,
erasing, dropout, random_resized_crop, SGD, f16, ...) set to anything but its off value stops the script
with the key named, before anything trains. Per-step schedule: nat's (train/schedule.c): linear warm-up
from warmup_lr over round(warmup_epochs x steps/epoch) steps, then cosine to min_lr; EMA decay
min(decay, (1+t)/(10+t)) (train/ema.c); the last partial batch of an epoch is dropped, as nat does.

The PyTorch network is tests/golden/nat_torch.py's NAT (PyTorch NAT's modules and names, drop-path as
nat's) initialised as nat initialises (linear weights truncated normal std 0.02 at +-2 std and zero
biases, convolutions PyTorch's default, LayerNorm 1/0, rpb truncated normal 0.02). Its NA is by default
dense attention over the whole map with an additive mask (rpb inside each query's k x k window, -inf
outside; class DenseNA): the golden gather NA's softmax over the same logits, checked against it in
float64 (forward and every gradient) on the model's own map sizes before each run starts, and 3x
faster on 7x7 maps; --torch-na golden trains with the gather NA itself. What cannot be the same: random
streams (initial weights, data order, drop-path masks), so single runs differ by seed noise; hence
several seeds per side.

That the two sides build the same network is checked too: after nat's runs, PyTorch's network loads each
final nat checkpoint (strict=True; the EMA weights are its "ema." tensors) and evaluates the test set;
its top-1 must be nat-eval's (--no-cross-check skips this).

Each run is a child process (nat-train, or this script with --child) so its peak memory is its own
maxrss (wait4): the whole process, data set included. images/s: training images over training seconds,
evaluations excluded, on each side. Both sides get --threads threads: nat as its config says (the main
job: 2 data-parallel replicas of one thread), PyTorch as torch.set_num_threads(threads).

Output: one line per run as it ends, the table (mean +- sample standard deviation over seeds, and the
difference of the means against the floor of issue 19: at most 0.3 points, or less than two spreads),
and with --csv one row per run (appended; bench/bench_csv.py). --reuse takes a finished run's figures
from DIR/<side>_seed<S>.json, or for nat from a finished DIR/nat_seed<S>.log (nat-train's output, with
/usr/bin/time -v's report for the peak RSS), instead of training again (the runs are deterministic for a
thread count).
"""
import argparse
import concurrent.futures
import configparser
import datetime
import gzip
import json
import math
import os
import re
import statistics
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def die(msg):
    print(f"train_parity.py: {msg}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------------
# The config, as nat-train resolves it


def resolve_config(nat_train, config, sets):
    """Every key of CONFIG after nat-train's defaults, presets and --set, as {section: {key: str}}."""
    cmd = [nat_train, config, "--dry-run"]  # a dry run creates no run directory
    for s in sets:
        cmd += ["--set", s]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        die(f"cannot run {nat_train}: {e} (build nat first, or pass --nat-train)")
    if p.returncode != 0:
        die(f"nat-train refused the config:\n{p.stderr.strip() or p.stdout.strip()}")
    # The printed config starts at its first section and ends where the plan ("model ...: N level(s)") starts.
    text = p.stdout.split("\nmodel ", 1)[0]
    text = text[text.find("\n[") + 1:] if not text.startswith("[") else text
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    return {s: dict(cp[s]) for s in cp.sections()}


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


class Recipe:
    """The resolved config as the PyTorch side uses it; refuses what it does not implement."""

    def __init__(self, cfg, config_path):
        def get(sec, key):
            try:
                return cfg[sec][key]
            except KeyError:
                die(f"{config_path}: nat-train printed no {sec}.{key} (nat-train and this script disagree)")

        def off(sec, key, value, what):
            v = get(sec, key)
            if v.strip() != value and not (value == "0" and float(v or 0) == 0.0):
                die(f"{config_path}: {sec}.{key} = {v}: {what} is not implemented on PyTorch's side of the parity "
                    f"run; set it to {value} (--set {sec}.{key}={value}) or compare without it")

        m, d, a, o, t = (cfg.get(s, {}) for s in ("model", "data", "aug", "optim", "train"))
        self.embed_dim = int(get("model", "embed_dim"))
        self.depths = ints(get("model", "depths"))
        self.heads = ints(get("model", "heads"))
        self.kernel = int(get("model", "kernel_size"))
        dil = get("model", "dilations").strip()
        self.dilations = [ints(level) for level in dil.split("/")] if dil else None
        self.mlp_ratio = float(get("model", "mlp_ratio"))
        self.drop_path = float(get("model", "drop_path"))
        ls = float(get("model", "layer_scale"))
        self.layer_scale = ls if ls > 0 else None
        self.patch_stride = int(get("model", "patch_stride"))
        off("model", "qkv_bias", "true", "a qkv projection without bias")
        off("model", "qk_scale", "0", "a custom attention scale")
        off("model", "drop", "0", "dropout")
        off("model", "attn_drop", "0", "attention dropout")

        self.format = get("data", "format")
        if self.format not in ("fashion-mnist", "mnist"):
            die(f"{config_path}: data.format = {self.format}: PyTorch's side reads IDX files (fashion-mnist, mnist) only")
        self.root = get("data", "root") or "/usr/share/datasets/fashion-mnist"
        size = int(get("data", "img_size"))
        if size not in (0, 28):
            die(f"{config_path}: data.img_size = {size}: PyTorch's side trains at 28x28 only")
        mean, std = get("data", "mean").strip(), get("data", "std").strip()
        self.mean = float(mean) if mean else (0.2860 if self.format == "fashion-mnist" else 0.1307)
        self.std = float(std) if std else (0.3530 if self.format == "fashion-mnist" else 0.3081)
        self.train_limit = int(get("data", "train_limit"))
        self.test_limit = int(get("data", "test_limit"))

        self.crop = get("aug", "crop")
        if self.crop not in ("none", "random_crop"):
            die(f"{config_path}: aug.crop = {self.crop}: PyTorch's side implements none and random_crop")
        self.padding = int(get("aug", "padding"))
        self.hflip = float(get("aug", "hflip"))
        off("aug", "erasing", "0", "random erasing")
        off("aug", "mixup", "0", "mixup")
        off("aug", "cutmix", "0", "cutmix")
        self.label_smoothing = float(get("aug", "label_smoothing"))

        if get("optim", "name") != "adamw":
            die(f"{config_path}: optim.name = {get('optim', 'name')}: PyTorch's side implements adamw")
        if int(get("optim", "lr_batch")) != 0:
            die(f"{config_path}: optim.lr_batch: set the learning rate itself (lr_batch = 0) for the parity run")
        self.lr = float(get("optim", "lr"))
        self.min_lr = min(float(get("optim", "min_lr")), self.lr)
        self.warmup_lr = float(get("optim", "warmup_lr"))
        self.warmup_epochs = float(get("optim", "warmup_epochs"))
        self.weight_decay = float(get("optim", "weight_decay"))
        self.betas = (float(get("optim", "beta1")), float(get("optim", "beta2")))
        self.eps = float(get("optim", "eps"))
        self.clip_grad = float(get("optim", "clip_grad"))

        self.epochs = int(get("train", "epochs"))
        self.batch = int(get("train", "batch_size"))
        self.accum = int(get("train", "accum_steps"))
        self.max_steps = int(get("train", "max_steps"))
        self.ema = get("train", "ema") == "true"
        self.ema_decay = float(get("train", "ema_decay"))
        self.eval_every = int(get("train", "eval_every"))
        self.eval_batch = int(get("train", "eval_batch_size"))
        self.precision = get("train", "precision")
        if self.precision not in ("f32", "bf16"):
            die(f"{config_path}: train.precision = {self.precision}: PyTorch's side implements f32 and bf16 (autocast)")
        if get("train", "device") != "cpu":
            die(f"{config_path}: train.device = {get('train', 'device')}: the parity run is a CPU comparison")


# ---------------------------------------------------------------------------------------------------
# PyTorch's side (runs in a child: `train_parity.py --child JSON`)


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        raw = f.read()
    magic, = struct.unpack(">I", raw[:4])
    nd = magic & 0xFF
    dims = struct.unpack(">" + "I" * nd, raw[4:4 + 4 * nd])
    return raw[4 + 4 * nd:], dims


def load_split(root, prefix, limit):
    import torch
    for ext in (".gz", ""):
        ip, lp = f"{root}/{prefix}-images-idx3-ubyte{ext}", f"{root}/{prefix}-labels-idx1-ubyte{ext}"
        if os.path.exists(ip) and os.path.exists(lp):
            break
    else:
        die(f"{root}: no {prefix}-images-idx3-ubyte(.gz) / {prefix}-labels-idx1-ubyte(.gz)")
    img, idims = read_idx(ip)
    lab, ldims = read_idx(lp)
    x = torch.frombuffer(bytearray(img), dtype=torch.uint8).reshape(idims[0], 1, idims[1], idims[2])
    y = torch.frombuffer(bytearray(lab), dtype=torch.uint8).long()
    if limit > 0:
        x, y = x[:limit], y[:limit]
    return x, y


def lr_at(r, steps_per_epoch, total, step):
    """train/schedule.c."""
    warm = min(int(round(r.warmup_epochs * steps_per_epoch)), total)
    if step < warm:
        return r.warmup_lr + (r.lr - r.warmup_lr) * (step + 1) / warm
    span = total - warm
    if span <= 0 or step >= total:
        return r.lr if span <= 0 and step < total else r.min_lr
    p = (step - warm) / span
    return r.min_lr + 0.5 * (r.lr - r.min_lr) * (1.0 + math.cos(math.pi * p))


class DenseNA:
    """Neighborhood attention as dense attention over the whole (small) map with an additive mask: rpb at
    each query's k x k neighbours (the same keys and rpb slots as the golden NA, nat_torch.na_indices),
    -inf elsewhere, through F.scaled_dot_product_attention. The same softmax over the same logits as
    nat_torch's gather NA, up to float rounding (checked in float64 at start-up, `check`), and 3x
    faster on Fashion-MNIST's 7x7 maps because it runs a few large GEMMs instead of gathers; it costs
    (H W)^2 per head, so it is for small maps only."""

    def __init__(self):
        self.cache = {}

    def indices(self, H, W, kernel, dilation):
        import torch
        key = (H, W, kernel, dilation)
        if key not in self.cache:
            import nat_torch
            kh, rh = nat_torch.na_indices(H, kernel, dilation)
            kw, rw = nat_torch.na_indices(W, kernel, dilation)
            shape = (H, W, kernel, kernel)
            qi = (torch.arange(H)[:, None, None, None] * W + torch.arange(W)[None, :, None, None]).expand(shape)
            ki = (kh[:, None, :, None] * W + kw[None, :, None, :]).expand(shape)
            ry = rh[:, None, :, None].expand(shape)
            rx = rw[None, :, None, :].expand(shape)
            self.cache[key] = tuple(t.reshape(-1) for t in (qi, ki, ry, rx))
        return self.cache[key]

    def __call__(self, mod, q, k, v):
        import torch
        import torch.nn.functional as F
        B, nh, H, W, D = q.shape
        qi, ki, ry, rx = self.indices(H, W, mod.kernel_size, mod.dilation)
        L = H * W
        bias = torch.full((nh, L, L), float("-inf"), dtype=q.dtype, device=q.device)
        bias = bias.index_put((torch.arange(nh)[:, None], qi[None], ki[None]), mod.rpb[:, ry, rx].to(q.dtype))
        o = F.scaled_dot_product_attention(q.reshape(B, nh, L, D), k.reshape(B, nh, L, D), v.reshape(B, nh, L, D),
                                           attn_mask=bias[None], scale=mod.scale)
        return o.reshape(B, nh, H, W, D)

    def check(self, shapes):
        """Dense against the golden gather NA, forward and every gradient, float64, on the model's maps."""
        import torch
        import nat_torch
        g = torch.Generator().manual_seed(0)
        worst = 0.0
        for (H, W, kernel, dilation, nh, D) in shapes:
            mod = nat_torch.NeighborhoodAttention2D(nh * D, nh, kernel, dilation).double()
            with torch.no_grad():
                mod.rpb.normal_(generator=g)
            q, k, v = (torch.randn(2, nh, H, W, D, generator=g, dtype=torch.float64, requires_grad=True)
                       for _ in range(3))
            dout = torch.randn(2, nh, H, W, D, generator=g, dtype=torch.float64)
            res = []
            for fn in (lambda: nat_torch.NeighborhoodAttention2D.attend(mod, q, k, v), lambda: self(mod, q, k, v)):
                out = fn()
                res.append((out,) + torch.autograd.grad((out * dout).sum(), (q, k, v, mod.rpb)))
            for a, b in zip(*res):
                worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item())
        if worst > 1e-10:
            die(f"dense NA differs from the golden NA by {worst:.3g} (relative): not the same attention")
        return worst


def use_dense_na(r, label):
    """Checks the dense NA against the golden one on the model's maps, then makes it the model's NA."""
    import nat_torch
    side = 28 // r.patch_stride  # the tokenizer's output, halved per level (ceil), padded up to the window
    shapes = []
    for i, (depth, nh) in enumerate(zip(r.depths, r.heads)):
        dim = r.embed_dim * 2 ** i
        for j in range(depth):
            dil = r.dilations[i][j] if r.dilations else 1
            n = max(side, r.kernel * dil)
            shapes.append((n, n, r.kernel, dil, nh, dim // nh))
        side = (side + 1) // 2
    dense = DenseNA()
    worst = dense.check(sorted(set(shapes)))
    print(f"  {label}: dense NA = golden NA on maps {sorted(set(s[:2] for s in shapes))}: worst relative "
          f"difference {worst:.2g} (float64, forward and gradients)", file=sys.stderr, flush=True)
    nat_torch.NeighborhoodAttention2D.attend = lambda mod, q, k, v: dense(mod, q, k, v)


def build_model(r, num_classes):
    import nat_torch
    return nat_torch.NAT(r.embed_dim, r.depths, r.heads, r.kernel, r.dilations, r.mlp_ratio, r.layer_scale,
                         in_chans=1, num_classes=num_classes, drop_path_rate=r.drop_path, patch_stride=r.patch_stride)


def normalise(r, x):
    return (x.float() / 255.0 - r.mean) / r.std


def top1(model, r, x, y, autocast):
    """Test top-1 (%) in eval mode, batches of train.eval_batch_size."""
    import torch
    model.eval()
    correct = 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for i in range(0, x.shape[0], r.eval_batch):
            correct += int((model(normalise(r, x[i:i + r.eval_batch])).argmax(1) == y[i:i + r.eval_batch]).sum())
    return 100.0 * correct / x.shape[0]


def torch_crosscheck(job):
    """PyTorch's network evaluating nat's trained weights: nat's checkpoint (PyTorch NAT's tensor names, the
    EMA under "ema.") loaded with strict=True, the test set through the same normalisation. Equal
    accuracy means the two sides train the same network."""
    import torch
    import nat_torch
    r = Recipe(job["cfg"], job["config"])
    torch.set_num_threads(job["threads"])
    if job["torch_na"] == "dense":
        use_dense_na(r, f"cross-check seed {job['seed']}")
    xte, yte = load_split(r.root, "t10k", r.test_limit)
    tensors, _ = nat_torch.load_safetensors(job["checkpoint"])
    res = {}
    for which, prefix in (("top1", ""), ("ema_top1", "ema.")):
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and
              not k.startswith("optim.") and (prefix or not k.startswith("ema."))}
        if not sd:
            continue
        model = build_model(r, int(sd["head.weight"].shape[0]))
        model.load_state_dict(sd, strict=True)
        res[which] = top1(model, r, xte, yte, r.precision == "bf16")
    print("RESULT " + json.dumps(res), flush=True)


def torch_child(args):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    sys.path.insert(0, os.path.join(ROOT, "tests", "golden"))

    job = json.loads(args.child)
    if job.get("checkpoint"):
        return torch_crosscheck(job)
    r = Recipe(job["cfg"], job["config"])
    seed = job["seed"]
    torch.set_num_threads(job["threads"])
    if job["torch_na"] == "dense":
        use_dense_na(r, f"torch seed {seed}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed ^ 0x6E61742D)

    xtr, ytr = load_split(r.root, "train", r.train_limit)
    xte, yte = load_split(r.root, "t10k", r.test_limit)
    num_classes = int(max(ytr.max(), yte.max())) + 1

    model = build_model(r, num_classes)
    for name, p in model.named_parameters():  # nat's initialisation (layers/linear.c, na_module.c, layernorm.c)
        mod = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if isinstance(mod, nn.Linear):
            if name.endswith("weight"):
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
            else:
                nn.init.zeros_(p)
        elif name.endswith("rpb"):
            nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith("rpb")]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.endswith("rpb"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=r.lr, betas=r.betas, eps=r.eps)
    ema = None
    if r.ema:
        ema = [p.detach().clone() for p in model.parameters()]

    n = xtr.shape[0]
    micro = r.batch
    spe = (n // micro) // r.accum
    total = spe * r.epochs
    stop = min(total, r.max_steps) if r.max_steps > 0 else total
    autocast = r.precision == "bf16"

    def prep(x, train):
        """Crop and flip the uint8 images (zero padding: black, as 0 after /255), then normalise."""
        if train and r.crop == "random_crop" and r.padding > 0:
            B, _, H, W = x.shape
            xp = F.pad(x, (r.padding,) * 4)
            oy = torch.randint(0, 2 * r.padding + 1, (B,), generator=gen)
            ox = torch.randint(0, 2 * r.padding + 1, (B,), generator=gen)
            iy = oy[:, None] + torch.arange(H)[None, :]  # [B, H]: each image's window rows
            ix = ox[:, None] + torch.arange(W)[None, :]
            x = xp[torch.arange(B)[:, None, None], 0, iy[:, :, None], ix[:, None, :]][:, None]
        if train and r.hflip > 0:
            flip = torch.rand(x.shape[0], generator=gen) < r.hflip
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return normalise(r, x)

    def evaluate(params_from):
        saved = None
        if params_from is not None:
            saved = [p.detach().clone() for p in model.parameters()]
            with torch.no_grad():
                for p, e in zip(model.parameters(), params_from):
                    p.copy_(e)
        acc = top1(model, r, xte, yte, autocast)
        model.train()
        if saved is not None:
            with torch.no_grad():
                for p, s in zip(model.parameters(), saved):
                    p.copy_(s)
        return acc

    evals = []
    train_s = 0.0
    images = 0
    step = 0
    model.train()
    t_start = time.perf_counter()
    for epoch in range(r.epochs):
        perm = torch.randperm(n, generator=gen)
        t0 = time.perf_counter()
        for s in range(spe):
            if step >= stop:
                break
            lr = lr_at(r, spe, total, step)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            for a in range(r.accum):
                idx = perm[(s * r.accum + a) * micro:(s * r.accum + a + 1) * micro]
                x, y = prep(xtr[idx], True), ytr[idx]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing) / r.accum
                loss.backward()
                images += x.shape[0]
            if r.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), r.clip_grad)
            opt.step()
            if ema is not None:
                d = min(r.ema_decay, (1.0 + step) / (10.0 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(ema, [p.detach() for p in model.parameters()], 1.0 - d)
            step += 1
            if job.get("progress") and step % 50 == 0:
                el = train_s + time.perf_counter() - t0
                print(f"  torch seed {seed}: step {step}/{stop}  loss {loss.item() * r.accum:.4f}  lr {lr:.2e}  "
                      f"{images / el:.0f} img/s  ETA {(stop - step) * el / step / 60:.1f} min", file=sys.stderr,
                      flush=True)
        train_s += time.perf_counter() - t0
        last = step >= stop or epoch == r.epochs - 1
        if last or (not job["eval_last"] and r.eval_every > 0 and (epoch + 1) % r.eval_every == 0):
            row = {"epoch": epoch + 1, "step": step, "top1": evaluate(None)}
            if ema is not None:
                row["ema_top1"] = evaluate(ema)
            evals.append(row)
            print(f"  torch seed {seed}: epoch {epoch + 1}: test top-1 {row['top1']:.2f}%"
                  + (f", EMA {row['ema_top1']:.2f}%" if ema is not None else ""), file=sys.stderr, flush=True)
        if step >= stop:
            break
    res = {"side": "torch", "seed": seed, "steps": step, "top1": evals[-1]["top1"],
           "ema_top1": evals[-1].get("ema_top1"), "best": max(max(e["top1"], e.get("ema_top1") or 0) for e in evals),
           "images_per_s": images / train_s, "train_s": train_s, "wall_s": time.perf_counter() - t_start,
           "evals": evals, "torch": torch.__version__, "threads": torch.get_num_threads()}
    print("RESULT " + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------------------------
# The parent: children, figures, table


def run_child(cmd, log_path, env=None):
    """Runs cmd with stdout+stderr to log_path (and to our stderr as progress); returns (rc, maxrss MiB, wall s)."""
    t0 = time.time()
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in p.stdout:
            log.write(line)
            log.flush()
            if line.startswith("summary:") or (line.startswith("  torch seed") and "step" not in line):
                sys.stderr.write(f"[{os.path.basename(log_path)}] {line.strip()}\n")
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru.ru_maxrss / 1024.0, time.time() - t0


def nat_run(args, seed):
    d = os.path.join(args.out, f"nat_seed{seed}")
    cmd = [args.nat_train, args.config, "--out", d, "--overwrite", "--set", f"train.seed={seed}"]
    for s in args.set:
        cmd += ["--set", s]
    env = dict(os.environ)
    log = os.path.join(args.out, f"nat_seed{seed}.log")
    print(f"nat seed {seed}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    rc, rss, wall = run_child(cmd, log, env)
    if rc != 0:
        die(f"nat-train (seed {seed}) exited with {rc}; its output: {log}")
    return parse_nat_log(log, seed, rss, wall)


def parse_nat_log(log, seed, rss=None, wall=None):
    """The figures of a finished nat-train run from its output (the summary lines; with /usr/bin/time -v's
    report appended, its maximum resident set size)."""
    text = open(log).read()
    if rss is None:
        mr = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        rss = int(mr.group(1)) / 1024.0 if mr else None
    if wall is None:
        mw = re.search(r"this run (?:(\d+)h)?(?:(\d+)m)?([\d.]+)s wall", text)
        wall = (int(mw.group(1) or 0) * 3600 + int(mw.group(2) or 0) * 60 + float(mw.group(3))) if mw else None
    m = re.search(r"summary: .*?in \S+ of training \((\d+) img/s\)", text)
    m2 = re.search(r"summary: test top-1 ([\d.]+)%.*?(?:EMA top-1 ([\d.]+)%.*?)?best top-1 ([\d.]+)%", text)
    m3 = re.search(r"summary: .*?peak memory (\d+) MiB", text)
    if not (m and m2):
        die(f"{log}: no summary lines from nat-train")
    return {"side": "nat", "seed": seed, "top1": float(m2.group(1)),
            "ema_top1": float(m2.group(2)) if m2.group(2) else None, "best": float(m2.group(3)),
            "images_per_s": float(m.group(1)), "wall_s": wall, "peak_rss_mib": rss,
            "nat_alloc_peak_mib": float(m3.group(1)) if m3 else None}


def torch_run(args, cfg, seed):
    job = {"cfg": cfg, "config": args.config, "seed": seed, "threads": args.threads, "progress": True,
           "torch_na": args.torch_na, "eval_last": args.eval_last}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(job)]
    log = os.path.join(args.out, f"torch_seed{seed}.log")
    print(f"torch seed {seed}: {sys.executable} bench/train_parity.py --child ... ({args.threads} threads)",
          file=sys.stderr, flush=True)
    rc, rss, wall = run_child(cmd, log)
    if rc != 0:
        die(f"PyTorch's run (seed {seed}) exited with {rc}; its output: {log}")
    line = [ln for ln in open(log) if ln.startswith("RESULT ")]
    if not line:
        die(f"{log}: PyTorch's run printed no result")
    res = json.loads(line[-1][7:])
    res["peak_rss_mib"] = rss
    res["wall_s"] = wall
    return res


def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def fmt(ms, digits=2):
    m, s = ms
    return "—" if m is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--side", default="both", choices=("both", "nat", "torch"))
    ap.add_argument("--nat-train", default=os.path.join(ROOT, "build", "nat-train"))
    ap.add_argument("--threads", type=int, default=2, help="PyTorch's threads per run (nat: its config's)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time (e.g. 2 with --threads 1 on two cores: seeds side by side; their "
                         "images/s then share the machine)")
    ap.add_argument("--torch-na", default="dense", choices=("dense", "golden"),
                    help="PyTorch's NA: dense masked attention checked against the golden NA (default), or the "
                         "golden gather NA itself (3x slower in training at 2 threads)")
    ap.add_argument("--eval-last", action="store_true",
                    help="PyTorch's side evaluates after the last epoch only (saves its evaluations' time; "
                         "'best during training' is then the last)")
    ap.add_argument("--out", default=None, help="directory for the runs and logs (default runs/parity-DATE)")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--reuse", action="store_true", help="take finished runs' figures from OUT/<side>_seed<S>.json")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a key on both sides (nat-train --set)")
    ap.add_argument("--no-cross-check", action="store_true",
                    help="skip evaluating nat's final weights in PyTorch's network (done by default for nat's runs)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return torch_child(args)
    if not args.config:
        ap.error("CONFIG is required (e.g. configs/nat_mini.cfg)")
    if not os.path.isfile(args.config):
        die(f"{args.config}: no such config file")
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = resolve_config(args.nat_train, args.config, args.set)
    Recipe(cfg, args.config)  # refuses what PyTorch's side cannot do, before anything trains
    if args.side in ("both", "torch"):
        try:
            import torch  # noqa: F401
        except ImportError:
            die(f"{sys.executable} has no torch: run this with the virtual environment of scripts/torch-venv.sh")
    args.out = args.out or os.path.join(ROOT, "runs", "parity-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(args.out, exist_ok=True)
    sides = ["nat", "torch"] if args.side == "both" else [args.side]
    results = {(side, seed): None for side in sides for seed in seeds}
    lock = threading.Lock()

    def one(side, seed):
        cache = os.path.join(args.out, f"{side}_seed{seed}.json")
        log = os.path.join(args.out, f"{side}_seed{seed}.log")
        if args.reuse and os.path.exists(cache):
            res = json.load(open(cache))
            print(f"{side} seed {seed}: reused {cache}", file=sys.stderr)
        elif args.reuse and side == "nat" and os.path.exists(log) and "summary: test top-1" in open(log).read():
            res = parse_nat_log(log, seed)
            res.update(config=args.config, sets=args.set, reused_log=log)
            json.dump(res, open(cache, "w"), indent=1)
            print(f"{side} seed {seed}: reused the finished run in {log}", file=sys.stderr)
        else:
            res = nat_run(args, seed) if side == "nat" else torch_run(args, cfg, seed)
            res.update(config=args.config, sets=args.set, jobs=args.jobs,
                       date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
            json.dump(res, open(cache, "w"), indent=1)
        with lock:
            results[(side, seed)] = res
            print(f"{side} seed {seed}: test top-1 {res['top1']:.2f}%"
                  + (f", EMA {res['ema_top1']:.2f}%" if res.get("ema_top1") is not None else "")
                  + f", {res['images_per_s']:.0f} img/s"
                  + (f", peak RSS {res['peak_rss_mib']:.0f} MiB" if res.get("peak_rss_mib") else "")
                  + (f", {res['wall_s'] / 60:.1f} min" if res.get("wall_s") else ""), flush=True)
            if args.csv:
                sys.path.insert(0, HERE)
                from bench_csv import append_rows
                row = {k: res.get(k) for k in ("side", "seed", "top1", "ema_top1", "best", "images_per_s",
                                                "peak_rss_mib", "wall_s", "jobs", "date")}
                row["config"] = args.config
                row["sets"] = " ".join(args.set)
                append_rows(args.csv, [row])

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for f in [pool.submit(one, side, seed) for side, seed in results]:
            f.result()
    results = {side: [results[(side, seed)] for seed in seeds] for side in sides}

    if "nat" in sides and not args.no_cross_check:
        # PyTorch's network on nat's final weights: the same test accuracy means the same network.
        print("\nPyTorch's NAT evaluating nat's final weights (checkpoint loaded with strict=True):")
        for res in results["nat"]:
            ckpt = os.path.join(args.out, f"nat_seed{res['seed']}", "last.safetensors")
            if not os.path.exists(ckpt):
                print(f"  seed {res['seed']}: no {ckpt}")
                continue
            job = {"cfg": cfg, "config": args.config, "seed": res["seed"], "threads": args.threads,
                   "torch_na": args.torch_na, "checkpoint": ckpt}
            log = os.path.join(args.out, f"crosscheck_seed{res['seed']}.log")
            rc, _, _ = run_child([sys.executable, os.path.abspath(__file__), "--child", json.dumps(job)], log)
            line = [ln for ln in open(log) if ln.startswith("RESULT ")]
            if rc != 0 or not line:
                die(f"the cross-check of {ckpt} failed; its output: {log}")
            x = json.loads(line[-1][7:])
            res["torch_on_nat_top1"], res["torch_on_nat_ema_top1"] = x.get("top1"), x.get("ema_top1")
            json.dump(res, open(os.path.join(args.out, f"nat_seed{res['seed']}.json"), "w"), indent=1)
            print(f"  seed {res['seed']}: weights {x.get('top1')}% (nat: {res['top1']}%), EMA {x.get('ema_top1')}% "
                  f"(nat: {res.get('ema_top1')}%)")

    print(f"\n{args.config}{' ' + ' '.join(args.set) if args.set else ''}: seeds {args.seeds}, {args.threads} threads")
    print("| side | test top-1 (weights) | test top-1 (EMA) | best during training | images/s | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for side in sides:
        rs = results[side]
        summary[side] = {k: stats([x.get(k) for x in rs]) for k in ("top1", "ema_top1", "best", "images_per_s",
                                                                     "peak_rss_mib")}
        s = summary[side]
        print(f"| {side} | {fmt(s['top1'])} | {fmt(s['ema_top1'])} | {fmt(s['best'])} | {fmt(s['images_per_s'], 0)} "
              f"| {fmt(s['peak_rss_mib'], 0)} |")
    if len(sides) == 2:
        for k, what in (("top1", "weights"), ("ema_top1", "EMA")):
            (mn, sn), (mt, st) = summary["nat"][k], summary["torch"][k]
            if mn is None or mt is None:
                continue
            diff = mn - mt
            ok = abs(diff) <= 0.3 or abs(diff) < 2 * max(sn, st)
            print(f"{what}: nat - PyTorch = {diff:+.2f} points (spreads {sn:.2f} / {st:.2f}): "
                  f"{'within' if ok else 'OUTSIDE'} the floor (|difference| <= 0.3 or < 2 spreads)")
        (ina, _), (ito, _) = summary["nat"]["images_per_s"], summary["torch"]["images_per_s"]
        print(f"images/s: nat / PyTorch = {ina / ito:.2f}x")


if __name__ == "__main__":
    main()
