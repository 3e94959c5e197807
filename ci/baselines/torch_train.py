#!/usr/bin/env python3
"""Ten training steps of the repo's PyTorch model (torch_model.py, exact profile, float64, CPU)
with PyTorch's own AdamW, clip_grad_norm_ and warm-up + cosine LambdaLR, from the oracle weights
on seeded batches: the oracle of muse's whole training step (gradient, clipping, schedule,
AdamW), crates/muse-model/tests/train_steps.rs.

--fixture OUT writes OUT/ids.npy and OUT/targets.npy (int64, (steps, B, N)) and OUT/losses.json."""
import argparse
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from torch_model import forward, load_safetensors, to_torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--model", default="fixtures/model/oracle")
    a = ap.parse_args()
    cfg = json.load(open(f"{a.model}/config.json"))
    w_np, _ = load_safetensors(f"{a.model}/weights.safetensors")
    w = to_torch(w_np, torch.float64, "cpu")
    buffers = ("h0_diag_base", "h0_super_base", "h0_sub_base")
    params = [v.requires_grad_() for k, v in w.items() if not k.endswith(buffers)]
    steps, batch, n, peak, warmup, min_ratio, clip = 10, 2, 8, 0.02, 2, 0.1, 1.0
    rng = np.random.default_rng(5)
    ids = rng.integers(0, cfg["vocab_size"], (steps, batch, n))
    targets = rng.integers(0, cfg["vocab_size"], (steps, batch, n))
    opt = torch.optim.AdamW(params, lr=peak, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        t = min((step - warmup) / max(steps - warmup, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    losses, norms = [], []
    for s in range(steps):
        opt.zero_grad()
        logits = forward(w, torch.from_numpy(ids[s]), cfg, "exact")
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets[s]).reshape(-1))
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(params, clip).item())
        opt.step()
        sched.step()
        losses.append(loss.item())
    os.makedirs(a.fixture, exist_ok=True)
    np.save(f"{a.fixture}/ids.npy", ids)
    np.save(f"{a.fixture}/targets.npy", targets)
    json.dump({"generator": "ci/baselines/torch_train.py --fixture", "torch": torch.__version__, "steps": steps,
               "peak": peak, "warmup": warmup, "min_ratio": min_ratio, "clip": clip, "weight_decay": 0.01,
               "losses": losses, "grad_norms": norms}, open(f"{a.fixture}/losses.json", "w"), indent=1)
    print(f"losses {losses[0]:.6f} -> {losses[-1]:.6f}, norms {norms[0]:.3f} ... -> {a.fixture}")


if __name__ == "__main__":
    main()
