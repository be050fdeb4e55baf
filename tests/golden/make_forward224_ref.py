"""tests/golden/make_forward224_ref.py — writes tests/data/forward224_logits.safetensors, the reference of
tests/test_model.c's forward_224_inference: the logits PyTorch computes, in float64, for NAT-Mini and
DiNAT-Mini at 224x224 with the weights nat initialises from seed 0 and the test's random image.

nat writes those weights and the image (its own init, so nothing is stored but 2 x 1000 logits):
    mkdir -p /tmp/f224 && NAT_DUMP_FORWARD224=/tmp/f224 CK_RUN_CASE=forward_224_inference ./build/tests/test_model
    python3 tests/golden/make_forward224_ref.py /tmp/f224 [output path]
(any PyTorch; scripts/torch-venv.sh makes one). The PyTorch network is tests/golden/nat_torch.py, built
from each weights file's nat.* metadata and loaded with load_state_dict(strict=True).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nat_torch  # noqa: E402
from check_nat_checkpoint import model_from_metadata  # noqa: E402


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    src = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join("tests", "data", "forward224_logits.safetensors")
    inp, _ = nat_torch.load_safetensors(os.path.join(src, "input.safetensors"))
    x = inp["input"].double()
    tensors = {}
    for name in ("nat_mini", "dinat_mini"):
        weights, meta = nat_torch.load_safetensors(os.path.join(src, name + ".safetensors"))
        model = model_from_metadata(meta)
        model.load_state_dict({k: v for k, v in weights.items()}, strict=True)
        model.double().eval()
        with torch.no_grad():
            logits = model(x)
        tensors[name + ".logits"] = logits.to(torch.float32)
        print(f"{name}: logits {list(logits.shape)}, max-abs {logits.abs().max().item():.4g}, "
              f"argmax {logits.argmax().item()}")
    meta = {"format": "nat forward224 reference v1", "torch_version": torch.__version__,
            "input": "tests/test_model.c forward_224_inference: nat_rng seed 11, N(0,1) [1, 3, 224, 224]",
            "weights": "nat_model_new_variant(name, 1000, 3): nat's init, seed 0",
            "precision": "forward in float64, logits stored F32",
            "generator": "tests/golden/make_forward224_ref.py"}
    nat_torch.save_safetensors(out, tensors, meta)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
