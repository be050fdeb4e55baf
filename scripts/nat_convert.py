#!/usr/bin/env python3
"""scripts/nat_convert.py — converts pretrained NAT / DiNAT weights to a nat checkpoint (safetensors with
the nat.* metadata), which nat-classify, nat-eval and nat_model_load read with nothing else.

    nat_convert.py --variant nat_mini nat_mini_in1k_224.pth -o nat_mini.safetensors
    nat_convert.py --variant dinat_mini --ema checkpoint.pth.tar -o dinat_mini.safetensors
    nat_convert.py nat-mini-in1k-224/ -o nat_mini.safetensors          (a Hugging Face model folder)

Inputs:
  * the official checkpoints (SHI-Labs' NAT/DiNAT classification, timm-trained): a .pth holding a plain
    state dict, or a timm training checkpoint whose weights are under `state_dict` (`--ema`:
    `state_dict_ema`) or `model`; a "module." prefix (DistributedDataParallel) is removed. Their tensor
    names are nat's own, but the file does not say which network it is (NAT and DiNAT have the same
    shapes; only the dilations differ), so --variant is required;
  * Hugging Face `transformers` checkpoints (NatForImageClassification / DinatForImageClassification):
    a folder with config.json and model.safetensors or pytorch_model.bin (or such a file with --config).
    The network comes from config.json; query/key/value are stacked into nat's qkv (q, k, v order, as
    NATTEN's qkv Linear splits its output), layer_scale_parameters [2, C] become gamma1/gamma2, and
    id2label is kept as the `labels` metadata (one name per line) for nat-classify.
Every tensor must be recognised and have exactly the shape the network needs: anything else stops the
conversion with the tensor named (a missing, unexpected or mis-shaped tensor, or a non-NAT file). Shapes
are never guessed; only the class count and input channels are read from the head and the first conv.

Needs PyTorch (Debian's python3-torch 1.13 or newer); nothing else. Exit status 0 done, 1 error, 2 usage.
"""

import argparse
import json
import os
import struct
import sys

# The published variants (Hassani et al.; nat's models/nat/nat_desc.c holds the same table).
VARIANTS = {
    "mini": dict(embed_dim=64, depths=(3, 4, 6, 5), heads=(2, 4, 8, 16), mlp_ratio=3.0, drop_path_rate=0.2,
                 layer_scale=0.0),
    "tiny": dict(embed_dim=64, depths=(3, 4, 18, 5), heads=(2, 4, 8, 16), mlp_ratio=3.0, drop_path_rate=0.2,
                 layer_scale=0.0),
    "small": dict(embed_dim=96, depths=(3, 4, 18, 5), heads=(3, 6, 12, 24), mlp_ratio=2.0, drop_path_rate=0.3,
                  layer_scale=1e-5),
    "base": dict(embed_dim=128, depths=(3, 4, 18, 5), heads=(4, 8, 16, 32), mlp_ratio=2.0, drop_path_rate=0.5,
                 layer_scale=1e-5),
}
DINAT_STEP = (8, 4, 2)  # DiNAT: levels 1-3 alternate 1 and this, from 1; level 4 is all 1


class ConvertError(Exception):
    pass


def variant_desc(name):
    family, _, size = name.partition("_")
    if family not in ("nat", "dinat") or size not in VARIANTS:
        raise ConvertError(f"unknown variant '{name}' (nat_mini, nat_tiny, nat_small, nat_base, dinat_mini, "
                           "dinat_tiny, dinat_small, dinat_base)")
    d = dict(VARIANTS[size], name=name, kernel_size=7, qkv_bias=True)
    d["dilations"] = [[1] * n for n in d["depths"]]
    if family == "dinat":
        for lvl in range(3):
            d["dilations"][lvl] = [1 if j % 2 == 0 else DINAT_STEP[lvl] for j in range(d["depths"][lvl])]
    return d


def expected_shapes(d):
    """{name: shape} of every parameter of the network d, under PyTorch NAT's (and nat's) names."""
    C, k = d["embed_dim"], d["kernel_size"]
    s = {"patch_embed.proj.0.weight": (C // 2, d["in_chans"], 3, 3), "patch_embed.proj.0.bias": (C // 2,),
         "patch_embed.proj.1.weight": (C, C // 2, 3, 3), "patch_embed.proj.1.bias": (C,),
         "patch_embed.norm.weight": (C,), "patch_embed.norm.bias": (C,)}
    L = len(d["depths"])
    for i in range(L):
        dim = C * 2 ** i
        hidden = int(d["mlp_ratio"] * dim)
        for j in range(d["depths"][i]):
            p = f"levels.{i}.blocks.{j}."
            if d["layer_scale"] > 0:
                s[p + "gamma1"] = s[p + "gamma2"] = (dim,)
            s.update({p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
                      p + "attn.rpb": (d["heads"][i], 2 * k - 1, 2 * k - 1),
                      p + "attn.qkv.weight": (3 * dim, dim), p + "attn.proj.weight": (dim, dim),
                      p + "attn.proj.bias": (dim,), p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
                      p + "mlp.fc1.weight": (hidden, dim), p + "mlp.fc1.bias": (hidden,),
                      p + "mlp.fc2.weight": (dim, hidden), p + "mlp.fc2.bias": (dim,)})
            if d["qkv_bias"]:
                s[p + "attn.qkv.bias"] = (3 * dim,)
        if i < L - 1:
            s.update({f"levels.{i}.downsample.reduction.weight": (2 * dim, dim, 3, 3),
                      f"levels.{i}.downsample.norm.weight": (2 * dim,),
                      f"levels.{i}.downsample.norm.bias": (2 * dim,)})
    F = C * 2 ** (L - 1)
    s.update({"norm.weight": (F,), "norm.bias": (F,), "head.weight": (d["num_classes"], F),
              "head.bias": (d["num_classes"],)})
    return s


# ---- reading ----

def torch_load(path):
    import pickle

    import torch
    try:
        # weights_only: a checkpoint is data; refuse code in the pickle (torch >= 1.13 has the option).
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # an older torch without weights_only
        return torch.load(path, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConvertError(f"{path}: not a readable PyTorch checkpoint (truncated, corrupt, or pickled objects "
                           f"other than tensors): {msg}")


_ST_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def read_safetensors(path):
    """{name: float tensor} of a .safetensors file, with its size and offsets checked."""
    import torch
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConvertError(f"{path}: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ConvertError(f"{path}: header length {n} runs past the end of the file ({size} bytes): truncated?")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ConvertError(f"{path}: malformed safetensors header: {e}")
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        dt = _ST_DTYPES.get(e.get("dtype"))
        if dt is None:
            raise ConvertError(f"{path}: tensor {name} has dtype {e.get('dtype')}; only F32, F16, BF16, F64 are weights")
        b, end = e["data_offsets"]
        if end > len(data):
            raise ConvertError(f"{path}: tensor {name} ends at byte {end} of a {len(data)}-byte data section: truncated?")
        t = torch.frombuffer(bytearray(data[b:end]), dtype=getattr(torch, dt)) if end > b else torch.empty(0)
        out[name] = t.reshape(e["shape"])
    return out


def unwrap(obj, path, ema):
    """The state dict inside a .pth: plain, or timm's state_dict / state_dict_ema / model."""
    import torch
    if not isinstance(obj, dict):
        raise ConvertError(f"{path}: holds a {type(obj).__name__}, not a state dict or a checkpoint dict")
    keys = ["state_dict_ema", "model_ema"] if ema else ["state_dict", "model"]
    for k in keys:
        if k in obj and isinstance(obj[k], dict):
            obj = obj[k]
            break
    else:
        if ema:
            raise ConvertError(f"{path}: --ema, but there is no state_dict_ema (keys: {', '.join(map(str, obj))})")
        if not all(torch.is_tensor(v) for v in obj.values()):
            bad = next(k for k, v in obj.items() if not torch.is_tensor(v))
            raise ConvertError(f"{path}: entry '{bad}' is a {type(obj[bad]).__name__}: not a state dict, and there is "
                               "no state_dict / model entry")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def hf_to_nat(sd, cfg, path):
    """Hugging Face NAT/DiNAT tensor names to nat's, stacking query/key/value into qkv."""
    import torch
    prefix = {"nat": "nat.", "dinat": "dinat."}[cfg["model_type"]]
    out, qkv = {}, {}
    fixed = {"embeddings.patch_embeddings.projection.0.weight": "patch_embed.proj.0.weight",
             "embeddings.patch_embeddings.projection.0.bias": "patch_embed.proj.0.bias",
             "embeddings.patch_embeddings.projection.1.weight": "patch_embed.proj.1.weight",
             "embeddings.patch_embeddings.projection.1.bias": "patch_embed.proj.1.bias",
             "embeddings.norm.weight": "patch_embed.norm.weight", "embeddings.norm.bias": "patch_embed.norm.bias",
             "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}
    layer = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.self.rpb": "attn.rpb",
             "attention.output.dense": "attn.proj", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"}
    for name, t in sd.items():
        if name.startswith("classifier."):
            out["head." + name[len("classifier."):]] = t
            continue
        if not name.startswith(prefix):
            raise ConvertError(f"{path}: unrecognised tensor {name} {list(t.shape)}: not part of a Hugging Face "
                               f"{cfg['model_type']} classifier")
        rest = name[len(prefix):]
        if rest in fixed:
            out[fixed[rest]] = t
            continue
        parts = rest.split(".")
        # encoder.levels.{i}.layers.{j}.<module>  /  encoder.levels.{i}.downsample.{reduction,norm}.<param>
        if len(parts) >= 5 and parts[:2] == ["encoder", "levels"] and parts[3] == "downsample":
            out[f"levels.{parts[2]}.downsample." + ".".join(parts[4:])] = t
            continue
        if len(parts) >= 6 and parts[:2] == ["encoder", "levels"] and parts[3] == "layers":
            base = f"levels.{parts[2]}.blocks.{parts[4]}."
            mod = ".".join(parts[5:])
            if mod == "layer_scale_parameters":
                if t.dim() != 2 or t.shape[0] != 2:
                    raise ConvertError(f"{path}: tensor {name} has shape {list(t.shape)}, expected [2, C]")
                out[base + "gamma1"], out[base + "gamma2"] = t[0].clone(), t[1].clone()
                continue
            if mod == "attention.self.rpb":
                out[base + "attn.rpb"] = t
                continue
            head, _, param = mod.rpartition(".")
            if head in ("attention.self.query", "attention.self.key", "attention.self.value"):
                qkv.setdefault((base, param), {})[head.rsplit(".", 1)[1]] = (name, t)
                continue
            if head in layer:
                out[base + layer[head] + "." + param] = t
                continue
        raise ConvertError(f"{path}: unrecognised tensor {name} {list(t.shape)}")
    for (base, param), parts in sorted(qkv.items()):
        for p in ("query", "key", "value"):
            if p not in parts:
                have = next(iter(parts.values()))[0]
                raise ConvertError(f"{path}: {have} has no matching attention.self.{p}.{param}")
        shapes = {p: list(parts[p][1].shape) for p in parts}
        if len({str(s) for s in shapes.values()}) != 1:
            raise ConvertError(f"{path}: query/key/value {param}s of {base} differ in shape: {shapes}")
        out[base + "attn.qkv." + param] = torch.cat([parts[p][1] for p in ("query", "key", "value")], 0)
    return out


def hf_desc(cfg, path):
    mt = cfg.get("model_type")
    if mt not in ("nat", "dinat"):
        raise ConvertError(f"{path}: model_type '{mt}' is not nat or dinat")
    for key, want in (("patch_size", 4), ("hidden_act", "gelu")):
        if cfg.get(key, want) != want:
            raise ConvertError(f"{path}: {key} = {cfg[key]!r}; nat's NAT has {want!r}")
    if abs(float(cfg.get("layer_norm_eps", 1e-5)) - 1e-5) > 1e-12:
        raise ConvertError(f"{path}: layer_norm_eps = {cfg['layer_norm_eps']}; nat's LayerNorm uses 1e-5")
    depths = list(cfg["depths"])
    d = dict(embed_dim=int(cfg["embed_dim"]), depths=depths, heads=list(cfg["num_heads"]),
             kernel_size=int(cfg["kernel_size"]), mlp_ratio=float(cfg["mlp_ratio"]),
             drop_path_rate=float(cfg.get("drop_path_rate", 0.0)),
             layer_scale=float(cfg.get("layer_scale_init_value", 0.0)), qkv_bias=bool(cfg.get("qkv_bias", True)),
             in_chans=int(cfg.get("num_channels", 3)))
    dil = cfg.get("dilations") if mt == "dinat" else None
    d["dilations"] = [list(x) for x in dil] if dil else [[1] * n for n in depths]
    if [len(x) for x in d["dilations"]] != depths:
        raise ConvertError(f"{path}: dilations {d['dilations']} do not match depths {depths}")
    # The name of the published variant with this shape, if any (a label only).
    d["name"] = f"{mt}_custom"
    for size in VARIANTS:
        v = variant_desc(f"{mt}_{size}")
        if all(v[k] == (tuple(d[k]) if isinstance(v[k], tuple) else d[k]) for k in
               ("embed_dim", "depths", "heads", "mlp_ratio", "dilations")):
            d["name"] = v["name"]
    if "id2label" in cfg:
        d["labels"] = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
    return d


def find_hf(src, config):
    """(weights file, config.json) for a Hugging Face folder or file, else None."""
    if os.path.isdir(src):
        cfg = config or os.path.join(src, "config.json")
        for w in ("model.safetensors", "pytorch_model.bin"):
            if os.path.exists(os.path.join(src, w)):
                return os.path.join(src, w), cfg
        raise ConvertError(f"{src}: a folder without model.safetensors or pytorch_model.bin")
    if config:
        return src, config
    return None


# ---- checking and writing ----

def check(sd, d, path):
    want = expected_shapes(d)
    for name, t in sd.items():
        if name not in want:
            raise ConvertError(f"{path}: unrecognised tensor {name} {list(t.shape)}: not a parameter of {d['name']}"
                               f" ({len(want)} tensors, e.g. levels.0.blocks.0.attn.qkv.weight)")
    for name, shape in want.items():
        if name not in sd:
            raise ConvertError(f"{path}: tensor {name} {list(shape)} of {d['name']} is missing")
        if tuple(sd[name].shape) != tuple(shape):
            raise ConvertError(f"{path}: tensor {name} has shape {list(sd[name].shape)}; {d['name']} needs "
                               f"{list(shape)}")
        if not sd[name].is_floating_point():
            raise ConvertError(f"{path}: tensor {name} is {sd[name].dtype}, not a floating-point weight")


def metadata(d, source):
    f = lambda v: f"{v:.9g}"  # noqa: E731  (what nat_model_write prints)
    m = {"nat.name": d["name"], "nat.seed": "0", "nat.in_chans": str(d["in_chans"]),
         "nat.num_classes": str(d["num_classes"]), "nat.img_size": "224", "nat.embed_dim": str(d["embed_dim"]),
         "nat.kernel_size": str(d["kernel_size"]), "nat.qkv_bias": "1" if d["qkv_bias"] else "0",
         "nat.mlp_ratio": f(d["mlp_ratio"]), "nat.drop_path_rate": f(d["drop_path_rate"]),
         "nat.layer_scale": f(d["layer_scale"]), "nat.qk_scale": "0", "nat.drop": "0", "nat.attn_drop": "0",
         "nat.patch_stride": "4", "nat.depths": ",".join(map(str, d["depths"])),
         "nat.heads": ",".join(map(str, d["heads"])),
         "nat.dilations": ";".join(",".join(map(str, lvl)) for lvl in d["dilations"]), "source": source}
    if d.get("labels"):
        m["labels"] = "\n".join(d["labels"])
    return m


def write_safetensors(path, tensors, meta):
    """float32 tensors, names sorted, header padded to 8 bytes; written to path.tmp then renamed."""
    entries, off, blobs = {"__metadata__": meta}, 0, []
    for name in sorted(tensors):
        raw = tensors[name].detach().to("cpu").float().contiguous().numpy().tobytes()
        entries[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as out:
        out.write(struct.pack("<Q", len(header)) + header)
        for b in blobs:
            out.write(b)
    os.replace(tmp, path)


def convert(src, out, variant=None, ema=False, config=None):
    hf = find_hf(src, config)
    if hf:
        weights, cfg_path = hf
        if not os.path.exists(cfg_path):
            raise ConvertError(f"{src}: Hugging Face weights need their config.json ({cfg_path} is missing)")
        with open(cfg_path) as f:
            cfg = json.load(f)
        d = hf_desc(cfg, cfg_path)
        if variant and variant != d["name"]:
            raise ConvertError(f"{cfg_path} describes {d['name']}, not --variant {variant}")
        raw = read_safetensors(weights) if weights.endswith(".safetensors") else unwrap(torch_load(weights), weights, ema)
        sd = hf_to_nat(raw, cfg, weights)
        source = weights
    else:
        if not variant:
            raise ConvertError(f"{src}: an official NAT/DiNAT checkpoint does not say which network it holds (NAT and "
                               "DiNAT differ only in dilations): give --variant, e.g. --variant dinat_mini")
        d = variant_desc(variant)
        sd = read_safetensors(src) if src.endswith(".safetensors") else unwrap(torch_load(src), src, ema)
        source = src
    # Read, not guessed: classes from the head, channels from the first conv (then every shape is checked).
    for key, dim, field in (("head.weight", 0, "num_classes"), ("patch_embed.proj.0.weight", 1, "in_chans")):
        if key not in sd:
            bad = next(iter(sd), None)
            raise ConvertError(f"{source}: tensor {key} is missing: not a NAT/DiNAT classifier"
                               + (f" (first tensor: {bad} {list(sd[bad].shape)})" if bad else " (no tensors)"))
        if sd[key].dim() <= dim:
            raise ConvertError(f"{source}: tensor {key} has shape {list(sd[key].shape)}")
        d[field] = int(sd[key].shape[dim])
    if d.get("labels") and len(d["labels"]) != d["num_classes"]:
        raise ConvertError(f"{source}: config.json names {len(d['labels'])} labels for {d['num_classes']} classes")
    check(sd, d, source)
    write_safetensors(out, sd, metadata(d, os.path.basename(source) + (" [EMA]" if ema else "")))
    return d


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0].split(" — ")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("src", help="a .pth / .safetensors file, or a Hugging Face model folder")
    ap.add_argument("-o", "--output", required=True, help="the nat checkpoint to write (.safetensors)")
    ap.add_argument("--variant", help="nat_mini ... dinat_base; required for the official checkpoints")
    ap.add_argument("--ema", action="store_true", help="take a timm checkpoint's state_dict_ema")
    ap.add_argument("--config", help="config.json of a Hugging Face weights file given as src")
    a = ap.parse_args(argv)
    try:
        d = convert(a.src, a.output, a.variant, a.ema, a.config)
    except ConvertError as e:
        print(f"nat_convert: {e}", file=sys.stderr)
        return 1
    except (OSError, KeyError, ValueError) as e:
        print(f"nat_convert: {a.src}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    n = len(expected_shapes(d))
    print(f"nat_convert: wrote {a.output}: {d['name']}, {d['num_classes']} classes, {d['in_chans']} channel(s), "
          f"{n} tensors, dilations {';'.join(','.join(map(str, x)) for x in d['dilations'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
