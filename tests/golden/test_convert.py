"""tests/golden/test_convert.py — scripts/nat_convert.py end to end, without network: NAT-Mini and
DiNAT-Mini with random weights under the official names (nat_torch.py), saved as a plain state dict and
as a timm training checkpoint (state_dict + state_dict_ema), and renamed to Hugging Face transformers'
naming (pytorch_model.bin and model.safetensors, with config.json); each converts, loads strictly in C
(nat-classify), and gives PyTorch's float64 logits within 1e-4 (relative to the logits' max-abs) on
tests/data/synthetic_640x480.jpg preprocessed by nat (C), and, when PIL is installed, preprocessed by
PIL as timm does. Then foreign and broken inputs must fail with the problem named.

    python3 tests/golden/test_convert.py BUILD_DIR
Exit 0 pass, 1 fail, 77 skipped (no torch).
"""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
try:
    import torch
except ImportError as e:
    print(f"SKIPPED: PyTorch is not installed ({e}); apt-get install python3-torch")
    sys.exit(77)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import nat_convert  # noqa: E402
import nat_torch  # noqa: E402

IMAGE = os.path.join(ROOT, "tests", "data", "synthetic_640x480.jpg")
TOL = 1e-4
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def build(variant, seed):
    d = nat_convert.variant_desc(variant)
    dil = d["dilations"] if variant.startswith("dinat") else None
    torch.manual_seed(seed)
    m = nat_torch.NAT(d["embed_dim"], d["depths"], d["heads"], 7, dil, d["mlp_ratio"], None, 3, 1000)
    with torch.no_grad():  # every tensor random, norms included, so a swapped name shows in the logits
        for name, p in m.named_parameters():
            if name.endswith("rpb"):
                p.normal_(0, 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif p.dim() == 1:
                p.normal_(0, 0.05)
    return m.double().eval(), d


def to_hf(sd, d, mt):
    """The same weights under transformers' NatForImageClassification / Dinat names and its config."""
    out, P = {}, mt + "."
    ren = {"patch_embed.proj.0": "embeddings.patch_embeddings.projection.0",
           "patch_embed.proj.1": "embeddings.patch_embeddings.projection.1", "patch_embed.norm": "embeddings.norm"}
    lay = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
           "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    for k, v in sd.items():
        v = v.float()
        if k.startswith("head."):
            out["classifier." + k[5:]] = v
        elif k.startswith("norm."):
            out[P + "layernorm." + k[5:]] = v
        elif k.startswith("patch_embed."):
            mod, param = k.rsplit(".", 1)
            out[P + ren[mod] + "." + param] = v
        elif ".downsample." in k:
            i, rest = k.split(".", 2)[1], k.split(".downsample.")[1]
            out[f"{P}encoder.levels.{i}.downsample.{rest}"] = v
        else:
            _, i, _, j, rest = k.split(".", 4)
            base = f"{P}encoder.levels.{i}.layers.{j}."
            if rest == "attn.rpb":
                out[base + "attention.self.rpb"] = v
            elif rest.startswith("attn.qkv."):
                for part, t in zip(("query", "key", "value"), v.chunk(3, 0)):
                    out[base + f"attention.self.{part}." + rest.rsplit(".", 1)[1]] = t.clone()
            else:
                mod, param = rest.rsplit(".", 1)
                out[base + lay[mod] + "." + param] = v
    cfg = {"model_type": mt, "embed_dim": d["embed_dim"], "depths": list(d["depths"]), "num_heads": list(d["heads"]),
           "kernel_size": 7, "mlp_ratio": d["mlp_ratio"], "drop_path_rate": d["drop_path_rate"], "patch_size": 4,
           "num_channels": 3, "hidden_act": "gelu", "layer_norm_eps": 1e-5, "layer_scale_init_value": 0.0,
           "qkv_bias": True, "id2label": {str(i): f"label {i}" for i in range(1000)}}
    if mt == "dinat":
        cfg["dilations"] = d["dilations"]
    return out, cfg


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def classify(build_dir, ckpt, tmp, tensor=None):
    out = os.path.join(tmp, "out.safetensors")
    cmd = [os.path.join(build_dir, "nat-classify"), "--checkpoint", ckpt, "--save", out, "--json"]
    cmd += ["--tensor", tensor] if tensor else [IMAGE]
    r = run(cmd)
    if r.returncode != 0:
        return None, r.stderr.strip() or r.stdout.strip()
    t, _ = nat_torch.load_safetensors(out)
    return t, json.loads(r.stdout)


_memo = {}


def forward(model, x):
    """model(x) in float64, remembered: every form of a model sees the same input (the float64 forward
    of NAT-Mini is most of this test's time)."""
    key = (id(model), x.double().numpy().tobytes().__hash__())
    if key not in _memo:
        with torch.no_grad():
            _memo[key] = model(x.double())
    return _memo[key]


def compare(model, build_dir, ckpt, tmp, label, pil_input):
    t, info = classify(build_dir, ckpt, tmp)
    if t is None:
        check(False, f"{label}: nat-classify failed: {info}")
        return
    ref = forward(model, t["input"])
    rel = ((t["logits"].double() - ref).abs().max() / ref.abs().max()).item()
    check(rel <= TOL, f"{label}: C logits vs PyTorch on nat's preprocessing: max diff / max-abs = {rel:.2e}")
    if pil_input is not None:
        src = os.path.join(tmp, "pil_input.safetensors")
        nat_torch.save_safetensors(src, {"input": pil_input.float()})
        t2, _ = classify(build_dir, ckpt, tmp, tensor=src)
        ref2 = forward(model, pil_input)
        rel2 = ((t2["logits"].double() - ref2).abs().max() / ref2.abs().max()).item() if t2 else 1.0
        check(rel2 <= TOL, f"{label}: C logits vs PyTorch on PIL's preprocessing: max diff / max-abs = {rel2:.2e}")


def expect_error(args, words, label):
    r = run([sys.executable, os.path.join(ROOT, "scripts", "nat_convert.py")] + args)
    msg = r.stderr.strip()
    ok = r.returncode == 1 and all(w in msg for w in words)
    check(ok, f"{label}: exit {r.returncode}, '{msg}'")


def pil_reference():
    try:
        from PIL import Image

        import preprocess_ref
    except ImportError as e:
        print(f"note: PIL reference preprocessing skipped ({e}); apt-get install python3-pil")
        return None
    x = torch.from_numpy(preprocess_ref.pil_eval(Image.open(IMAGE))).double()
    mean = torch.tensor(preprocess_ref.IMAGENET_MEAN, dtype=torch.float64)[:, None, None]
    std = torch.tensor(preprocess_ref.IMAGENET_STD, dtype=torch.float64)[:, None, None]
    return ((x - mean) / std)[None]


def main():
    build_dir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    torch.set_grad_enabled(False)
    pil_input = pil_reference()
    conv = lambda a: nat_convert.main(a)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        for variant, seed in (("nat_mini", 1), ("dinat_mini", 2)):
            model, d = build(variant, seed)
            sd = {k: v.float() for k, v in model.state_dict().items()}
            out = os.path.join(tmp, variant + ".safetensors")
            # 1. plain state dict
            pth = os.path.join(tmp, variant + ".pth")
            torch.save(sd, pth)
            check(conv([pth, "--variant", variant, "-o", out]) == 0, f"{variant}: convert a plain state dict")
            compare(model, build_dir, out, tmp, f"{variant} state dict", pil_input)
            # 2. timm checkpoint: state_dict and a different state_dict_ema (--ema must pick it)
            ema_sd = dict(sd, **{"head.bias": sd["head.bias"] + 1.0})
            ckpt = os.path.join(tmp, variant + "_timm.pth.tar")
            torch.save({"epoch": 299, "arch": variant, "state_dict": sd, "state_dict_ema": ema_sd,
                        "version": 2}, ckpt)
            check(conv([ckpt, "--variant", variant, "-o", out]) == 0, f"{variant}: convert a timm checkpoint")
            compare(model, build_dir, out, tmp, f"{variant} timm state_dict", None)
            check(conv([ckpt, "--variant", variant, "--ema", "-o", out]) == 0, f"{variant}: convert its EMA")
            t, _ = classify(build_dir, out, tmp)
            shift = (t["logits"].double() - forward(model, t["input"])).mean().item() if t else 0
            check(abs(shift - 1.0) < 1e-3, f"{variant}: --ema took state_dict_ema (logits shifted by {shift:.4f})")
            # 3. Hugging Face, .bin and .safetensors
            mt = variant.split("_")[0]
            hf, cfg = to_hf(sd, d, mt)
            for fmt in ("pytorch_model.bin", "model.safetensors"):
                folder = os.path.join(tmp, f"hf_{variant}_{fmt}")
                os.makedirs(folder)
                with open(os.path.join(folder, "config.json"), "w") as f:
                    json.dump(cfg, f)
                if fmt.endswith(".bin"):
                    torch.save(hf, os.path.join(folder, fmt))
                else:
                    nat_torch.save_safetensors(os.path.join(folder, fmt), hf)
                check(conv([folder, "-o", out]) == 0, f"{variant}: convert Hugging Face {fmt}")
                compare(model, build_dir, out, tmp, f"{variant} HF {fmt}", pil_input if fmt.endswith("bin") else None)
                _, info = classify(build_dir, out, tmp)
                lab = info["images"][0]["top"][0].get("label", "") if isinstance(info, dict) else ""
                check(lab.startswith("label "), f"{variant} HF {fmt}: id2label kept as labels ('{lab}')")
                import shutil
                shutil.rmtree(folder)
            if variant == "nat_mini":
                # 4. broken and foreign inputs
                bad = os.path.join(tmp, "bad.pth")
                resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.running_mean": torch.zeros(64),
                          "fc.weight": torch.zeros(1000, 2048)}
                torch.save(resnet, bad)
                expect_error([bad, "--variant", variant, "-o", out], ["head.weight", "missing"], "ResNet state dict")
                torch.save(dict(resnet, **sd), bad)
                expect_error([bad, "--variant", variant, "-o", out], ["unrecognised tensor", "conv1.weight"],
                             "NAT + foreign tensors")
                with open(pth, "rb") as f:
                    blob = f.read()
                with open(bad, "wb") as f:
                    f.write(blob[: len(blob) // 2])
                expect_error([bad, "--variant", variant, "-o", out], ["not a readable PyTorch checkpoint"], "truncated .pth")
                miss = dict(sd)
                del miss["levels.2.blocks.3.attn.rpb"]
                torch.save(miss, bad)
                expect_error([bad, "--variant", variant, "-o", out], ["levels.2.blocks.3.attn.rpb", "missing"],
                             "missing tensor")
                torch.save(dict(sd, **{"levels.1.blocks.0.mlp.fc1.weight": torch.zeros(384, 64)}), bad)
                expect_error([bad, "--variant", variant, "-o", out], ["levels.1.blocks.0.mlp.fc1.weight", "[384, 64]",
                                                                      "[384, 128]"], "wrong shape")
                expect_error([pth, "-o", out], ["--variant"], "official checkpoint without --variant")
                expect_error([pth, "--variant", "nat_huge", "-o", out], ["unknown variant", "nat_huge"], "bad variant")
                # a truncated converted file fails in C with the file named
                with open(out, "rb") as f:
                    blob = f.read()
                with open(bad, "wb") as f:
                    f.write(blob[: len(blob) - 1000])
                r = run([os.path.join(build_dir, "nat-classify"), "--checkpoint", bad, IMAGE])
                check(r.returncode == 1 and "bad.pth" in r.stderr, f"truncated checkpoint in C: '{r.stderr.strip()}'")
            os.remove(pth)
            os.remove(ckpt)
    print(f"{'FAILED: ' + str(len(failures)) if failures else 'all passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
