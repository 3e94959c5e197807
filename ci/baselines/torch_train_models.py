"""The models torch_train_bench.py trains beside the repo's Phase 8 model (torch_model.py): a
GPT-style transformer of the same D, L and heads (pre-LN, learned positions, causal SDPA, GELU MLP
4D, tied embedding), and a PyTorch port of muse's memory-optimised model (reference/src/memopt,
design model.md §4: HTT embedding, AR-SSM, low-rank FFN, low-rank head) for the VRAM study, with
both study models' exact parameter counts (study_counts)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import torch_model as tm
from torch_vram import Baseline

STUDY = dict(vocab=10000, d=512, layers=6, heads=8, ffn=2048, r=16, rank=32)  # design §6.3
TINY_STUDY = dict(vocab=1000, d=64, layers=2, heads=2, ffn=256, r=4, rank=8)


class GPTBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.ln1, self.ln2 = heads, nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, n, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    """GPT-2-style: learned positions, L pre-LN blocks, final LN, head tied to the embedding."""

    def __init__(self, vocab, d, layers, heads, n_pos):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(n_pos, d)
        self.blocks = nn.ModuleList(GPTBlock(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        for name, p in self.named_parameters():  # GPT-2's init: N(0, 0.02), residual outputs / sqrt(2L)
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                nn.init.normal_(p, std=0.02 / (math.sqrt(2 * layers) if name.endswith(("proj.weight", "out.weight")) else 1))

    def forward(self, ids, ckpt=False):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for b in self.blocks:
            x = checkpoint(b, x, use_reentrant=False) if ckpt else b(x)
        return F.linear(self.ln_f(x), self.wte.weight)


def gpt_count(cfg):
    v, d, n = cfg["vocab_size"], cfg["d_model"], cfg["n_seq"]
    return v * d + n * d + cfg["n_layers"] * (12 * d * d + 13 * d) + 2 * d


def gpt(cfg, device, seed=0):
    torch.manual_seed(seed)
    m = GPT(cfg["vocab_size"], cfg["d_model"], cfg["n_layers"], cfg["num_heads"], cfg["n_seq"]).to(device)
    assert sum(p.numel() for p in m.parameters()) == gpt_count(cfg)
    return m.forward, list(m.parameters())


class HTT(nn.Module):
    """HTT embedding, BENCH/VRAM form: E[t, a·d2 + c] = Σ_ρ cos θ_ρ core1[i1, ρ, a] core2[i2, ρ, c]."""

    def __init__(self, vocab, d, r):
        super().__init__()
        self.v1, self.v2, d1, d2 = tm.factors(vocab, d)
        self.d = d
        self.core1 = nn.Parameter(torch.randn(self.v1, 1, r, d1) * 0.02)
        self.core2 = nn.Parameter(torch.randn(self.v2, r, 1, d2) * 0.02)
        self.phase_shift = nn.Parameter(torch.randn(r) * 0.1)

    def forward(self, ids):
        c1 = self.core1[:, 0] * torch.cos(self.phase_shift).view(1, -1, 1)
        i1, i2 = torch.clamp(ids // self.v2, 0, self.v1 - 1), ids % self.v2
        return torch.einsum("blrd,blrf->bldf", c1[i1], self.core2[:, :, 0][i2]).reshape(*ids.shape, -1)[..., : self.d]


class ARSSM(nn.Module):
    """y = T(x) + W_o(vg ⊙ cumsum(ug)) + b_o, g = σ(W2 ReLU(W1 x)), ug = U(x) ⊙ g, vg = V(x) ⊙ g."""

    def __init__(self, d, rank, causal):
        super().__init__()
        g = max(d // 4, 4)
        self.causal = causal
        self.complexity_gate = nn.Sequential(nn.Linear(d, g), nn.ReLU(), nn.Linear(g, rank), nn.Sigmoid())
        self.U_proj, self.V_proj = nn.Linear(d, rank, bias=False), nn.Linear(d, rank, bias=False)
        self.output_proj = nn.Linear(rank, d)
        self.T_conv = nn.Conv1d(d, d, 3, groups=d, bias=False)  # last: the reference's order
        for m in (self.complexity_gate[0], self.complexity_gate[2], self.output_proj):  # VRAM-tree init
            nn.init.xavier_uniform_(m.weight), nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.U_proj.weight, gain=0.02), nn.init.xavier_uniform_(self.V_proj.weight, gain=0.02)
        nn.init.normal_(self.T_conv.weight, std=0.02)

    def forward(self, x):
        xt = x.transpose(1, 2)  # taps on n-2, n-1, n (causal) or the original's n-1, n, n+1
        t = self.T_conv(F.pad(xt, (2, 0)) if self.causal else F.pad(xt, (1, 1))).transpose(1, 2)
        g = self.complexity_gate(x)
        k = torch.cumsum(self.U_proj(x) * g, dim=1)
        return t + self.output_proj(k * (self.V_proj(x) * g))


class MemOptBlock(nn.Module):
    def __init__(self, d, rank, f, causal):
        super().__init__()
        self.ln1, self.ln2, self.ar_ssm = nn.LayerNorm(d), nn.LayerNorm(d), ARSSM(d, rank, causal)
        self.ffn = nn.Module()  # LowRankFFN_p1: (Linear, ReLU, Dropout 0.1) x 3, Linear
        self.ffn.net = nn.Sequential(nn.Linear(d, f), nn.ReLU(), nn.Dropout(0.1), nn.Linear(f, 4 * d), nn.ReLU(),
                                     nn.Dropout(0.1), nn.Linear(4 * d, f), nn.ReLU(), nn.Dropout(0.1), nn.Linear(f, d))
        for m in self.ffn.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, gain=0.02), nn.init.zeros_(m.bias)

    def forward(self, x, ckpt):
        halves = (lambda x: x + self.ar_ssm(self.ln1(x)), lambda x: x + self.ffn.net(self.ln2(x)))
        for h in halves:  # the original checkpoints each half-block, in training only
            x = checkpoint(h, x, use_reentrant=False) if ckpt and self.training else h(x)
        return x


class MemOpt(nn.Module):
    """reference/src/memopt: HTT (no positions) -> L x [x += AR-SSM(LN1 x); x += FFN(LN2 x)] ->
    final LN -> output_up(output_down(.)). Parameters in the reference's for_each_param order."""

    def __init__(self, vocab, d, layers, r=16, rank=32, causal=True, ckpt=True, f=None, o=None, **_):
        super().__init__()
        f, o = f or max(d // 16, 64), o or max(d // 8, 128)  # default: the VRAM tree's ffn_rank and head rank
        self.ckpt, self.embedding = ckpt, HTT(vocab, d, r)
        self.blocks = nn.ModuleList(MemOptBlock(d, rank, f, causal) for _ in range(layers))
        self.final_norm, self.output_down, self.output_up = nn.LayerNorm(d), nn.Linear(d, o), nn.Linear(o, vocab)
        for m in (self.output_down, self.output_up):
            nn.init.xavier_uniform_(m.weight, gain=0.02), nn.init.zeros_(m.bias)

    def forward(self, ids):
        x = self.embedding(ids)
        for b in self.blocks:
            x = b(x, self.ckpt)
        return self.output_up(self.output_down(self.final_norm(x)))


def study_counts():
    """Both §6.3 models at the study's shapes, built on the meta device: their exact counts."""
    with torch.device("meta"):
        n_base = sum(p.numel() for p in Baseline(**{k: STUDY[k] for k in ("vocab", "d", "layers", "heads", "ffn")}).parameters())
        n_opt = sum(p.numel() for p in MemOpt(**STUDY).parameters())
    assert (n_base, n_opt) == (29_164_304, 4_150_752), (n_base, n_opt)
