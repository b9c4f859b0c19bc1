#!/usr/bin/env python3
"""Compares the logits two layouts wrote with `shardlm bench decode --dump-logits`
(raw f32 [rows, vocab]; the same random model in every layout).

Prints, per row, the largest absolute difference relative to the largest
|logit| of the reference row, and whether the greedy token (argmax) agrees.
Exit status 1 when a row's argmax differs (and its top-2 margin in the
reference is larger than the tolerance, i.e. not a near tie) or the relative
difference exceeds --tol.

  python3 bench/compare_logits.py tp1.bin tp2.bin [--vocab 128256] [--tol 0.02]
"""
import argparse
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("other")
    ap.add_argument("--vocab", type=int, default=128256)
    # bf16 activations: each layer rounds to 8 bits of mantissa and the TP sums
    # run in another order, so logits differ by a few bf16 ulps of their scale.
    ap.add_argument("--tol", type=float, default=0.02)
    a = ap.parse_args()
    r = np.fromfile(a.ref, dtype=np.float32).reshape(-1, a.vocab)
    o = np.fromfile(a.other, dtype=np.float32).reshape(-1, a.vocab)
    if r.shape != o.shape:
        print(f"shapes differ: {r.shape} vs {o.shape}")
        return 1
    bad = 0
    for i in range(r.shape[0]):
        scale = float(np.abs(r[i]).max())
        rel = float(np.abs(r[i] - o[i]).max()) / max(scale, 1e-30)
        top = np.argsort(r[i])[-2:]
        margin = float(r[i][top[1]] - r[i][top[0]]) / max(scale, 1e-30)
        same = int(r[i].argmax()) == int(o[i].argmax())
        ok = rel <= a.tol and (same or margin <= a.tol)
        bad += not ok
        print(f"row {i}: max |diff| / max |logit| = {rel:.2e} (max |logit| {scale:.3g}); "
              f"argmax {int(r[i].argmax())} vs {int(o[i].argmax())} {'same' if same else 'DIFFERENT'}"
              f" (top-2 margin {margin:.2e}) {'ok' if ok else 'FAIL'}")
    print(f"{r.shape[0] - bad}/{r.shape[0]} rows agree within {a.tol}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
