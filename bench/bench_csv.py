"""bench/bench_csv.py — the CSV rows the PyTorch side-by-side scripts append (torch_gemm.py, torch_nat.py)."""
import csv
import os


def append_rows(path, rows):
    """Appends dict rows to path, with a header first when the file is new or empty."""
    if not path or not rows:
        return
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)
