#!/usr/bin/env python3
"""Writes the numerical-parity fixtures that tinygpt's Rust tests compare against.

For the `head`, `multihead`, `feedforward` and `transformer` configs this builds the same model
with the tutorial's own PyTorch modules (`Head` with key/query/value, `MultiHeadAttention` as a
ModuleList of heads plus `proj`, `FeedForward.net`, `Block` with `sa`/`ffwd`/`ln1`/`ln2`), and
saves to `fixtures/<config>.safetensors`:

    param.<name>   the initial weights (PyTorch names and layouts)
    batch.x/y      one fixed batch of token ids, int64 [4, block_size]
    logits, loss   the forward pass on that batch
    grad.<name>    every parameter's gradient of that loss
    step3.<name>   the weights after 3 AdamW steps on the batch (the config's lr; PyTorch's
                   AdamW defaults: betas 0.9/0.999, eps 1e-8, weight decay 0.01)

Run by hand, not in CI:  pip install torch safetensors && python3 reference/make_fixtures.py
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

VOCAB = 65
BATCH = 4


class Head(nn.Module):
    def __init__(self, n_embd, head_size, block_size):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))

    def forward(self, x):
        _, t, _ = x.shape
        k, q = self.key(x), self.query(x)
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5
        wei = wei.masked_fill(self.tril[:t, :t] == 0, float("-inf"))
        return F.softmax(wei, dim=-1) @ self.value(x)


class MultiHeadAttention(nn.Module):
    def __init__(self, n_embd, n_head, head_size, block_size, projection):
        super().__init__()
        self.heads = nn.ModuleList(
            [Head(n_embd, head_size, block_size) for _ in range(n_head)]
        )
        self.proj = nn.Linear(n_head * head_size, n_embd) if projection else None

    def forward(self, x):
        out = torch.cat([h(x) for h in self.heads], dim=-1)
        return self.proj(out) if self.proj is not None else out


class FeedForward(nn.Module):
    def __init__(self, n_embd, mult, projection):
        super().__init__()
        layers = [nn.Linear(n_embd, mult * n_embd), nn.ReLU()]
        if projection:
            layers.append(nn.Linear(mult * n_embd, n_embd))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.sa = MultiHeadAttention(n_embd, n_head, n_embd // n_head, block_size, True)
        self.ffwd = FeedForward(n_embd, 4, True)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        return x + self.ffwd(self.ln2(x))


class LanguageModel(nn.Module):
    def __init__(self, n_embd, block_size, layers):
        super().__init__()
        self.token_embedding_table = nn.Embedding(VOCAB, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.layers = nn.ModuleList(layers)
        self.lm_head = nn.Linear(n_embd, VOCAB)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.token_embedding_table(idx) + self.position_embedding_table(
            torch.arange(t)
        )
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(x)


def gpt_init(module):
    """gpt.py's `_init_weights`, as transformer.ron's `init: Normal(std: 0.02)`."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def configs():
    c, t = 32, 8
    yield "head", c, t, 1e-3, lambda: [Head(c, 32, t)], False
    yield "multihead", c, t, 1e-3, lambda: [MultiHeadAttention(c, 4, 8, t, False)], False
    yield "feedforward", c, t, 1e-3, lambda: [
        MultiHeadAttention(c, 4, 8, t, False),
        FeedForward(c, 1, False),
    ], False
    yield "transformer", c, t, 1e-3, lambda: [
        Block(c, 4, t),
        Block(c, 4, t),
        Block(c, 4, t),
        nn.LayerNorm(c),
    ], True


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    os.makedirs(out_dir, exist_ok=True)
    for name, n_embd, block_size, lr, layers, gpt_style in configs():
        torch.manual_seed(1337)
        model = LanguageModel(n_embd, block_size, layers())
        if gpt_style:
            model.apply(gpt_init)
        x = torch.randint(VOCAB, (BATCH, block_size))
        y = torch.randint(VOCAB, (BATCH, block_size))
        tensors = {f"param.{k}": v.detach().clone() for k, v in model.named_parameters()}
        tensors["batch.x"], tensors["batch.y"] = x, y

        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, VOCAB), y.view(-1))
        loss.backward()
        tensors["logits"], tensors["loss"] = logits.detach(), loss.detach()
        for k, v in model.named_parameters():
            tensors[f"grad.{k}"] = v.grad.detach().clone()

        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        opt.zero_grad(set_to_none=True)
        for _ in range(3):
            loss = F.cross_entropy(model(x).view(-1, VOCAB), y.view(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for k, v in model.named_parameters():
            tensors[f"step3.{k}"] = v.detach().clone()

        tensors = {k: v.contiguous() for k, v in tensors.items()}
        path = os.path.join(out_dir, f"{name}.safetensors")
        save_file(tensors, path, metadata={"torch": torch.__version__, "lr": str(lr)})
        print(f"{path}: loss {tensors['loss'].item():.6f}, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
