#!/usr/bin/env python3
"""Renders the real-corpus training comparison (ci/gpu-train-kjv.sh's files) into a report:
OUT/report.json (one record per run and metric: kernel, backend, shape, dtype, metric, value,
target, pass, commit, device), OUT/report.md and OUT/heldout.svg (held-out loss against tokens
seen, every run). Usage: python3 ci/train_report.py DIR OUT --commit C --device D
DIR holds kjv-muse.jsonl (muse train's log.jsonl), kjv-torch-phase8.jsonl, kjv-torch-gpt.jsonl."""
import argparse
import json
import math
import os

RUNS = [
    ("kjv-muse.jsonl", "muse (CUDA, f32 + TF32 GEMMs; muse's init, seed 0)", "cuda", "f32+tf32", "#1f77b4"),
    ("kjv-torch-phase8-muse-init-f32.jsonl", "PyTorch Phase 8 (repo's torch_model.py, f32 + TF32; muse's init, seed 0)",
     "torch:torch_eager", "f32+tf32", "#9467bd"),
    ("kjv-torch-phase8-muse-init-bf16.jsonl", "PyTorch Phase 8 (repo's torch_model.py, bf16 autocast; muse's init, seed 0)",
     "torch:torch_eager", "bf16", "#8c564b"),
    ("kjv-torch-phase8.jsonl", "PyTorch Phase 8 (repo's torch_model.py, bf16 autocast; its BENCH init)", "torch:torch_eager", "bf16", "#d62728"),
    ("kjv-torch-phase8-prefix.jsonl", "PyTorch Phase 8 before the acosh fix (bf16 autocast; BENCH init)", "torch:torch_eager", "bf16", "#ff9896"),
    ("kjv-torch-phase8-prefix-f32.jsonl", "PyTorch Phase 8 before the acosh fix (f32 + TF32; BENCH init)", "torch:torch_eager", "f32+tf32", "#ff7f0e"),
    ("kjv-torch-gpt.jsonl", "PyTorch GPT (same D, L, H; tied V 50257 embedding; bf16 autocast)", "torch:torch_eager", "bf16", "#2ca02c"),
]


def load(path):
    steps, evals, summary = [], [], None
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        if "step" not in r:
            summary = r
            continue
        steps.append(r)
        ev = r.get("eval_loss", r.get("heldout_loss"))
        if ev is not None and math.isfinite(ev):
            evals.append((r["step"], ev))
    return steps, evals, summary


def svg(series, tokens_per_step, path):
    w, h, pad = 720, 420, 60
    pts = [(s * tokens_per_step, v) for _, _, e in series for s, v in e]
    if not pts:
        return
    x1 = max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    y0, y1 = math.floor(y0 * 2) / 2, math.ceil(y1 * 2) / 2
    sx = lambda x: pad + (w - 2 * pad) * x / x1
    sy = lambda y: h - pad - (h - 2 * pad) * (y - y0) / max(y1 - y0, 1e-9)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">held-out cross-entropy (nats/token), King James Bible, GPT-2 BPE</text>',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 20}" text-anchor="middle">training tokens</text>']
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{pad - 6}" y="{sy(y) + 4}" text-anchor="end">{y:.2f}</text>')
        x = x1 * i / 4
        out.append(f'<text x="{sx(x)}" y="{h - pad + 16}" text-anchor="middle">{x / 1e6:.2f}M</text>')
    for k, (label, color, e) in enumerate(series):
        if not e:
            continue
        d = " ".join(f"{'M' if j == 0 else 'L'}{sx(s * tokens_per_step):.1f},{sy(v):.1f}" for j, (s, v) in enumerate(e))
        out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{pad + 10}" y="{pad + 16 * k}" fill="{color}">{label}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("out")
    ap.add_argument("--commit", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tps = a.batch * a.seq
    records, series, rows = [], [], []
    for fname, label, backend, dtype, color in RUNS:
        path = os.path.join(a.dir, fname)
        if not os.path.exists(path):
            continue
        steps, evals, _ = load(path)
        if not steps:
            continue
        kernel = "gpt_train" if "gpt" in fname else "model_train"
        # The first step whose loss or gradient norm is not finite (a NaN gradient at a finite loss
        # reaches every weight through the clip and the next loss).
        bad = lambda s: not (math.isfinite(s["loss"]) and math.isfinite(s.get("grad_norm", 0.0)))
        diverged = next((s["step"] for s in steps if bad(s)), None)
        nan_grad = diverged is not None and math.isfinite(next(s for s in steps if s["step"] == diverged)["loss"])
        finite = [s for s in steps if math.isfinite(s["loss"])]
        last = finite[-1] if finite else steps[-1]
        final_step, final = evals[-1] if evals else (0, float("nan"))
        speeds = sorted(s["tokens_per_s"] for s in steps[5:] or steps)
        median_tps = speeds[len(speeds) // 2]
        base = dict(kernel=kernel, backend=backend, case=f"kjv_small_B{a.batch}xN{a.seq}", shape=[a.batch, a.seq, 512],
                    dtype=dtype, target=None, **{"pass": diverged is None}, commit=a.commit, device=a.device)
        metrics = [("steps", steps[-1]["step"], "count"), ("tokens", steps[-1]["step"] * tps, "count"),
                   ("first_train_loss", steps[0]["loss"], "nats"), ("last_finite_train_loss", last["loss"], "nats"),
                   ("median_tokens_per_s", median_tps, "tok/s")]
        if evals:
            metrics += [("heldout_loss", final, "nats"), ("heldout_ppl", math.exp(final), "ppl"), ("heldout_at_step", final_step, "count")]
        if diverged is not None:
            metrics.append(("diverged_at_step", diverged, "count"))
        for metric, value, unit in metrics:
            records.append(dict(base, metric=metric, value=value, unit=unit))
        series.append((label, color, evals))
        ppl = f"{math.exp(final):.2f} (step {final_step})" if evals else "—"
        note = "finished" if diverged is None else (f"NaN gradient at step {diverged} (finite loss), NaN loss after"
                                                    if nan_grad else f"NaN loss at step {diverged}")
        rows.append((label, steps[-1]["step"], steps[-1]["step"] * tps, f"{steps[0]['loss']:.9f}", f"{final:.4f}" if evals else "—", ppl,
                     median_tps, note))
    json.dump({"commit": a.commit, "device": a.device, "records": records}, open(os.path.join(a.out, "report.json"), "w"), indent=1)
    svg(series, tps, os.path.join(a.out, "heldout.svg"))
    md = [f"# `small` on the King James Bible (generated by ci/train_report.py)", "",
          f"Commit {a.commit}, {a.device}. Same GPT-2 BPE tokens (`muse train --export-tokens`), batches (muse's seeded "
          f"offsets), held-out windows, schedule (AdamW 0.9/0.999, wd 0.01, clip 1, warm-up then cosine) and B {a.batch} × "
          f"N {a.seq} for every run. ![held-out loss](heldout.svg)", "",
          "| run | steps | tokens | step-1 loss | last held-out loss | held-out ppl | median tokens/s | outcome |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r[0]} | {r[1]} | {r[2]:,} | {r[3]} | {r[4]} | {r[5]} | {r[6]:,.0f} | {r[7]} |" for r in rows]
    md += ["", "The runs from the same initial weights (`muse model init --config small --seed 0`, read by "
           "`torch_train_bench.py train --init-weights`) start from the same step-1 loss; the runs from PyTorch's own "
           "BENCH init (`torch_model.init_weights`, other distributions) are not the same experiment. Tokens/s of the "
           "PyTorch runs are not KPIs (two of them shared the GPU with another run); the training KPIs are in kpi-cuda."]
    open(os.path.join(a.out, "report.md"), "w").write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
