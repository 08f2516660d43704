#!/usr/bin/env python3
"""Writes the committed PyTorch fixture of `tools/src/commands/model-forward.spec.ts`.

The PyTorch reference (m3ae_reference.py: the official structure and state-dict names, written from the
specification, not from this project's mapping) builds a very small M3AE, perturbs its weights away from the
identity LayerNorms and zero biases (so that a swapped or untransposed tensor shows), and writes:

    config.json            the configuration (this project's field names)
    weights.safetensors    model.state_dict() as PyTorch names and lays it out
    batch.safetensors      one batch
    expected.json          the five figures in eval mode and, per parameter, the L2 norm of
                           ∇(mlm_loss + mim_loss + itm_loss) — what the test checks this project against

The test then needs neither torch nor Python. Regenerate (Debian's /usr/bin/python3 with python3-torch):

    /usr/bin/python3 tools/reference/make_fixture.py --out tools/test/fixtures/pytorch-reference
"""
import argparse
import json
import os

import torch

from m3ae_reference import M3AE, TINY, compute, make_batch, perturb, save_safetensors

# `tiny` narrowed so the committed files stay small (about 100 KB of weights).
FIXTURE = {**TINY, "hiddenSize": 16, "vocabSize": 64, "decoderHiddenSize": 8}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    c = FIXTURE
    model = M3AE(c)
    perturb(model)
    model.eval()
    b = make_batch(c, args.batch_size, torch.Generator().manual_seed(args.seed + 1))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(c, f, indent=1)
    save_safetensors(os.path.join(args.out, "weights.safetensors"), {k: v.detach().numpy() for k, v in model.state_dict().items()},
                     {"written_by": "tools/reference/make_fixture.py (PyTorch %s)" % torch.__version__})
    save_safetensors(os.path.join(args.out, "batch.safetensors"), {k: v.numpy() for k, v in b.items()})
    r = compute(model, b)
    model.zero_grad()
    (r["mlm_loss"] + r["mim_loss"] + r["itm_loss"]).backward()
    expected = {
        "figures": {k: float(v) for k, v in r.items()},
        "gradNorms": {n: float(p.grad.norm()) for n, p in model.named_parameters() if p.requires_grad and p.grad is not None},
        "torch": torch.__version__,
        "seed": args.seed,
    }
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
    print(json.dumps(expected["figures"]))


if __name__ == "__main__":
    main()
