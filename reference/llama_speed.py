#!/usr/bin/env python3
"""SmolLM2-135M-shaped speed check, without downloading SmolLM2: a random LlamaForCausalLM with
SmolLM2-135M's config (30 layers, 576 wide, 9 query heads sharing 3 key/value heads, SwiGLU
1,536, 49,152 tokens, tied head, bf16) saved to DIR with a small byte-level tokenizer.json (the
fixture's, ids below 400), then timed in transformers: from_pretrained, and greedy generation
of NEW tokens after a prompt of PROMPT tokens, on `torch.set_num_threads(THREADS)`.

    python reference/llama_speed.py DIR [--threads 2] [--prompt 64] [--new 64]
    python reference/llama_speed.py DIR --train-step     # one fine-tuning step, batch 4 x 256

The second times configs/finetune_smollm2.ron's step (forward, backward, AdamW at lr 5e-5,
weight decay 0.1, betas 0.9/0.99) the way `tinygpt bench configs/finetune_smollm2.ron` does:
the median of 3 timed steps after a warm-up.

Compare with `tinygpt generate DIR --stats --temperature 0 --ignore-eos ...`, which reports the
same three times; both sides load from the page cache after the first run.
"""

import argparse
import json
import os
import shutil
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))


def make(directory):
    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0})
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory)
    shutil.copy(os.path.join(HERE, "fixtures/llama/qwen2/tokenizer.json"), directory)


def train_step(model):
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1,
                                  betas=(0.9, 0.99))
    x = torch.randint(3, 400, (4, 256), generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(4):
        started = time.perf_counter()
        model(x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    timed = sorted(times[1:])
    print(json.dumps({"train_step_median_ms": round(timed[1] * 1e3),
                      "timed_ms": [round(t * 1e3) for t in times[1:]],
                      "torch": torch.__version__}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--train-step", action="store_true")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.dir, "config.json")):
        make(args.dir)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.dir, dtype=torch.float32)
    loaded = time.perf_counter() - started
    if args.train_step:
        train_step(model)
        return
    model.eval()
    prompt = torch.randint(3, 400, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=2, min_new_tokens=2, do_sample=False)  # warm up
        started = time.perf_counter()
        model.generate(prompt, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        first = time.perf_counter() - started
        started = time.perf_counter()
        model.generate(prompt, max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False)
        total = time.perf_counter() - started
    print(json.dumps({
        "load_s": round(loaded, 3),
        "prefill_and_first_token_ms": round(first * 1e3, 1),
        "new_tokens": args.new,
        "total_ms": round(total * 1e3, 1),
        "ms_per_token_after_first": round((total - first) * 1e3 / (args.new - 1), 2),
        "tokens_per_s": round(args.new / total, 1),
        "threads": args.threads,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
