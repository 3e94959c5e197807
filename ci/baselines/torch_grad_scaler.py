#!/usr/bin/env python3
"""The oracle of muse's dynamic loss scaler (crates/muse-train/src/scaler.rs): PyTorch's own
torch.amp.GradScaler on the CPU, driven through a fixed pattern of finite and non-finite gradients,
recording after every step whether the optimizer step ran (applied) and the scale the next step
uses (scale_after).

Two schedules: PyTorch's defaults (init 2^16, growth 2, backoff 0.5, interval 2000) over 4500 steps
with infs at a few steps, and a small one (init 8, growth 4, backoff 0.25, interval 3) that grows
and backs off often, including a growth that would overflow float32 (init 2^126).

Run: .cache/fixtures-venv/bin/python ci/baselines/torch_grad_scaler.py fixtures/train/grad_scaler.json
"""
import json
import math
import sys

import torch


def run(init, growth, backoff, interval, steps, bad):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.0)
    s = torch.amp.GradScaler("cpu", init_scale=init, growth_factor=growth, backoff_factor=backoff,
                             growth_interval=interval)
    applied, scales = [], []
    for t in range(steps):
        opt.zero_grad()
        loss = (p * 1.0).sum()
        s.scale(loss).backward()
        if t in bad:
            p.grad.fill_(math.inf if t % 2 else math.nan)
        before = opt.state_dict()["state"]
        stepped = {"n": 0}
        orig = opt.step

        def counting_step(*a, **k):
            stepped["n"] += 1
            return orig(*a, **k)
        opt.step = counting_step
        s.step(opt)
        opt.step = orig
        s.update()
        applied.append(stepped["n"] == 1)
        scales.append(s.get_scale())
    return {"init": init, "growth": growth, "backoff": backoff, "interval": interval, "steps": steps,
            "non_finite_steps": sorted(bad), "applied": applied, "scale_after": scales}


def main():
    cases = {
        "torch_defaults": run(2.0 ** 16, 2.0, 0.5, 2000, 4500, {5, 6, 2100, 4400}),
        "small_interval": run(8.0, 4.0, 0.25, 3, 40, {0, 4, 5, 11, 12, 13, 30}),
        "near_f32_max": run(2.0 ** 126, 2.0, 0.5, 2, 8, {5}),
    }
    doc = {"generator": "ci/baselines/torch_grad_scaler.py", "torch": torch.__version__, "cases": cases}
    with open(sys.argv[1], "w") as f:
        json.dump(doc, f, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
