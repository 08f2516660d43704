#!/usr/bin/env python3
"""Times one M3AE training step of the project's PyTorch reference (m3ae_reference.py), for `m3ae bench model`.

A step is what `computeGradients` does: the MLM, MIM and ITM forward passes of one micro-batch in training mode
(dropout on) and the backward pass of their summed losses. Float32 everywhere (TF32 off), on CUDA when present,
else on the CPU. Prints one JSON line: {"device", "torch", "batch", "text_length", "step_ms": [...], "samples_per_second"}.

    python3 tools/reference/bench_step.py --config config.json --batch 32 --text-length 64 [--steps 5] [--device auto|cuda|cpu]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from m3ae_reference import M3AE, compute, make_batch  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="the model configuration as m3ae writes it (JSON)")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--text-length", type=int, required=True, help="tokens per caption in the batch (the training length)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    args = ap.parse_args()
    if args.batch < 2:
        sys.exit(f"--batch: {args.batch} is too small; expected at least 2 (the ITM batch has a positive and a negative half)")
    with open(args.config) as f:
        c = json.load(f)
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = M3AE(c).to(device)
    model.train()
    gen = torch.Generator().manual_seed(1)
    # The batch's captions are text_length tokens long; the model keeps its own position table.
    b = {k: v.to(device) for k, v in make_batch(dict(c, maxTextLength=args.text_length), args.batch, gen).items()}

    def step():
        model.zero_grad(set_to_none=True)
        r = compute(model, b)
        (r["mlm_loss"] + r["mim_loss"] + r["itm_loss"]).backward()
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up: kernels, allocator
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000)
    best = min(times)
    print(json.dumps({
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch": args.batch,
        "text_length": args.text_length,
        "step_ms": times,
        "samples_per_second": args.batch / (best / 1000),
    }))


if __name__ == "__main__":
    main()
