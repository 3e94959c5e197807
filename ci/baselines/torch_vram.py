#!/usr/bin/env python3
"""The VRAM study's baseline transformer built from PyTorch's own modules, as the original's
`StandardTransformerModel` (design model.md §6.3): nn.Embedding (no positions) → L post-LN
nn.TransformerEncoderLayer (ReLU, batch_first, no mask) → nn.Linear head.

--fixture OUT: a small instance in float64 on the CPU, in eval mode (dropout off), and writes
its weights, ids, targets, logits and the autograd gradients of the mean cross-entropy (the
independent check of muse's `reference::baseline`, crates/muse-model/tests/vram_grad.rs).
--model memopt: the same for the memory-optimised model instead (torch_train_models.MemOpt, the
causal conv and a true cumsum: `reference::memopt` with Scan::Cumsum, Conv::Causal), every tensor
redrawn from a seeded generator so that none is zero or vanishingly small."""
import argparse
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_model import save_safetensors as save  # the same minimal writer (this folder is on sys.path)


class Baseline(nn.Module):
    def __init__(self, vocab, d, layers, heads, ffn):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, heads, ffn, dropout=0.1, activation="relu", batch_first=True, norm_first=False)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.output = nn.Linear(d, vocab)

    def forward(self, ids):
        return self.output(self.transformer(self.embedding(ids)))


def memopt_weights(m, seed):
    """Redraws every tensor of a MemOpt (its inits leave biases and LayerNorm shifts zero and scale
    the projections by 0.02): O(1) activations, LayerNorm gains near 1, every gradient nonzero."""
    g = torch.Generator().manual_seed(seed)
    rn = lambda p: torch.randn(p.shape, generator=g, dtype=p.dtype)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "ln" in name or "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * rn(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * rn(p))
            elif "core" in name:
                p.copy_(0.5 * rn(p))
            elif "phase_shift" in name:
                p.copy_(0.5 * rn(p))
            elif "T_conv" in name:
                p.copy_(0.3 * rn(p))
            else:  # (out, in) Linear weights
                p.copy_(rn(p) / p.shape[1] ** 0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--model", choices=("baseline", "memopt"), default="baseline")
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.model == "baseline":
        cfg = dict(vocab=50, d=16, layers=2, heads=2, ffn=32)
        m = Baseline(**cfg).double().eval()
    else:
        from torch_train_models import MemOpt  # it imports this module's Baseline

        # reference::memopt's unit-test shapes: V 50, D 16, L 2, HTT rank 4, AR-SSM rank 8, f 8, o 8.
        cfg = dict(vocab=50, d=16, layers=2, r=4, rank=8, f=8, o=8, causal=True, ckpt=False)
        m = MemOpt(**cfg).double().eval()
        memopt_weights(m, 1)
    ids = torch.randint(0, cfg["vocab"], (2, 6))
    targets = (ids * 7 + 3) % cfg["vocab"]
    logits = m(ids)
    loss = F.cross_entropy(logits.reshape(-1, cfg["vocab"]), targets.reshape(-1))
    loss.backward()
    os.makedirs(a.fixture, exist_ok=True)
    np.save(f"{a.fixture}/ids.npy", ids.numpy())
    np.save(f"{a.fixture}/targets.npy", targets.numpy())
    np.save(f"{a.fixture}/logits.npy", logits.detach().numpy())
    meta = {"config": json.dumps(cfg), "loss": repr(loss.item()), "torch": torch.__version__,
            "generator": "ci/baselines/torch_vram.py --fixture" + ("" if a.model == "baseline" else " --model memopt")}
    save(f"{a.fixture}/weights.safetensors", {k: v.detach().numpy() for k, v in m.named_parameters()}, meta)
    save(f"{a.fixture}/grads.safetensors", {k: v.grad.numpy() for k, v in m.named_parameters()}, meta)
    print(f"loss {loss.item():.17g} -> {a.fixture}")


if __name__ == "__main__":
    main()
