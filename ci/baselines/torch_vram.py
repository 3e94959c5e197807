#!/usr/bin/env python3
"""The VRAM study's baseline transformer built from PyTorch's own modules, as the original's
`StandardTransformerModel` (design model.md §6.3): nn.Embedding (no positions) → L post-LN
nn.TransformerEncoderLayer (ReLU, batch_first, no mask) → nn.Linear head.

--fixture OUT: a small instance in float64 on the CPU, in eval mode (dropout off), and writes
its weights, ids, targets, logits and the autograd gradients of the mean cross-entropy (the
independent check of muse's `reference::baseline`, crates/muse-model/tests/vram_grad.rs)."""
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", required=True)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = dict(vocab=50, d=16, layers=2, heads=2, ffn=32)
    m = Baseline(**cfg).double().eval()
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
            "generator": "ci/baselines/torch_vram.py --fixture"}
    save(f"{a.fixture}/weights.safetensors", {k: v.detach().numpy() for k, v in m.named_parameters()}, meta)
    save(f"{a.fixture}/grads.safetensors", {k: v.grad.numpy() for k, v in m.named_parameters()}, meta)
    print(f"loss {loss.item():.17g} -> {a.fixture}")


if __name__ == "__main__":
    main()
