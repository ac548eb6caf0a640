#!/usr/bin/env python3
"""Trains the tutorial's ladder stages in PyTorch, the tutorial's way, to compare with tinygpt.

Each stage is the PyTorch twin of `configs/<stage>.ron` (the modules of make_fixtures.py, the
same sizes and training hyperparameters): `torch.manual_seed(seed)`, then the model, AdamW with
PyTorch's defaults at the config's learning rate, random batches as gpt.py's `get_batch`, and
gpt.py's `estimate_loss` (eval_iters random batches per split) at the end of training. It also
reports the exact validation loss: the mean over every non-overlapping block_size window of the
validation split, which tinygpt reports as `val_loss_full` — the number without sampling noise.

    python3 reference/train_ladder.py bigram --seeds 1 2 3 4 5 --threads 2

Prints one JSON line per seed. Needs only `pip install torch`.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import (  # noqa: E402  the tutorial's modules
    Block,
    FeedForward,
    Head,
    LanguageModel,
    MultiHeadAttention,
    gpt_init,
)


class Bigram(nn.Module):
    """bigram.py's model: the token embedding is the table of next-token logits."""

    def __init__(self, vocab):
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab, vocab)

    def forward(self, idx):
        return self.token_embedding_table(idx)


# stage -> (model factory(vocab), block_size, batch_size, max_iters, learning_rate, eval_iters)
def stages():
    c, t = 32, 8
    tiny = dict(block_size=t, batch_size=32, max_iters=5000, lr=1e-3, eval_iters=200)
    return {
        "bigram": (lambda v: Bigram(v), dict(tiny, max_iters=10000, lr=1e-2)),
        "head": (lambda v: LanguageModel(c, t, [Head(c, 32, t)]), tiny),
        "multihead": (
            lambda v: LanguageModel(c, t, [MultiHeadAttention(c, 4, 8, t, False)]),
            tiny,
        ),
        "feedforward": (
            lambda v: LanguageModel(
                c, t, [MultiHeadAttention(c, 4, 8, t, False), FeedForward(c, 1, False)]
            ),
            tiny,
        ),
        "transformer": (
            lambda v: gpt(LanguageModel(c, t, [Block(c, 4, t) for _ in range(3)] + [nn.LayerNorm(c)])),
            tiny,
        ),
        "nanogpt_cpu": (
            lambda v: gpt(
                LanguageModel(128, 64, [Block(128, 4, 64) for _ in range(4)] + [nn.LayerNorm(128)])
            ),
            dict(block_size=64, batch_size=12, max_iters=2000, lr=1e-3, eval_iters=20),
        ),
    }


def gpt(model):
    model.apply(gpt_init)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=sorted(stages()))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-iters", type=int, help="override the stage's training steps")
    parser.add_argument(
        "--corpus",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                             "tinyshakespeare", "input.txt"),
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    text = open(args.corpus, encoding="utf-8").read()
    chars = sorted(set(text))
    index = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    n = int(0.9 * len(data))
    splits = {"train": data[:n], "val": data[n:]}

    factory, h = stages()[args.stage]
    if args.max_iters is not None:
        h = dict(h, max_iters=args.max_iters)
    t, b = h["block_size"], h["batch_size"]

    def get_batch(split):
        d = splits[split]
        ix = torch.randint(len(d) - t, (b,))
        return torch.stack([d[i : i + t] for i in ix]), torch.stack([d[i + 1 : i + t + 1] for i in ix])

    def loss_of(model, x, y):
        logits = model(x)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))

    @torch.no_grad()
    def estimate_loss(model):
        model.eval()
        out = {}
        for split in ("train", "val"):
            out[split] = sum(loss_of(model, *get_batch(split)).item() for _ in range(h["eval_iters"]))
            out[split] /= h["eval_iters"]
        model.train()
        return out

    @torch.no_grad()
    def full_val_loss(model):
        model.eval()
        d = splits["val"]
        windows = (len(d) - 1) // t
        x = d[: windows * t].view(windows, t)
        y = d[1 : windows * t + 1].view(windows, t)
        total = 0.0
        for i in range(0, windows, 256):
            logits = model(x[i : i + 256])
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y[i : i + 256].reshape(-1), reduction="sum"
            ).item()
        model.train()
        return total / (windows * t)

    for seed in args.seeds:
        torch.manual_seed(seed)
        model = factory(len(chars))
        optimizer = torch.optim.AdamW(model.parameters(), lr=h["lr"])
        started = time.perf_counter()
        for _ in range(h["max_iters"]):
            loss = loss_of(model, *get_batch("train"))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        losses = estimate_loss(model)
        print(
            json.dumps(
                {
                    "stage": args.stage,
                    "seed": seed,
                    "steps": h["max_iters"],
                    "train_loss": round(losses["train"], 4),
                    "val_loss": round(losses["val"], 4),
                    "val_loss_full": round(full_val_loss(model), 4),
                    "wall_s": round(time.perf_counter() - started, 1),
                    "torch": torch.__version__,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
