#!/usr/bin/env python3
"""bench/tta_check.py — nat-eval's test-time augmentation, recomputed in PyTorch on the same checkpoint.

    .venv/bin/python bench/tta_check.py RUN_DIR_OR_CHECKPOINT [--config FILE] [--nat-train build/nat-train]
        [--threads 2]

Loads a nat-train checkpoint (weights and EMA) into the PyTorch NAT of tests/golden/nat_torch.py (the
network bench/train_parity.py trains), classifies the Fashion-MNIST / MNIST test split with the views of
`nat-eval --tta` built independently here, and prints top-1 for none, flip (2 views) and flip-shift (10
views): each the mean softmax of its views. A view is the image, or its mirror image, shifted by one
pixel: view(y, x) = image(y + dy, x + dx) for (dy, dx) in (0,0), (1,0), (-1,0), (0,1), (0,-1), with a
zero (background) pixel shifted in before normalisation. The figures should equal nat-eval's up to ties
decided by float rounding (docs/training.md, "Towards 94.5%").
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))
import nat_torch  # noqa: E402
import train_parity as tp  # noqa: E402

SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def shifted(img, dy, dx):
    """img (n, c, h, w) raw pixels -> view(y, x) = img(y + dy, x + dx), zeros outside."""
    h, w = img.shape[-2:]
    p = F.pad(img, (1, 1, 1, 1))
    return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def checkpoint_path(arg):
    if os.path.isdir(arg):
        last = os.path.join(arg, "last.safetensors")
        if not os.path.exists(last):
            tp.die(f"{arg}: no last.safetensors (not a nat-train run directory?)")
        return last
    if not os.path.exists(arg):
        tp.die(f"{arg}: no such file")
    return arg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a nat-train run directory or checkpoint file")
    ap.add_argument("--config", help="the run's config (default: config.cfg beside the checkpoint)")
    ap.add_argument("--nat-train", default="build/nat-train", help="resolves the config (default build/nat-train)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ckpt = checkpoint_path(a.checkpoint)
    config = a.config or os.path.join(os.path.dirname(ckpt), "config.cfg")
    if not os.path.exists(config):
        tp.die(f"{config}: no such file (give --config)")
    # Training-only keys PyTorch's side does not implement do not matter for evaluation: switch them off.
    cfg = tp.resolve_config(a.nat_train, config, ["aug.erasing=0", "aug.mixup=0", "aug.cutmix=0"])
    r = tp.Recipe(cfg, config)
    x_raw, y = tp.load_split(r.root, "t10k", r.test_limit)
    tensors, _ = nat_torch.load_safetensors(ckpt)
    classes = int(tensors["head.weight"].shape[0])
    for prefix in ("", "ema."):
        sd = {k[len(prefix):]: v for k, v in tensors.items()
              if k.startswith(prefix) and not k.startswith("optim.") and (prefix or not k.startswith("ema."))}
        if not sd:
            continue
        m = tp.build_model(r, classes)
        m.load_state_dict(sd, strict=True)
        m.eval()
        probs = {}
        with torch.inference_mode():
            for flip in (0, 1):
                img = torch.flip(x_raw, dims=[-1]) if flip else x_raw
                for dy, dx in SHIFTS:
                    x = tp.normalise(r, shifted(img.float(), dy, dx))
                    probs[(flip, dy, dx)] = torch.cat([m(x[i : i + 1000]) for i in range(0, len(x), 1000)]).softmax(1)
        acc = lambda p: 100.0 * float((p.argmax(1) == y).float().mean())
        none = probs[(0, 0, 0)]
        flip = none + probs[(1, 0, 0)]
        all10 = sum(probs.values())
        print(f"{'EMA' if prefix else 'weights':8s} none {acc(none):.2f}%  flip {acc(flip):.2f}%  flip-shift {acc(all10):.2f}%")


if __name__ == "__main__":
    main()
