#!/usr/bin/env python3
"""nanoGPT's README CPU recipe in PyTorch, under a time budget, to compare with tinygpt's
`configs/speedrun_cpu.ron` on the same machine.

The model is nanoGPT's `model.py` (Karpathy, MIT): pre-LayerNorm blocks without biases, GELU MLPs,
causal attention through `F.scaled_dot_product_attention`, a head tied to the token embedding,
GPT-2's init (N(0, 0.02), residual projections / sqrt(2 n_layer)). The training is its `train.py`
with the README's CPU command (`config/train_shakespeare_char.py --device=cpu --compile=False
--eval_iters=20 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
--dropout=0.0`): AdamW (betas 0.9, 0.99; weight decay 0.1 on matrices; fused off), linear warmup
over 100 steps then cosine to lr/10, gradients clipped to 1.0, random windows of the 90% training
split, `torch.manual_seed(1337)`.

Its step count is what makes it fill the budget: it times `--calibrate` steps first (thrown away),
sets max_iters = lr_decay_iters = budget / step time, and trains from a fresh seed, so the cosine
ends as the budget does. Every `--eval-interval` steps it records nanoGPT's `estimate_loss` (20
batches per split) with the training seconds and wall-clock seconds so far; at the end, the loss
over every non-overlapping window of the validation split, as tinygpt's `val_loss_full`.

    python3 reference/nanogpt_budget.py --budget 600 --threads 2 --out runs/nanogpt-torch.json

Needs only `pip install torch`.
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.n_head = n_head

    def forward(self, x):
        b, t, c = x.size()
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=False)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd, bias=False)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList([Block(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, bias=False)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        t = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/tinyshakespeare/input.txt")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds of training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibrate", type=int, default=60, help="steps timed to set max_iters")
    ap.add_argument("--eval-interval", type=int, default=250)
    ap.add_argument("--eval-iters", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--out", help="write the curve and the result here as JSON")
    ap.add_argument(
        "--run-dir",
        help="also write the curve as a tinygpt metrics.csv here, for `tinygpt plot --x seconds`",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    # nanoGPT's shakespeare_char/prepare.py: sorted characters, the first 90% trains.
    text = open(args.data, encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]
    block_size, batch_size = 64, 12
    lr, min_lr, warmup = 1e-3, 1e-4, 100

    def get_batch(split):
        d = train_data if split == "train" else val_data
        ix = torch.randint(len(d) - block_size, (batch_size,))
        x = torch.stack([d[i : i + block_size] for i in ix])
        y = torch.stack([d[i + 1 : i + 1 + block_size] for i in ix])
        return x, y

    def build():
        torch.manual_seed(args.seed)
        model = GPT(len(chars), block_size, n_layer=4, n_head=4, n_embd=128)
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return model, torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))

    def get_lr(it, max_iters):
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > max_iters:
            return min_lr
        ratio = (it - warmup) / (max_iters - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    def train_step(model, optimizer, it, max_iters):
        for group in optimizer.param_groups:
            group["lr"] = get_lr(it, max_iters)
        x, y = get_batch("train")
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    @torch.no_grad()
    def estimate_loss(model):
        model.eval()
        out = {}
        for split in ("train", "val"):
            losses = torch.zeros(args.eval_iters)
            for k in range(args.eval_iters):
                losses[k] = model(*get_batch(split)).item()
            out[split] = losses.mean().item()
        model.train()
        return out

    @torch.no_grad()
    def val_loss_full(model):
        model.eval()
        windows = (len(val_data) - 1) // block_size
        total = 0.0
        for first in range(0, windows, batch_size):
            rows = min(batch_size, windows - first)
            start = first * block_size
            x = val_data[start : start + rows * block_size].view(rows, block_size)
            y = val_data[start + 1 : start + 1 + rows * block_size].view(rows, block_size)
            total += model(x, y).item() * rows
        return total / windows

    # Calibration: the step time at this size, on this machine, with these threads.
    model, optimizer = build()
    for it in range(5):
        train_step(model, optimizer, it, 10**9)
    started = time.perf_counter()
    for it in range(args.calibrate):
        train_step(model, optimizer, it, 10**9)
    step_s = (time.perf_counter() - started) / args.calibrate
    max_iters = max(warmup + 1, int(args.budget / step_s))

    model, optimizer = build()
    wall0 = time.perf_counter()
    trained = 0.0
    curve = []
    it = 0
    while True:
        if it % args.eval_interval == 0 or it == max_iters:
            est = estimate_loss(model)
            curve.append(
                {
                    "step": it,
                    "train_s": trained,
                    "wall_s": time.perf_counter() - wall0,
                    "train": est["train"],
                    "val": est["val"],
                }
            )
            print(f"step {it}: train {est['train']:.4f} val {est['val']:.4f} ({trained:.1f}s)")
        if it == max_iters:
            break
        t0 = time.perf_counter()
        train_step(model, optimizer, it, max_iters)
        trained += time.perf_counter() - t0
        it += 1
    full = val_loss_full(model)
    result = {
        "recipe": "nanoGPT README CPU (PyTorch eager)",
        "torch": torch.__version__,
        "threads": args.threads,
        "budget_s": args.budget,
        "calibrated_step_ms": step_s * 1e3,
        "max_iters": max_iters,
        "train_time_s": trained,
        "wall_time_s": time.perf_counter() - wall0,
        "val_loss_full": full,
        "curve": curve,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    if args.run_dir:
        os.makedirs(args.run_dir, exist_ok=True)
        tokens = block_size * batch_size
        with open(os.path.join(args.run_dir, "metrics.csv"), "w") as f:
            f.write("step,train_loss,val_loss,lr,tokens_per_sec,elapsed_s\n")
            for row in curve:
                rate = row["step"] * tokens / row["train_s"] if row["train_s"] > 0 else 0.0
                lr_now = get_lr(row["step"], max_iters)
                f.write(f"{row['step']},{row['train']},{row['val']},{lr_now},{rate},{row['wall_s']}\n")


if __name__ == "__main__":
    main()
