#!/usr/bin/env python3
"""Times training steps of `configs/speedrun_cpu.ron`'s model in PyTorch, eager and
torch.compile, for comparison with `tinygpt bench configs/speedrun_cpu.ron`.

The model is the one the config builds: a token embedding (no position table), a weightless
RMSNorm, n_layer speedrun blocks (weightless RMSNorm; causal attention with a fused q/k/v
projection, RMSNorm of each query and key head with a learned weight, rotary embeddings, SDPA,
a zero-initialised output projection; weightless RMSNorm; Linear(C, 4C) + ReLU² + a
zero-initialised Linear(4C, C); no biases), a final weightless RMSNorm, an untied zero-initialised
head and tanh soft-capping of the logits, dropout 0.1 where tinygpt has it (attention weights,
after the attention's and the MLP's output projections); before every layer of that stack x = a·x + b·x0 with
learned (a, b). A step is forward + backward + the optimizers on one fixed random batch, as
`tinygpt bench` times it: `torch.optim.Muon` (Nesterov, 5 Newton-Schulz steps, the reference's
shape scaling) for the blocks' matrices and AdamW for the rest.

    python3 reference/speedrun_step.py --threads 2 --compile

Prints one JSON object per mode (median ms/step, tokens/s). Needs only `pip install torch`
(2.9 or newer, for torch.optim.Muon).
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def rope_tables(head_size, block_size, theta=10000.0):
    inv = 1.0 / theta ** (torch.arange(0, head_size, 2).float() / head_size)
    freqs = torch.outer(torch.arange(block_size).float(), inv)
    return freqs.cos(), freqs.sin()


def rotate(x, cos, sin):
    # Llama's rotate_half convention, as tinygpt's RoPE.
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos = torch.cat([cos, cos], dim=-1)
    sin = torch.cat([sin, sin], dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size, dropout):
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        head = n_embd // n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd, bias=False)
        self.q_norm = nn.RMSNorm(head, eps=1e-5)
        self.k_norm = nn.RMSNorm(head, eps=1e-5)
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.down = nn.Linear(4 * n_embd, n_embd, bias=False)
        cos, sin = rope_tables(head, block_size)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)
        for w in (self.qkv.weight, self.fc.weight):
            nn.init.normal_(w, std=0.02)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.down.weight)

    def forward(self, x):
        b, t, c = x.shape
        h = F.rms_norm(x, (c,), eps=1e-5)
        q, k, v = self.qkv(h).split(c, dim=2)
        heads = lambda z: z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)
        cos, sin = self.cos[:t], self.sin[:t]
        q, k = rotate(self.q_norm(q), cos, sin), rotate(self.k_norm(k), cos, sin)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + F.dropout(self.proj(y.transpose(1, 2).contiguous().view(b, t, c)), p)
        h = F.rms_norm(x, (c,), eps=1e-5)
        return x + F.dropout(self.down(F.relu(self.fc(h)).square()), p)


class Speedrun(nn.Module):
    def __init__(self, vocab, n_embd, n_head, n_layer, block_size, softcap, dropout):
        super().__init__()
        self.embed = nn.Embedding(vocab, n_embd)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList([Block(n_embd, n_head, block_size, dropout) for _ in range(n_layer)])
        self.mix = nn.Parameter(torch.tensor([[1.0, 0.0]] * (n_layer + 2)))
        self.head = nn.Linear(n_embd, vocab, bias=False)
        nn.init.zeros_(self.head.weight)
        self.softcap = softcap

    def forward(self, idx, targets):
        x0 = self.embed(idx)
        c = x0.shape[-1]
        x = x0
        # The layer stack: RmsNorm, the blocks, RmsNorm, each after its x0 mix.
        layers = [lambda z: F.rms_norm(z, (c,), eps=1e-5)] + list(self.blocks)
        layers.append(lambda z: F.rms_norm(z, (c,), eps=1e-5))
        for i, layer in enumerate(layers):
            x = layer(self.mix[i, 0] * x + self.mix[i, 1] * x0)
        logits = self.head(x)
        logits = self.softcap * torch.tanh(logits / self.softcap)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--softcap", type=float, default=15.0)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--adam-lr", type=float, default=0.008)
    ap.add_argument("--muon-lr", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    modes = ["eager"] + (["compile"] if args.compile else [])
    for mode in modes:
        torch.manual_seed(0)
        model = Speedrun(args.vocab, args.n_embd, args.n_head, args.n_layer, args.block_size,
                         args.softcap, args.dropout)
        hidden = [p for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2]
        rest = [p for n, p in model.named_parameters() if not (n.startswith("blocks.") and p.dim() == 2)]
        muon = torch.optim.Muon(hidden, lr=args.muon_lr, weight_decay=0.0, momentum=0.95)
        adamw = torch.optim.AdamW(rest, lr=args.adam_lr, betas=(0.8, 0.95), eps=1e-10,
                                  weight_decay=0.0)
        step_model = torch.compile(model) if mode == "compile" else model
        shape = (args.batch_size, args.block_size)
        x = torch.randint(args.vocab, shape)
        y = torch.randint(args.vocab, shape)
        times = []
        for i in range(args.warmup + args.steps):
            started = time.perf_counter()
            loss = step_model(x, y)
            loss.backward()
            muon.step()
            adamw.step()
            muon.zero_grad(set_to_none=True)
            adamw.zero_grad(set_to_none=True)
            took = time.perf_counter() - started
            if i >= args.warmup:
                times.append(took)
        median = statistics.median(times)
        print(json.dumps({
            "mode": mode,
            "torch": torch.__version__,
            "threads": args.threads,
            "params": sum(p.numel() for p in model.parameters()),
            "median_ms": median * 1e3,
            "tokens_per_s": args.batch_size * args.block_size / median,
        }))


if __name__ == "__main__":
    main()
