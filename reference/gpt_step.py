#!/usr/bin/env python3
"""Times training steps of gpt.py's model in PyTorch eager, for comparison with `tinygpt bench`.

The model is the one tinygpt's configs build: token + position embedding, n_layer pre-LayerNorm
Blocks (causal multi-head attention with a fused q/k/v projection and an output projection, then
Linear(C, 4C) + ReLU + Linear(4C, C)), a final LayerNorm and lm_head, initialised N(0, 0.02).
A step is forward + backward + AdamW on one fixed random batch, as `tinygpt bench` times it.

    python3 reference/gpt_step.py --device cuda --dtype bf16          # gpt.ron's shape
    python3 reference/gpt_step.py --device cpu --threads 2 --n-layer 4 --n-head 4 --n-embd 128 \
        --block-size 64 --batch-size 12 --dropout 0                    # nanogpt_cpu.ron's
    python3 reference/gpt_step.py --device cpu --threads 2 --bigram --block-size 8 --batch-size 32

`--attention sdpa` writes the attention the way nanoGPT's `model.py` does (one fused projection,
`F.scaled_dot_product_attention(is_causal=True)`), which is what a PyTorch user runs today; the
default is the tutorial's gpt.py (explicit mask, softmax and dropout). The model is the same.

Prints one JSON object (median ms/step, tokens/s). Needs only `pip install torch`.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size, dropout, sdpa=False):
        super().__init__()
        self.n_head = n_head
        self.sdpa = sdpa
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.ffwd = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.ReLU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )
        self.attn_dropout = nn.Dropout(dropout)
        self.proj_dropout = nn.Dropout(dropout)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))

    def attention(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        heads = lambda z: z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)
        if self.sdpa:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )
            return self.proj_dropout(self.proj(y.transpose(1, 2).contiguous().view(b, t, c)))
        w = q @ k.transpose(-2, -1) * (c // self.n_head) ** -0.5
        w = w.masked_fill(self.tril[:t, :t] == 0, float("-inf"))
        w = self.attn_dropout(F.softmax(w, dim=-1))
        y = (w @ v).transpose(1, 2).contiguous().view(b, t, c)
        return self.proj_dropout(self.proj(y))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.ffwd(self.ln2(x))


class Bigram(nn.Module):
    """The tutorial's first model: the logits of the next token are a row of a table."""

    def __init__(self, vocab):
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab, vocab)

    def forward(self, idx, targets):
        logits = self.token_embedding_table(idx)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


class GPT(nn.Module):
    def __init__(self, vocab, n_embd, n_head, n_layer, block_size, dropout, sdpa=False):
        super().__init__()
        self.tok = nn.Embedding(vocab, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(
            *[Block(n_embd, n_head, block_size, dropout, sdpa) for _ in range(n_layer)]
        )
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab)
        self.apply(self._init)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        logits = self.lm_head(self.ln_f(self.blocks(x)))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    p.add_argument("--vocab", type=int, default=65)
    p.add_argument("--n-embd", type=int, default=384)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--bigram", action="store_true", help="time bigram.ron's model instead")
    p.add_argument(
        "--attention",
        choices=["gpt", "sdpa"],
        default="gpt",
        help="gpt.py's explicit attention, or nanoGPT model.py's scaled_dot_product_attention",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the model (warm-up steps compile it)"
    )
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = torch.device(a.device)
    if a.bigram:
        model = Bigram(a.vocab).to(device)
    else:
        model = GPT(
            a.vocab, a.n_embd, a.n_head, a.n_layer, a.block_size, a.dropout, a.attention == "sdpa"
        ).to(device)
    params = sum(p.numel() for p in model.parameters())
    if a.compile:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(a.vocab, (a.batch_size, a.block_size), device=device)
    y = torch.randint(a.vocab, (a.batch_size, a.block_size), device=device)
    amp = {"bf16": torch.bfloat16, "f16": torch.float16}.get(a.dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=a.dtype == "f16")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(a.warmup + a.steps):
        sync()
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sync()
        if i >= a.warmup:
            times.append((time.perf_counter() - started) * 1e3)
    median = statistics.median(times)
    tokens = a.batch_size * a.block_size
    print(
        json.dumps(
            {
                "framework": f"pytorch {torch.__version__} "
                + ("torch.compile" if a.compile else "eager"),
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "dtype": a.dtype,
                "parameters": params,
                "batch_size": a.batch_size,
                "block_size": a.block_size,
                "steps": a.steps,
                "median_ms": median,
                "min_ms": min(times),
                "max_ms": max(times),
                "tokens_per_sec": tokens / (median / 1e3),
            }
        )
    )


if __name__ == "__main__":
    main()
