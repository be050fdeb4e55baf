"""tests/golden/make_nat_golden.py — writes tests/data/nat_golden.safetensors, the golden data of
tests/test_golden.c: a narrow NAT/DiNAT classifier's parameters, an input batch and labels, and the
float64 logits, label-smoothed cross-entropy loss and every parameter gradient computed by PyTorch.

Run from the repository root with any PyTorch (Debian's python3-torch, or the virtual environment
scripts/torch-venv.sh makes):
    python3 tests/golden/make_nat_golden.py [--case default|k7_dilated] [output path]

Two cases: `default` (tests/data/nat_golden.safetensors, described below) and `k7_dilated`
(tests/data/nat_golden_k7_dilated.safetensors): NAT's kernel 7 with DiNAT's large dilations, 8 on a
58x59 token map and 4 on 29x30 (L mod d != 0 on both axes), one input channel, narrow channels so the
file stays small.

The network covers what the C model must get right: H != W everywhere, odd feature maps with
dilation 2 (L mod d != 0), a level whose map is smaller than kernel x dilation (4x3 < 3x2: zero-padded
to 6x6 before qkv, with dilation) and one smaller than the kernel (2x2 padded to 3x3), layer scale
(random per-channel gammas), several heads, and non-trivial parameter values so that any mistake
changes the numbers well beyond float32 rounding.

Parameters and input are drawn in float32 and stored as F32; the forward and backward run in float64
on exactly those values, so the expected logits, loss and gradients carry no float32 error of their own.
Logits and loss are stored as F64, gradients as F32 (their rounding, ~6e-8 relative, is far below
the test's 1e-4).
"""

import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nat_torch  # noqa: E402

CONFIG = dict(
    in_chans=3,
    input_size=(60, 44),  # H, W -> tokens 15x11, then 8x6, 4x3, 2x2
    embed_dim=16,
    depths=(2, 2, 2, 1),
    num_heads=(1, 2, 4, 8),  # head dim 16 on every level
    kernel_size=3,
    dilations=((1, 2), (1, 2), (1, 2), (1,)),
    mlp_ratio=3.0,
    layer_scale=0.5,
    num_classes=10,
)
CASES = {
    "default": (CONFIG, 2, 20240607, os.path.join("tests", "data", "nat_golden.safetensors")),
    "k7_dilated": (dict(
        in_chans=1,
        input_size=(232, 236),  # tokens 58x59 (dilation 8: 7*8 = 56), then 29x30 (dilation 4: 28)
        embed_dim=8,
        depths=(2, 2),
        num_heads=(1, 2),  # head dim 8
        kernel_size=7,
        dilations=((1, 8), (1, 4)),
        mlp_ratio=2.0,
        layer_scale=0.5,
        num_classes=5,
    ), 1, 20261201, os.path.join("tests", "data", "nat_golden_k7_dilated.safetensors")),
}
BATCH = 2
LABEL_SMOOTHING = 0.1
SEED = 20240607


def init_params(model, gen):
    """Values far from NAT's init (which would make logits tiny): every tensor random, unit-scale
    activations. Drawn in float32 so that the stored F32 values are exactly the ones used."""
    for name, p in model.named_parameters():
        shape = p.shape
        if name.endswith("rpb"):
            v = 0.5 * torch.randn(shape, generator=gen)
        elif name.endswith(("gamma1", "gamma2")):
            v = CONFIG["layer_scale"] + 0.1 * torch.randn(shape, generator=gen)
        elif "norm" in name and name.endswith("weight"):
            v = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith("bias"):
            v = 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith("weight"):  # linear [out, in] or conv [out, in, kh, kw]
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            v = torch.randn(shape, generator=gen) / fan_in ** 0.5
        else:
            raise ValueError(f"no init rule for {name}")
        with torch.no_grad():
            p.copy_(v.to(torch.float32))


def run(model, x, labels):
    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return logits.detach(), loss.detach(), grads


def rel(a, b):
    return (a.double() - b.double()).abs().max().item() / max(b.double().abs().max().item(), 1e-300)


def main():
    global CONFIG, BATCH, SEED
    args = sys.argv[1:]
    case = "default"
    if len(args) >= 2 and args[0] == "--case":
        case, args = args[1], args[2:]
    if case not in CASES:
        sys.exit(f"make_nat_golden.py: unknown case '{case}' (one of {', '.join(CASES)})")
    CONFIG, BATCH, SEED, default_out = CASES[case]
    out_path = args[0] if args else default_out
    t0 = time.time()
    worst = nat_torch.self_test()
    print(f"na2d vs brute force (NATTEN's original index formulas): max rel diff {worst:.2g}")

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    c = CONFIG
    model = nat_torch.NAT(c["embed_dim"], c["depths"], c["num_heads"], c["kernel_size"], c["dilations"],
                          c["mlp_ratio"], c["layer_scale"], c["in_chans"], c["num_classes"])
    init_params(model, gen)
    H, W = c["input_size"]
    x32 = torch.randn(BATCH, c["in_chans"], H, W, generator=gen)
    labels = torch.randint(0, c["num_classes"], (BATCH,), generator=gen)

    # float32 run first: shows the error a correct float32 implementation can expect.
    logits32, loss32, grads32 = run(model, x32, labels)
    model.double()
    logits, loss, grads = run(model, x32.double(), labels)
    f32_err = max([rel(logits32, logits), rel(loss32, loss)] + [rel(grads32[n], g) for n, g in grads.items()])

    tensors = {}
    params = {n: p.detach().to(torch.float32) for n, p in model.named_parameters()}
    for n, p in params.items():
        assert torch.equal(p.double(), model.state_dict()[n]), f"{n} is not float32-exact"
        tensors[n] = p
        tensors["grad." + n] = grads[n].to(torch.float32)
    assert set(model.state_dict()) == set(params), "the model has buffers: store them too"
    tensors["input"] = x32
    tensors["labels"] = labels.to(torch.int32)
    tensors["logits"] = logits
    tensors["loss"] = loss.reshape(1)

    csv = lambda v: ",".join(str(i) for i in v)  # noqa: E731
    meta = {
        "format": "nat golden v1",
        "model": "NAT/DiNAT classifier, PyTorch NAT module names (tests/golden/nat_torch.py)",
        "in_chans": str(c["in_chans"]),
        "input_size": csv(c["input_size"]),
        "batch": str(BATCH),
        "embed_dim": str(c["embed_dim"]),
        "depths": csv(c["depths"]),
        "num_heads": csv(c["num_heads"]),
        "kernel_size": str(c["kernel_size"]),
        "dilations": ";".join(csv(d) for d in c["dilations"]),
        "mlp_ratio": repr(c["mlp_ratio"]),
        "layer_scale": repr(c["layer_scale"]),
        "num_classes": str(c["num_classes"]),
        "layernorm_eps": "1e-05",
        "gelu": "erf",
        "drop_path_rate": "0",
        "loss": f"mean cross-entropy, label smoothing {LABEL_SMOOTHING}",
        "label_smoothing": repr(LABEL_SMOOTHING),
        "precision": "parameters and input drawn in float32 (stored F32); forward and backward in float64; "
                     "logits and loss stored F64, gradients (grad.<name>) F32",
        "seed": str(SEED),
        "torch_version": torch.__version__,
        "generator": "tests/golden/make_nat_golden.py",
        "regenerate": f"python3 tests/golden/make_nat_golden.py --case {case}  (with PyTorch; from the repo root)",
    }
    nat_torch.save_safetensors(out_path, tensors, meta)

    # Read back and compare: the file says what we meant.
    back, meta_back = nat_torch.load_safetensors(out_path)
    assert set(back) == set(tensors) and meta_back == meta
    for n, t in tensors.items():
        assert torch.equal(back[n], t), n

    nparam = sum(p.numel() for p in params.values())
    print(f"torch {torch.__version__}; NAT embed {c['embed_dim']} depths {list(c['depths'])} heads "
          f"{list(c['num_heads'])} k {c['kernel_size']} dilations {[list(d) for d in c['dilations']]} "
          f"mlp {c['mlp_ratio']} layer scale {c['layer_scale']} classes {c['num_classes']}")
    print(f"input {list(x32.shape)}, labels {labels.tolist()}, {len(params)} parameter tensors, {nparam} values")
    print(f"logits {[[round(v, 4) for v in row] for row in logits.tolist()]}")
    print(f"loss {loss.item():.10f}")
    gmax = sorted(((g.abs().max().item(), n) for n, g in grads.items()))
    print(f"grad max-abs: smallest {gmax[0][0]:.3g} ({gmax[0][1]}), largest {gmax[-1][0]:.3g} ({gmax[-1][1]})")
    print(f"PyTorch float32 vs float64, worst relative error (to max-abs) over logits/loss/grads: {f32_err:.3g}")
    print(f"wrote {out_path}: {len(tensors)} tensors, {os.path.getsize(out_path)} bytes, in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
