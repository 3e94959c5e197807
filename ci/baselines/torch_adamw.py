#!/usr/bin/env python3
"""PyTorch's own AdamW, clip_grad_norm_ and a warm-up + cosine LambdaLR on a toy problem, as the
oracle of muse's optimiser (crates/muse-train/tests/adamw.rs): 40 parameters, 12 steps of seeded
gradients (large enough that clipping acts on some steps), float64.

--fixture OUT writes OUT/adamw.json: the hyper-parameters, the gradients of every step, and the
parameters, the learning rate and the pre-clip norm after every step."""
import argparse
import json
import math
import os

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", required=True)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    n, steps, peak, warmup, min_ratio, clip = 40, 12, 0.05, 3, 0.1, 1.0
    p = torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))
    p0 = p.detach().clone()
    opt = torch.optim.AdamW([p], lr=peak, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

    def factor(step):  # LambdaLR's step counts from 0, as muse's cosine_lr
        if step < warmup:
            return (step + 1) / warmup
        t = min((step - warmup) / max(steps - warmup, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    record = []
    for s in range(steps):
        grad = torch.randn(n, generator=g, dtype=torch.float64) * (0.05 if s % 2 else 0.5)
        lr = opt.param_groups[0]["lr"]
        p.grad = grad.clone()
        norm = torch.nn.utils.clip_grad_norm_([p], clip).item()
        opt.step()
        sched.step()
        record.append({"grad": grad.tolist(), "lr": lr, "norm": norm, "params": p.detach().tolist()})
    os.makedirs(a.fixture, exist_ok=True)
    out = {"generator": "ci/baselines/torch_adamw.py --fixture", "torch": torch.__version__,
           "peak": peak, "warmup": warmup, "min_ratio": min_ratio, "clip": clip, "steps": steps,
           "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "params0": p0.tolist(), "record": record}
    json.dump(out, open(f"{a.fixture}/adamw.json", "w"), indent=0)
    print(f"{steps} steps -> {a.fixture}/adamw.json")


if __name__ == "__main__":
    main()
