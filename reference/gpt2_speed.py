#!/usr/bin/env python3
"""CPU speed of a random GPT-2 small in PyTorch + transformers: the reference that tinygpt's own
GPT-2 timings are compared with.

The model is `GPT2LMHeadModel(GPT2Config())` with HF's defaults (12 layers, 12 heads, width 768,
1024 positions, vocab 50257, gelu_new, head tied to wte) and dropout set to 0, randomly
initialised (torch.manual_seed(0)); the weights do not matter for speed.  Measured, each after
warm-up runs, as the median of `--repeats` timed runs:

  generate     a 64-token random prompt, then 128 new tokens with
               model.generate(do_sample=False, use_cache=True, max_new_tokens=128,
               min_new_tokens=128, pad_token_id=0); reported as new tokens per second
  prefill      one forward pass over a 512-token prompt (batch 1, no grad), in ms
  train_step   batch 4 x block 256: forward with labels, backward, torch.optim.AdamW step,
               zero_grad, in ms
  peak RSS     generation runs in a fresh subprocess (`--only generate`), which reports its own
               resource.getrusage(RUSAGE_SELF).ru_maxrss (KiB on Linux); given in MiB (model
               weights and the torch/transformers import included; VmRSS after the imports and
               after building the model are reported too, so they can be subtracted)

A JSON object goes to stdout (versions, threads, CPU model, results); readable lines to stderr.

Run by hand, not in CI, on an otherwise idle machine:

    pip install torch transformers
    python reference/gpt2_speed.py [--threads 2] [--repeats 5] > gpt2_speed.json
    python reference/gpt2_speed.py --small      # a tiny model, seconds: smoke check only
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

PROMPT = 64
NEW = 128
PREFILL = 512
BATCH, BLOCK = 4, 256


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def rss_now_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def build_model(small):
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    kw = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if small:
        # GPT-2's special 50256 does not exist in a 512-token vocab.
        kw.update(n_layer=2, n_embd=64, n_head=4, vocab_size=512, bos_token_id=None, eos_token_id=None)
    config = GPT2Config(**kw)
    model = GPT2LMHeadModel(config)
    return model, config


def timed(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_generate(model, config, args):
    model.eval()
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, config.vocab_size, (1, PROMPT), generator=gen)

    def run():
        with torch.no_grad():
            out = model.generate(
                prompt,
                do_sample=False,
                use_cache=True,
                max_new_tokens=NEW,
                min_new_tokens=NEW,
                pad_token_id=0,
            )
        assert out.shape == (1, PROMPT + NEW), out.shape

    times = timed(run, args.warmup, args.repeats)
    med = statistics.median(times)
    return {
        "prompt_tokens": PROMPT,
        "new_tokens": NEW,
        "median_s": med,
        "tokens_per_s": NEW / med,
        "all_s": times,
    }


def bench_prefill(model, config, args):
    model.eval()
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, config.vocab_size, (1, PREFILL), generator=gen)

    def run():
        with torch.no_grad():
            model(input_ids=x, use_cache=False)

    times = timed(run, args.warmup, args.repeats)
    return {"tokens": PREFILL, "median_ms": statistics.median(times) * 1e3, "all_ms": [t * 1e3 for t in times]}


def bench_train(model, config, args):
    model.train()  # dropout is 0, so this only matters for HF's bookkeeping
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, config.vocab_size, (BATCH, BLOCK), generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run():
        loss = model(input_ids=x, labels=x, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = timed(run, args.warmup, args.repeats)
    model.eval()
    return {"batch": BATCH, "block": BLOCK, "median_ms": statistics.median(times) * 1e3, "all_ms": [t * 1e3 for t in times]}


def child_generate(args):
    """`--only generate`: generation alone in this (fresh) process, with its peak RSS."""
    import transformers  # noqa: F401  counted in rss_after_import_mib

    imported = rss_now_mib()
    model, config = build_model(args.small)
    loaded = rss_now_mib()
    res = bench_generate(model, config, args)
    res["rss_after_import_mib"] = imported
    res["rss_after_model_mib"] = loaded
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    ap.add_argument("--small", action="store_true", help="a tiny model (2 layers, width 64, vocab 512): smoke check")
    ap.add_argument("--only", choices=["generate"], help=argparse.SUPPRESS)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)

    if args.only == "generate":
        child_generate(args)
        return

    import transformers

    cpu = cpu_model()
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads, cpu: {cpu}")

    # Generation (and its peak RSS) in a fresh process, so that nothing else here inflates it.
    cmd = [sys.executable, os.path.abspath(__file__), "--only", "generate",
           "--threads", str(args.threads), "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    if args.small:
        cmd.append("--small")
    log("generate (subprocess) ...")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, text=True)
    generate = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"  generate: {generate['tokens_per_s']:.1f} new tokens/s "
        f"({NEW} after a {PROMPT}-token prompt, median {generate['median_s']:.3f} s), "
        f"peak RSS {generate['peak_rss_mib']:.0f} MiB (after imports {generate['rss_after_import_mib']:.0f} MiB, "
        f"model loaded {generate['rss_after_model_mib']:.0f} MiB)")

    model, config = build_model(args.small)
    num_params = sum(p.numel() for p in model.parameters())
    log(f"model: {config.n_layer} layers, {config.n_head} heads, width {config.n_embd}, "
        f"vocab {config.vocab_size}, {num_params} parameters, attention {config._attn_implementation}")

    log("prefill ...")
    prefill = bench_prefill(model, config, args)
    log(f"  prefill: {prefill['median_ms']:.1f} ms for {PREFILL} tokens")
    log("train step ...")
    train = bench_train(model, config, args)
    log(f"  train step: {train['median_ms']:.1f} ms (batch {BATCH} x block {BLOCK}, AdamW)")

    print(json.dumps({
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": args.threads,
        "cpu": cpu,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "small": args.small,
        "model": {
            "n_layer": config.n_layer,
            "n_head": config.n_head,
            "n_embd": config.n_embd,
            "n_positions": config.n_positions,
            "vocab_size": config.vocab_size,
            "num_params": num_params,
            "attn_implementation": config._attn_implementation,
        },
        "generate": {k: generate[k] for k in ("prompt_tokens", "new_tokens", "median_s", "tokens_per_s", "all_s")},
        "generate_peak_rss_mib": generate["peak_rss_mib"],
        "generate_rss_after_import_mib": generate["rss_after_import_mib"],
        "generate_rss_after_model_mib": generate["rss_after_model_mib"],
        "prefill": prefill,
        "train_step": train,
    }, indent=1))


if __name__ == "__main__":
    main()
