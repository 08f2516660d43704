#!/usr/bin/env python3
"""PyTorch reference check of `m3ae model forward` (a verification bench, not a CI test).

Builds a small M3AE in PyTorch from the specification (docs/M3AE-REFERENCE.md: CLIP-style pre-LN vision blocks
with QuickGELU and nn.MultiheadAttention, RoBERTa-style post-LN text layers, BERT co-attention fusion layers,
MLM/MIM/ITM heads, each objective with its own forward pass), with the official state-dict names. It saves the
weights and one batch as safetensors, computes the five figures and the gradient of mlm_loss + mim_loss +
itm_loss in eval mode, runs `m3ae model forward` on the same files and compares.

Needs torch (Debian: apt-get install python3-torch; this machine's /usr/bin/python3) and numpy. safetensors is
read and written here from the format description (8-byte LE header length, JSON header, raw LE data), so the
Python `safetensors` package is not needed.

    /usr/bin/python3 tools/reference/m3ae_reference.py --out /tmp/m3ae-ref [--m3ae "node tools/bin/m3ae.js"]
"""
import argparse
import json
import math
import os
import shlex
import struct
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TINY = {
    "imageSize": 32, "patchSize": 8, "hiddenSize": 32, "numHeads": 2, "mlpRatio": 4, "visionLayers": 2,
    "textLayers": 1, "fusionLayers": 2, "vocabSize": 1000, "maxTextLength": 16, "padTokenId": 1, "mimLayer": 1,
    "mimMaskRatio": 0.75, "mlmMaskRatio": 0.15, "decoderHiddenSize": 16, "decoderLayers": 1, "decoderHeads": 2,
    "normPixLoss": True, "textLayerNormEps": 1e-5, "fusionLayerNormEps": 1e-12, "dropout": 0.1,
    "objectives": {k: {"enabled": True, "weight": 1} for k in ("mlm", "mim", "itm")},
}

# ---------------------------------------------------------------- safetensors (from the format description)
NP_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def save_safetensors(path, tensors, metadata=None):
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dtype = next(k for k, v in NP_DTYPES.items() if arr.dtype == v)
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype=np.dtype(NP_DTYPES[info["dtype"]]).newbyteorder("<")).reshape(info["shape"])
    return out, meta


# ---------------------------------------------------------------- the model, official module names
class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """CLIP block: pre-LN, nn.MultiheadAttention (fused in_proj), 4x MLP with QuickGELU. Sequence-first."""

    def __init__(self, d, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads)
        self.ln_1 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(d, 4 * d)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(4 * d, d))]))
        self.ln_2 = nn.LayerNorm(d)

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, d, blocks, heads):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(d, heads) for _ in range(blocks)])

    def forward(self, x):
        return self.resblocks(x)


class Visual(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, p = c["hiddenSize"], c["patchSize"]
        g = c["imageSize"] // p
        self.conv1 = nn.Conv2d(3, d, kernel_size=p, stride=p, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(d) * d ** -0.5)
        self.positional_embedding = nn.Parameter(torch.randn(g * g + 1, d) * d ** -0.5)
        self.ln_pre = nn.LayerNorm(d)
        self.transformer = Transformer(d, c["visionLayers"], c["numHeads"])
        self.ln_post = nn.LayerNorm(d)

    def patch_tokens(self, img):
        x = self.conv1(img).flatten(2).transpose(1, 2)  # [B, N, D]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], 1)

    def encode(self, x):
        x = self.ln_pre(x)
        x = self.transformer(x.transpose(0, 1)).transpose(0, 1)
        return self.ln_post(x)  # on every token


class VisionEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.visual = Visual(c)


class BertSelfAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, h, mask_add, other=None):
        kv = h if other is None else other
        B, Lq, D = h.shape
        split = lambda t: t.view(t.shape[0], t.shape[1], self.heads, D // self.heads).permute(0, 2, 1, 3)
        q, k, v = split(self.query(h)), split(self.key(kv)), split(self.value(kv))
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // self.heads) + mask_add
        return (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(B, Lq, D)


class BertSelfOutput(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.dense, self.LayerNorm = nn.Linear(d, d), nn.LayerNorm(d, eps=eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, d, heads, eps):
        super().__init__()
        self.self = BertSelfAttention(d, heads)
        self.output = BertSelfOutput(d, eps)

    def forward(self, h, mask_add, other=None):
        return self.output(self.self(h, mask_add, other), h)


class BertIntermediate(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.dense = nn.Linear(d, f)

    def forward(self, x):
        return F.gelu(self.dense(x))  # erf form


class BertOutput(nn.Module):
    def __init__(self, d, f, eps):
        super().__init__()
        self.dense, self.LayerNorm = nn.Linear(f, d), nn.LayerNorm(d, eps=eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class BertLayer(nn.Module):
    def __init__(self, d, heads, f, eps):
        super().__init__()
        self.attention = BertAttention(d, heads, eps)
        self.intermediate = BertIntermediate(d, f)
        self.output = BertOutput(d, f, eps)

    def forward(self, h, mask_add):
        a = self.attention(h, mask_add)
        return self.output(self.intermediate(a), a)


class BertCrossLayer(nn.Module):
    """Post-LN: self-attention, cross-attention (keys/values from the other modality), FFN."""

    def __init__(self, d, heads, f, eps):
        super().__init__()
        self.attention = BertAttention(d, heads, eps)
        self.crossattention = BertAttention(d, heads, eps)
        self.intermediate = BertIntermediate(d, f)
        self.output = BertOutput(d, f, eps)

    def forward(self, h, other, mask_add, other_mask_add):
        a = self.attention(h, mask_add)
        a = self.crossattention(a, other_mask_add, other)
        return self.output(self.intermediate(a), a)


class RobertaEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hiddenSize"]
        self.pad = c["padTokenId"]
        self.word_embeddings = nn.Embedding(c["vocabSize"], d)
        self.position_embeddings = nn.Embedding(c["maxTextLength"] + 2, d)
        self.token_type_embeddings = nn.Embedding(1, d)
        self.LayerNorm = nn.LayerNorm(d, eps=c["textLayerNormEps"])

    def forward(self, ids):
        not_pad = ids.ne(self.pad).long()
        positions = torch.cumsum(not_pad, 1) * not_pad + self.pad  # RoBERTa: start after the padding id
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings(torch.zeros_like(ids))
        return self.LayerNorm(x)


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hiddenSize"]
        self.layer = nn.ModuleList([BertLayer(d, c["numHeads"], d * c["mlpRatio"], c["textLayerNormEps"]) for _ in range(c["textLayers"])])


class LanguageEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = RobertaEmbeddings(c)
        self.encoder = Encoder(c)


class Pooler(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dense = nn.Linear(d, d)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))


class Transform(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.dense, self.LayerNorm = nn.Linear(d, d), nn.LayerNorm(d, eps=eps)

    def forward(self, x):
        return self.LayerNorm(F.gelu(self.dense(x)))


class MLMHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transform = Transform(c["hiddenSize"], c["fusionLayerNormEps"])
        self.decoder = nn.Linear(c["hiddenSize"], c["vocabSize"], bias=False)
        self.bias = nn.Parameter(torch.zeros(c["vocabSize"]))

    def forward(self, x):
        return self.decoder(self.transform(x)) + self.bias


def sincos_2d(dim, grid):
    """MAE's 2-D sin-cos table with a zero class row: first half encodes x (column), second half y (row)."""
    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], 1)
    ys, xs = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    emb = np.concatenate([one(dim // 2, xs), one(dim // 2, ys)], 1)
    return np.concatenate([np.zeros((1, dim)), emb], 0).astype(np.float32)


class MIMHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, dd, p = c["hiddenSize"], c["decoderHiddenSize"], c["patchSize"]
        g = c["imageSize"] // p
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dd) * 0.02)
        self.decoder_pos_embed = nn.Parameter(torch.from_numpy(sincos_2d(dd, g)).unsqueeze(0), requires_grad=False)
        self.decoder = Transformer(dd, c["decoderLayers"], c["decoderHeads"])
        self.decoder_norm = nn.LayerNorm(dd)
        self.decoder_pred = nn.Linear(dd, p * p * 3)

    def forward(self, x, ids_restore):
        x = self.decoder_embed(x)
        masks = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        rest = torch.cat([x[:, 1:], masks], 1)
        rest = torch.gather(rest, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))  # back to grid order
        x = torch.cat([x[:, :1], rest], 1) + self.decoder_pos_embed
        x = self.decoder(x.transpose(0, 1)).transpose(0, 1)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


class ITMHead(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, 2)


class M3AE(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f, eps = c["hiddenSize"], c["hiddenSize"] * c["mlpRatio"], c["fusionLayerNormEps"]
        self.c = c
        self.vision_encoder = VisionEncoder(c)
        self.language_encoder = LanguageEncoder(c)
        self.multi_modal_language_proj = nn.Linear(d, d)
        self.multi_modal_vision_proj = nn.Linear(d, d)
        self.modality_type_embeddings = nn.Embedding(2, d)
        self.multi_modal_vision_layers = nn.ModuleList([BertCrossLayer(d, c["numHeads"], f, eps) for _ in range(c["fusionLayers"])])
        self.multi_modal_language_layers = nn.ModuleList([BertCrossLayer(d, c["numHeads"], f, eps) for _ in range(c["fusionLayers"])])
        self.multi_modal_vision_pooler = Pooler(d)
        self.multi_modal_language_pooler = Pooler(d)
        self.mlm_head = MLMHead(c)
        self.mim_head = MIMHead(c)
        self.itm_head = ITMHead(2 * d)

    def patchify(self, img):
        p = self.c["patchSize"]
        B, _, H, W = img.shape
        x = img.reshape(B, 3, H // p, p, W // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(B, (H // p) * (W // p), p * p * 3)

    def infer(self, ids, text_mask, img, mim_noise=None):
        c = self.c
        mask_add = lambda m: (1.0 - m[:, None, None, :].float()) * -10000.0
        t = self.language_encoder.embeddings(ids)
        text_add = mask_add(text_mask)
        for layer in self.language_encoder.encoder.layer:
            t = layer(t, text_add)
        t = self.multi_modal_language_proj(t)
        vis = self.vision_encoder.visual
        out = {}
        tokens = vis.patch_tokens(img)
        pos = vis.positional_embedding.unsqueeze(0)
        if mim_noise is not None:
            # MAE random masking after the positions are added; the class token is always kept.
            patches = tokens[:, 1:] + pos[:, 1:]
            B, N, D = patches.shape
            keep = int(N * (1 - c["mimMaskRatio"]))
            ids_shuffle = torch.argsort(mim_noise, 1)
            out["ids_restore"] = torch.argsort(ids_shuffle, 1)
            kept = torch.gather(patches, 1, ids_shuffle[:, :keep].unsqueeze(-1).repeat(1, 1, D))
            mask = torch.ones(B, N)
            mask[:, :keep] = 0
            out["mask"] = torch.gather(mask, 1, out["ids_restore"])
            tokens = torch.cat([tokens[:, :1] + pos[:, :1], kept], 1)
        else:
            tokens = tokens + pos
        v = self.multi_modal_vision_proj(vis.encode(tokens))
        image_add = torch.zeros(v.shape[0], 1, 1, v.shape[1])
        t = t + self.modality_type_embeddings(torch.zeros_like(text_mask))
        v = v + self.modality_type_embeddings(torch.ones(v.shape[:2], dtype=torch.long))
        k = c["fusionLayers"] if c["mimLayer"] == -1 else c["mimLayer"]
        for i, (tl, vl) in enumerate(zip(self.multi_modal_language_layers, self.multi_modal_vision_layers)):
            if i == k:
                out["image_at_k"] = v
            t, v = tl(t, v, text_add, image_add), vl(v, t, image_add, text_add)
        if k == c["fusionLayers"]:
            out["image_at_k"] = v
        out["text"], out["image"] = t, v
        out["cls"] = torch.cat([self.multi_modal_language_pooler(t), self.multi_modal_vision_pooler(v)], -1)
        return out


def compute(model, b):
    c = model.c
    r = {}
    mlm = model.infer(b["mlm_input_ids"], b["attention_mask"], b["pixel_values"])
    logits = model.mlm_head(mlm["text"])
    labels = b["mlm_labels"]
    r["mlm_loss"] = F.cross_entropy(logits.reshape(-1, c["vocabSize"]), labels.reshape(-1), ignore_index=-100)
    sel = labels != -100
    r["mlm_accuracy"] = (logits.argmax(-1)[sel] == labels[sel]).float().mean()

    mim = model.infer(b["input_ids"], b["attention_mask"], b["pixel_values"], b["mim_noise"])
    pred = model.mim_head(mim["image_at_k"], mim["ids_restore"])
    target = model.patchify(b["pixel_values"])
    if c["normPixLoss"]:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(-1)
    r["mim_loss"] = (per_patch * mim["mask"]).sum() / mim["mask"].sum()

    itm = model.infer(b["input_ids"], b["attention_mask"], b["itm_pixel_values"])
    il = model.itm_head.fc(itm["cls"])
    r["itm_loss"] = F.cross_entropy(il, b["itm_labels"])
    r["itm_accuracy"] = (il.argmax(-1) == b["itm_labels"]).float().mean()
    return r


def make_batch(c, B, gen):
    S, L, V, pad = c["imageSize"], c["maxTextLength"], c["vocabSize"], c["padTokenId"]
    N = (S // c["patchSize"]) ** 2
    pixels = torch.randn(B, 3, S, S, generator=gen)
    ids = torch.full((B, L), pad, dtype=torch.long)
    mask = torch.zeros(B, L, dtype=torch.long)
    mlm_ids = ids.clone()
    labels = torch.full((B, L), -100, dtype=torch.long)
    for s in range(B):
        n = int(torch.randint(4, L + 1, (1,), generator=gen))  # some texts padded, one may fill L
        body = torch.randint(4, V - 1, (n - 2,), generator=gen)
        ids[s, :n] = torch.cat([torch.tensor([0]), body, torch.tensor([2])])
        mask[s, :n] = 1
        mlm_ids[s] = ids[s]
        chosen = [i for i in range(1, n - 1) if float(torch.rand(1, generator=gen)) < 0.3] or [1]
        for i in chosen:
            labels[s, i] = ids[s, i]
            u = float(torch.rand(1, generator=gen))
            mlm_ids[s, i] = V - 1 if u < 0.8 else (int(torch.randint(4, V - 1, (1,), generator=gen)) if u < 0.9 else ids[s, i])
    itm_labels = torch.tensor([1 if i < B // 2 else 0 for i in range(B)])[torch.randperm(B, generator=gen)]
    itm_pixels = torch.where(itm_labels[:, None, None, None] == 1, pixels, torch.randn(B, 3, S, S, generator=gen))
    return {
        "pixel_values": pixels, "input_ids": ids, "attention_mask": mask, "mlm_input_ids": mlm_ids, "mlm_labels": labels,
        "mim_noise": torch.rand(B, N, generator=gen), "itm_pixel_values": itm_pixels, "itm_labels": itm_labels,
    }


def perturb(model):
    """Random weights away from the identity LayerNorms and zero biases, so that a swapped or untransposed tensor shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "mim_head.decoder_pos_embed":
                continue
            if name.endswith("LayerNorm.weight") or name.split(".")[-2].startswith(("ln", "decoder_norm")) and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.05 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="working directory for the files")
    ap.add_argument("--m3ae", default="node tools/bin/m3ae.js", help="how to run the m3ae command")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="wasm")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    c = TINY
    model = M3AE(c)
    perturb(model)
    model.eval()
    gen = torch.Generator().manual_seed(args.seed + 1)
    b = make_batch(c, args.batch_size, gen)

    files = {k: os.path.join(args.out, k) for k in ("config.json", "weights.safetensors", "batch.safetensors", "grads.safetensors")}
    with open(files["config.json"], "w") as f:
        json.dump(c, f)
    save_safetensors(files["weights.safetensors"], {k: v.detach().numpy() for k, v in model.state_dict().items()})
    save_safetensors(files["batch.safetensors"], {k: v.numpy() for k, v in b.items()})

    r = compute(model, b)
    model.zero_grad()
    (r["mlm_loss"] + r["mim_loss"] + r["itm_loss"]).backward()
    ref = {k: float(v) for k, v in r.items()}
    ref_grads = {n: p.grad.numpy() for n, p in model.named_parameters() if p.requires_grad}

    cmd = shlex.split(args.m3ae) + ["model", "forward", "--config", files["config.json"], "--weights", files["weights.safetensors"],
                                    "--batch", files["batch.safetensors"], "--grads", files["grads.safetensors"], "--backend", args.backend]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        sys.exit(f"m3ae model forward failed ({done.returncode})")
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    grads, _ = load_safetensors(files["grads.safetensors"])

    ok = True
    print(f"{'figure':<14}{'pytorch':>14}{'m3ae (tfjs)':>14}{'rel. diff':>12}")
    for k in ("mlm_loss", "mim_loss", "itm_loss", "mlm_accuracy", "itm_accuracy"):
        rel = abs(ours[k] - ref[k]) / max(abs(ref[k]), 1e-12)
        ok &= rel < 1e-4
        print(f"{k:<14}{ref[k]:>14.7f}{ours[k]:>14.7f}{rel:>12.2e}")
    missing = sorted(set(ref_grads) - set(grads))
    extra = sorted(set(grads) - set(ref_grads))
    worst, worst_name = 0.0, ""
    # Attention key biases have a zero gradient in exact arithmetic (softmax ignores a shift shared by all keys):
    # each tensor is compared relative to its own scale, floored at 1e-4 of the largest gradient anywhere.
    floor = 1e-4 * max(float(np.abs(g).max()) for g in ref_grads.values())
    for n, g in ref_grads.items():
        if n not in grads:
            continue
        if grads[n].shape != g.shape:
            ok = False
            print(f"shape mismatch {n}: {grads[n].shape} vs {g.shape}")
            continue
        rel = float(np.abs(grads[n] - g).max() / max(float(np.abs(g).max()), floor))
        if rel > worst:
            worst, worst_name = rel, n
    ok &= not missing and not extra and worst < 1e-3
    print(f"gradients: {len(ref_grads)} tensors, missing {missing or 'none'}, extra {extra or 'none'}; "
          f"largest relative difference {worst:.2e} ({worst_name})")
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
