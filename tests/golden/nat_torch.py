"""tests/golden/nat_torch.py — a PyTorch NAT/DiNAT classifier with PyTorch NAT's module names, and a
pure-PyTorch neighborhood attention written from docs/design.md §2 (no NATTEN needed).

Used by make_nat_golden.py (golden data for tests/test_golden.c), check_nat_checkpoint.py (loads a
checkpoint nat wrote) and later benchmarks. Runs in any dtype; the golden data is made in float64.

Module names match SHI-Labs' NAT/DiNAT exactly (patch_embed.proj.0/1, patch_embed.norm,
levels.{i}.blocks.{j}.norm1/attn.qkv/attn.rpb/attn.proj/norm2/mlp.fc1/mlp.fc2/gamma1/gamma2,
levels.{i}.downsample.reduction/norm, norm, head), so state dicts move between the two unchanged.

Layouts: images NCHW in, tokens channels-last [B, H, W, C] inside; q, k, v [B, heads, H, W, D];
rpb [heads, 2k-1, 2k-1]. No dropout; drop-path (stochastic depth, as nat's train.drop_path) is off
unless `drop_path` > 0 is asked for (bench/train_parity.py), so by default the model is deterministic.

The NA op gathers each query's k*k neighbours through per-axis index tensors (window start clamped
inside each dilation group, so L mod d != 0 is handled) and lets autograd do the backward.
`na2d_bruteforce` is an independent loop version using NATTEN's original window/rpb-start formulas;
`self_test()` checks one against the other (forward and gradients).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------------
# Neighborhood attention (docs/design.md §2)


def na_indices(length, kernel, dilation, device=None):
    """Per-axis neighbourhood of every query index: (keys [L, k], rpb slots [L, k]) as int64 tensors.

    g = i mod d, p = i div d, Lg = ceil((L - g) / d), s = clamp(p - r, 0, Lg - k),
    keys = (s + t) d + g, rpb slot = (k - 1) + s - p + t.
    """
    if kernel < 3 or kernel % 2 == 0:
        raise ValueError(f"na: kernel {kernel} must be odd and >= 3")
    if dilation < 1:
        raise ValueError(f"na: dilation {dilation} must be >= 1")
    if length < kernel * dilation:
        raise ValueError(f"na: axis length {length} is smaller than kernel {kernel} x dilation {dilation}")
    i = torch.arange(length, device=device)
    g = i % dilation
    p = i // dilation
    lg = (length - g + dilation - 1) // dilation
    r = kernel // 2
    s = torch.minimum(torch.clamp(p - r, min=0), lg - kernel)
    t = torch.arange(kernel, device=device)
    keys = (s[:, None] + t[None, :]) * dilation + g[:, None]
    rpb = (kernel - 1) + (s - p)[:, None] + t[None, :]
    return keys, rpb


def na2d_qk(q, k, rpb, kernel, dilation):
    """Logits [B, heads, H, W, k*k] = q·k[neighbour] + rpb (q already scaled), slot a*k + b."""
    B, nh, H, W, D = q.shape
    kh, rh = na_indices(H, kernel, dilation, q.device)
    kw, rw = na_indices(W, kernel, dilation, q.device)
    # k[:, :, kh[i, a], kw[j, b]] -> [B, nh, H, k, W, k, D] -> [B, nh, H, W, k, k, D]
    nb = k[:, :, kh[:, :, None, None], kw[None, None, :, :]].permute(0, 1, 2, 4, 3, 5, 6)
    logits = torch.einsum("znhwd,znhwxyd->znhwxy", q, nb)
    if rpb is not None:
        bias = rpb[:, rh[:, :, None, None], rw[None, None, :, :]].permute(0, 1, 3, 2, 4)  # [nh, H, W, k, k]
        logits = logits + bias[None]
    return logits.reshape(B, nh, H, W, kernel * kernel)


def na2d_av(attn, v, kernel, dilation):
    """out [B, heads, H, W, D] = sum over slots attn[slot] · v[neighbour]."""
    B, nh, H, W, D = v.shape
    kh, _ = na_indices(H, kernel, dilation, v.device)
    kw, _ = na_indices(W, kernel, dilation, v.device)
    nb = v[:, :, kh[:, :, None, None], kw[None, None, :, :]].permute(0, 1, 2, 4, 3, 5, 6)
    a = attn.reshape(B, nh, H, W, kernel, kernel)
    return torch.einsum("znhwxy,znhwxyd->znhwd", a, nb)


def na2d(q, k, v, rpb, kernel, dilation, scale=None):
    """softmax(scale q·k + rpb) · v over each query's k x k neighbourhood."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    attn = na2d_qk(q * scale, k, rpb, kernel, dilation).softmax(dim=-1)
    return na2d_av(attn, v, kernel, dilation)


def _natten_window_start(index, length, kernel, dilation):
    """NATTEN's original (v0.14) get_window_start, kept verbatim as an independent check."""
    ns = kernel // 2
    if dilation <= 1:
        return max(index - ns, 0) + (index + ns >= length) * (length - index - ns - 1)
    ni = index - ns * dilation
    if ni < 0:
        return index % dilation
    if index + ns * dilation >= length:
        imodd = index % dilation
        a = (length // dilation) * dilation
        b = length - a
        if imodd < b:
            return length - b + imodd - 2 * ns * dilation
        return a + imodd - kernel * dilation
    return ni


def _natten_pb_start(index, length, kernel, dilation):
    """NATTEN's original get_pb_start."""
    ns = kernel // 2
    if dilation <= 1:
        return ns + (index < ns) * (ns - index) + (index + ns >= length) * (length - index - 1 - ns)
    if index - ns * dilation < 0:
        return kernel - 1 - (index // dilation)
    if index + ns * dilation >= length:
        return (length - index - 1) // dilation
    return ns


def na2d_bruteforce(q, k, v, rpb, kernel, dilation, scale=None):
    """One query at a time, with NATTEN's original index formulas. Slow; for tests only."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    B, nh, H, W, D = q.shape
    rows = []
    for i in range(H):
        si = _natten_window_start(i, H, kernel, dilation)
        pi = _natten_pb_start(i, H, kernel, dilation)
        cols = []
        for j in range(W):
            sj = _natten_window_start(j, W, kernel, dilation)
            pj = _natten_pb_start(j, W, kernel, dilation)
            ys = [si + a * dilation for a in range(kernel)]
            xs = [sj + b * dilation for b in range(kernel)]
            assert all(0 <= y < H for y in ys) and all(0 <= x < W for x in xs)
            assert i in ys and j in xs
            kk = torch.stack([k[:, :, y, x] for y in ys for x in xs], dim=2)  # [B, nh, k*k, D]
            vv = torch.stack([v[:, :, y, x] for y in ys for x in xs], dim=2)
            logit = torch.einsum("bnd,bnsd->bns", q[:, :, i, j] * scale, kk)
            if rpb is not None:
                logit = logit + torch.stack(
                    [rpb[:, pi + a, pj + b] for a in range(kernel) for b in range(kernel)], dim=-1)[None]
            w = logit.softmax(dim=-1)
            cols.append(torch.einsum("bns,bnsd->bnd", w, vv))
        rows.append(torch.stack(cols, dim=2))
    return torch.stack(rows, dim=2)


def self_test(seed=0):
    """Vectorised NA against the brute-force loops, forward and all gradients, in float64."""
    g = torch.Generator().manual_seed(seed)
    cases = [  # (H, W, kernel, dilation)
        (5, 7, 3, 1), (7, 9, 3, 2), (9, 11, 3, 3), (7, 6, 5, 1), (11, 10, 5, 2), (6, 6, 3, 2), (3, 3, 3, 1),
    ]
    worst = 0.0
    for H, W, kernel, dil in cases:
        B, nh, D = 2, 2, 4
        q, k, v = (torch.randn(B, nh, H, W, D, generator=g, dtype=torch.float64, requires_grad=True)
                   for _ in range(3))
        rpb = torch.randn(nh, 2 * kernel - 1, 2 * kernel - 1, generator=g, dtype=torch.float64, requires_grad=True)
        dout = torch.randn(B, nh, H, W, D, generator=g, dtype=torch.float64)
        res = []
        for fn in (na2d, na2d_bruteforce):
            out = fn(q, k, v, rpb, kernel, dil)
            grads = torch.autograd.grad((out * dout).sum(), (q, k, v, rpb))
            res.append((out,) + grads)
        for name, a, b in zip(("out", "dq", "dk", "dv", "drpb"), res[0], res[1]):
            err = (a - b).abs().max().item() / max(b.abs().max().item(), 1e-300)
            worst = max(worst, err)
            assert err < 1e-12, f"na2d {H}x{W} k{kernel} d{dil}: {name} differs from brute force by {err:.3g}"
    # The index formula against NATTEN's on many lengths, dilations and kernels.
    for kernel in (3, 5, 7):
        for dil in range(1, 6):
            for length in range(kernel * dil, kernel * dil + 3 * dil + 2):
                keys, slots = na_indices(length, kernel, dil)
                for i in range(length):
                    s = _natten_window_start(i, length, kernel, dil)
                    assert keys[i].tolist() == [s + t * dil for t in range(kernel)], (length, kernel, dil, i)
                    pb = _natten_pb_start(i, length, kernel, dil)
                    assert slots[i].tolist() == [pb + t for t in range(kernel)], (length, kernel, dil, i)
    return worst


# ---------------------------------------------------------------------------------------------------
# NAT modules (names as in SHI-Labs/Neighborhood-Attention-Transformer nat.py / dinat.py)


class NeighborhoodAttention2D(nn.Module):
    """NATTEN's NeighborhoodAttention2D: zero-pad bottom/right up to kernel*dilation before qkv (the
    padded tokens carry the qkv bias), qkv -> NA with rpb -> crop -> proj."""

    def __init__(self, dim, num_heads, kernel_size, dilation=1):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.dilation = dilation or 1
        self.window_size = self.kernel_size * self.dilation
        self.qkv = nn.Linear(dim, dim * 3)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        nn.init.trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, Hp, Wp, C = x.shape
        H, W = Hp, Wp
        pad_r = pad_b = 0
        if H < self.window_size or W < self.window_size:
            pad_r = max(0, self.window_size - W)
            pad_b = max(0, self.window_size - H)
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
            _, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H, W, 3, self.num_heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        x = self.attend(qkv[0], qkv[1], qkv[2])
        x = x.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)
        if pad_r or pad_b:
            x = x[:, :Hp, :Wp, :]
        return self.proj(x)

    def attend(self, q, k, v):
        """q, k, v [B, heads, H, W, head_dim] -> the attention's output, same shape (another NA
        implementation overrides this alone)."""
        q = q * self.scale
        attn = na2d_qk(q, k, self.rpb, self.kernel_size, self.dilation).softmax(dim=-1)
        return na2d_av(attn, v, self.kernel_size, self.dilation)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # erf form
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x, p, training):
    """Stochastic depth: each sample's branch kept with probability 1 - p and then scaled by 1 / (1 - p)."""
    if p <= 0.0 or not training:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class NATLayer(nn.Module):
    def __init__(self, dim, num_heads, kernel_size, dilation=1, mlp_ratio=4.0, layer_scale=None, drop_path=0.0):
        super().__init__()
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighborhoodAttention2D(dim, num_heads, kernel_size, dilation)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.layer_scale = layer_scale is not None and type(layer_scale) in (int, float)
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x):
        p, t = self.drop_path, self.training
        if not self.layer_scale:
            x = x + drop_path(self.attn(self.norm1(x)), p, t)
            return x + drop_path(self.mlp(self.norm2(x)), p, t)
        x = x + drop_path(self.gamma1 * self.attn(self.norm1(x)), p, t)
        return x + drop_path(self.gamma2 * self.mlp(self.norm2(x)), p, t)


class ConvTokenizer(nn.Module):
    """Two 3x3 convolutions: stride 2, then patch_stride / 2 (NAT's tokenizer is patch_stride 4)."""

    def __init__(self, in_chans, embed_dim, patch_stride=4):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=patch_stride // 2, padding=1),
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x):
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class NATBlock(nn.Module):
    def __init__(self, dim, depth, num_heads, kernel_size, dilations=None, downsample=True, mlp_ratio=4.0,
                 layer_scale=None, drop_path=None):
        super().__init__()
        self.blocks = nn.ModuleList([
            NATLayer(dim, num_heads, kernel_size, 1 if dilations is None else dilations[i], mlp_ratio, layer_scale,
                     0.0 if drop_path is None else drop_path[i])
            for i in range(depth)
        ])
        self.downsample = ConvDownsampler(dim) if downsample else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class NAT(nn.Module):
    """NAT (dilations None) or DiNAT (dilations: one list per level, one entry per layer). drop_path_rate:
    the stochastic depth of the last layer, rising linearly from 0 at the first (NAT's schedule)."""

    def __init__(self, embed_dim, depths, num_heads, kernel_size=7, dilations=None, mlp_ratio=4.0,
                 layer_scale=None, in_chans=3, num_classes=1000, drop_path_rate=0.0, patch_stride=4):
        super().__init__()
        self.num_levels = len(depths)
        self.num_features = int(embed_dim * 2 ** (self.num_levels - 1))
        self.patch_embed = ConvTokenizer(in_chans, embed_dim, patch_stride)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.levels = nn.ModuleList([
            NATBlock(int(embed_dim * 2 ** i), depths[i], num_heads[i], kernel_size,
                     None if dilations is None else dilations[i], i < self.num_levels - 1, mlp_ratio, layer_scale,
                     dpr[sum(depths[:i]):sum(depths[:i + 1])])
            for i in range(self.num_levels)
        ])
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x):
        x = self.patch_embed(x)
        for level in self.levels:
            x = level(x)
        x = self.norm(x).flatten(1, 2)
        return x.mean(dim=1)

    def forward(self, x):
        return self.head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------
# safetensors without the safetensors package

_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int32: "I32", torch.int64: "I64",
           torch.float16: "F16", torch.bfloat16: "BF16"}
_TORCH = {v: k for k, v in _DTYPES.items()}


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} (CPU, any dtype in _DTYPES) and string metadata, names sorted."""
    import json
    import struct
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        data = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    """Returns ({name: tensor}, metadata dict). Little-endian host assumed (x86, ARM)."""
    import json
    import struct
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        dt = _TORCH[e["dtype"]]
        buf = bytearray(raw[base + b:base + end])
        if dt == torch.bfloat16:
            t = torch.frombuffer(buf, dtype=torch.int16).view(torch.bfloat16) if buf else torch.empty(0, dtype=dt)
        else:
            t = torch.frombuffer(buf, dtype=dt) if buf else torch.empty(0, dtype=dt)
        out[name] = t.reshape(e["shape"]).clone()
    return out, meta


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    print(f"na2d self-test: worst relative difference to brute force {self_test():.3g}")
