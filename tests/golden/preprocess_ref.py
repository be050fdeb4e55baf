"""tests/golden/preprocess_ref.py — nat's evaluation preprocessing (C, through ctypes on libnat.so)
against timm's (PIL), on synthetic real-looking images made here.

    python3 tests/golden/preprocess_ref.py --lib build/libnat.so [--n 50] [--keep DIR]

timm evaluates NAT/DiNAT with crop_pct 0.875: PIL's Image.resize(BICUBIC) of the shorter side to
floor(224 / 0.875) = 256 (torchvision's Resize sizing: the longer side int(256 * long / short)), a
centre crop of 224 (torchvision's offsets: int(round((H - 224) / 2))), ToTensor and Normalize. nat does
the same in C: stb_image decodes, stb_image_resize resamples (data/transform.c). This prints, per
channel, the mean and max absolute difference in [0, 1] units (before normalisation), both end to end
(PIL's libjpeg against stb_image's JPEG decoder included) and for the resampling alone (PIL resizing
the pixels stb_image decoded), and exits 1 when the mean exceeds 1/255 or the max 4/255.

Images (make_images): 50 files, JPEG and PNG, portrait, landscape, square, smaller than 256 (so
upscaled), grey, grey + alpha and RGBA, with smooth gradients, shapes, texture and noise. Needs numpy
and PIL (python3-pil); the model-free C side needs only libnat.
"""

import argparse
import ctypes
import math
import os
import sys
import tempfile

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def synthetic_image(rng, w, h):
    """An RGB uint8 [h, w, 3] image: two-tone gradient sky, a few filled discs and rectangles with soft
    edges, a sinusoidal texture, a little noise — enough edges and smooth areas to exercise a resampler
    the way photographs do."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (x / max(w - 1, 1) * rng.uniform(0.2, 1) + y / max(h - 1, 1) * rng.uniform(0.2, 1))
    t = t / max(t.max(), 1e-9)
    img = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    for _ in range(rng.integers(3, 9)):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.05, 0.35) * min(w, h)
        col = rng.uniform(0, 255, 3)
        if rng.uniform() < 0.5:
            d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r
        else:
            d = np.maximum(np.abs(x - cx) - r, np.abs(y - cy) - 0.6 * r)
        a = np.clip(0.5 - d / rng.uniform(0.7, 4.0), 0, 1)[..., None]
        img = img * (1 - a) + col[None, None, :] * a
    f = rng.uniform(0.02, 0.3)
    img += rng.uniform(5, 25) * np.sin(f * x + rng.uniform(0, 6))[..., None] * np.cos(f * 0.7 * y)[..., None]
    img += rng.normal(0, rng.uniform(1, 6), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_images(directory, n=50, seed=0):
    """Writes n test images into directory and returns their paths."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    sizes = [(640, 480), (480, 640), (500, 375), (375, 500), (300, 300), (1024, 683), (683, 1024), (200, 150),
             (150, 220), (256, 256), (333, 517), (799, 601)]
    modes = ["RGB", "RGB", "RGB", "L", "RGBA", "LA"]
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        mode = modes[i % len(modes)]
        rgb = synthetic_image(rng, w, h)
        im = Image.fromarray(rgb, "RGB")
        if mode == "L":
            im = im.convert("L")
        elif mode in ("RGBA", "LA"):
            alpha = Image.fromarray(synthetic_image(rng, w, h)[..., 0], "L")
            im = (im.convert("L") if mode == "LA" else im).copy()
            im.putalpha(alpha)
        jpeg = mode in ("RGB", "L") and i % 2 == 0
        path = os.path.join(directory, f"img{i:02d}_{w}x{h}_{mode}.{'jpg' if jpeg else 'png'}")
        if jpeg:
            im.save(path, quality=int(rng.integers(75, 96)))
        else:
            im.save(path)
        paths.append(path)
    return paths


def pil_eval(im, size=224, crop_pct=0.875):
    """timm's eval transform on a PIL image, in [0, 1] floats [3, size, size] (before Normalize)."""
    from PIL import Image
    im = im.convert("RGB")
    scale = math.floor(size / crop_pct)
    w, h = im.size
    if w <= h:
        nw, nh = scale, int(scale * h / w)
    else:
        nw, nh = int(scale * w / h), scale
    im = im.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0


class NatImage(ctypes.Structure):
    _fields_ = [("c", ctypes.c_int), ("h", ctypes.c_int), ("w", ctypes.c_int),
                ("data", ctypes.POINTER(ctypes.c_float)), ("cap", ctypes.c_size_t)]


class Nat:
    """nat_image_load and nat_image_preprocess_eval from libnat.so."""

    def __init__(self, lib):
        self.lib = ctypes.CDLL(lib)
        self.lib.nat_error_message.restype = ctypes.c_char_p
        self.lib.nat_image_preprocess_eval.argtypes = [
            ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_int,
            ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float), ctypes.POINTER(NatImage)]
        self.lib.nat_image_load.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(NatImage)]

    def _take(self, rc, im, what):
        if rc != 0:
            raise RuntimeError(f"{what}: {self.lib.nat_error_message().decode()}")
        out = np.ctypeslib.as_array(im.data, shape=(im.c, im.h, im.w)).copy()
        self.lib.nat_image_free(ctypes.byref(im))
        return out

    def preprocess_eval(self, path, size=224, crop_pct=0.875, bicubic=True, mean=(0, 0, 0), std=(1, 1, 1)):
        im = NatImage()
        m, s = (ctypes.c_float * 3)(*mean), (ctypes.c_float * 3)(*std)
        rc = self.lib.nat_image_preprocess_eval(path.encode(), 3, size, crop_pct, 1 if bicubic else 0, m, s,
                                                ctypes.byref(im))
        return self._take(rc, im, path)

    def load(self, path):
        im = NatImage()
        return self._take(self.lib.nat_image_load(path.encode(), 3, ctypes.byref(im)), im, path)


def compare(nat, paths):
    from PIL import Image
    rows = []
    for p in paths:
        c = nat.preprocess_eval(p)
        ref = pil_eval(Image.open(p))
        decoded = np.rint(nat.load(p) * 255).astype(np.uint8).transpose(1, 2, 0)
        ref_same = pil_eval(Image.fromarray(decoded, "RGB"))
        rows.append((os.path.basename(p), np.abs(c - ref), np.abs(c - ref_same)))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", default=os.path.join("build", "libnat.so"))
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--keep", help="write the images here (default: a temporary folder)")
    args = ap.parse_args()
    nat = Nat(args.lib)
    with tempfile.TemporaryDirectory() as tmp:
        d = args.keep or tmp
        os.makedirs(d, exist_ok=True)
        rows = compare(nat, make_images(d, args.n))
    worst_mean = worst_max = 0.0
    for label, idx in (("end to end (stb_image + stb_image_resize vs PIL decode + resize)", 1),
                       ("resampling alone (same decoded pixels)", 2)):
        means = np.array([r[idx].reshape(3, -1).mean(axis=1) for r in rows]) * 255
        maxes = np.array([r[idx].reshape(3, -1).max(axis=1) for r in rows]) * 255
        print(f"{label}, {len(rows)} images, in 1/255 units:")
        print("  mean |diff| per channel (R, G, B): average " + ", ".join(f"{v:.3f}" for v in means.mean(0))
              + "; worst image " + ", ".join(f"{v:.3f}" for v in means.max(0)))
        print("  max |diff| per channel (R, G, B): worst image " + ", ".join(f"{v:.2f}" for v in maxes.max(0)))
        worst = rows[int(means.max(1).argmax())][0]
        print(f"  image with the largest mean: {worst}")
        if idx == 1:
            worst_mean, worst_max = means.max(), maxes.max()
    ok = worst_mean <= 1.0 + 1e-6 and worst_max <= 4.0 + 1e-6
    print(f"{'PASS' if ok else 'FAIL'}: mean <= 1/255 and max <= 4/255 per channel on every image")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
