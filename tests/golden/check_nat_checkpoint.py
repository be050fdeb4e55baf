"""tests/golden/check_nat_checkpoint.py — loads a checkpoint written by nat into the PyTorch NAT with
load_state_dict(strict=True) and prints how far its logits are from the expected ones.

    /usr/bin/python3 tests/golden/check_nat_checkpoint.py CHECKPOINT [GOLDEN]

GOLDEN (default tests/data/nat_golden.safetensors) supplies the input and the expected logits (any
safetensors file with `input` and `logits` will do). The network is the one the checkpoint's "nat.*"
metadata describes (nat_model_save writes it), else the one in GOLDEN's metadata. The checkpoint must hold exactly the network's parameters under
PyTorch NAT's names; any missing, extra or mis-shaped tensor is an error. The forward runs in float64.
Exit status 0 when the largest logit difference, relative to the logits' max-abs, is within --tol
(default 1e-5).
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nat_torch  # noqa: E402


def model_from_metadata(m):
    """The network a file describes: nat's checkpoint keys (nat.embed_dim, nat.heads, ...) when present,
    else the golden file's (embed_dim, num_heads, ...)."""
    nat = "nat.embed_dim" in m
    key = lambda k: ("nat." + {"num_heads": "heads"}.get(k, k)) if nat else k  # noqa: E731
    ints = lambda s: tuple(int(v) for v in s.split(","))  # noqa: E731
    depths = ints(m[key("depths")])
    dilations = tuple(ints(level) for level in m[key("dilations")].split(";")) if key("dilations") in m else None
    if dilations is not None:  # nat writes 0 for "unset" (= 1)
        dilations = tuple(tuple(max(d, 1) for d in level) for level in dilations)
    layer_scale = float(m.get(key("layer_scale"), "0"))
    return nat_torch.NAT(
        embed_dim=int(m[key("embed_dim")]),
        depths=depths,
        num_heads=ints(m[key("num_heads")]),
        kernel_size=int(m[key("kernel_size")]),
        dilations=dilations,
        mlp_ratio=float(m[key("mlp_ratio")]),
        layer_scale=layer_scale if layer_scale > 0 else None,
        in_chans=int(m[key("in_chans")]),
        num_classes=int(m[key("num_classes")]),
        patch_stride=int(m.get("nat.patch_stride", "4")),  # 2: the small-image tokenizer (second conv stride 1)
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("golden", nargs="?", default=os.path.join("tests", "data", "nat_golden.safetensors"))
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()

    golden, meta = nat_torch.load_safetensors(args.golden)
    ckpt, ckpt_meta = nat_torch.load_safetensors(args.checkpoint)
    model = model_from_metadata(ckpt_meta if "nat.embed_dim" in ckpt_meta else meta).double()
    model.load_state_dict({n: t.double() for n, t in ckpt.items()}, strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(golden["input"].double())
    want = golden["logits"].double()
    diff = (logits - want).abs().max().item()
    rel = diff / want.abs().max().item()
    print(f"{args.checkpoint}: {len(ckpt)} tensors loaded strictly "
          f"({', '.join(f'{k}={v}' for k, v in sorted(ckpt_meta.items())) or 'no metadata'})")
    print(f"max |logit - golden| = {diff:.3g} (relative to max-abs {rel:.3g}) over {want.numel()} logits")
    sys.exit(0 if rel <= args.tol else 1)


if __name__ == "__main__":
    main()
