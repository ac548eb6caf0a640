#!/usr/bin/env python3
"""Writes the GPT-2 parity fixtures that tinygpt's Rust tests compare against.

Two things are checked against Hugging Face's own implementations:

1. The GPT-2 byte-level BPE tokenizer.  `fixtures/gpt2_tokens.json` holds about a dozen texts
   (written for this file: ASCII, accents, CJK, multi-codepoint emoji, CR/LF and blank lines,
   runs of spaces and tabs, very long words, contractions, digits, `<|endoftext|>` inside a text,
   the empty string) with the ids that `tokenizers.ByteLevelBPETokenizer` gives when built from
   the *local* GPT-2 files that tiktoken-rs ships (`encoder.json`, `vocab.bpe`), with
   `<|endoftext|>` registered as the special token 50256.  Every text is cross-checked against
   `transformers.GPT2TokenizerFast` built from the same files (identical ids, and decode(ids)
   gives the text back).

       {"texts": [{"text": "...", "ids": [...]}, ...]}

2. The GPT-2 model (`GPT2LMHeadModel`).  A tiny random GPT-2 (vocab 512, 64 positions, width 32,
   2 layers, 4 heads, gelu_new, no dropout, LayerNorm eps 1e-5, head tied to `wte`) is saved with
   `save_pretrained(safe_serialization=True)` to `fixtures/gpt2_tiny/` (config.json +
   model.safetensors).  HF initialises every bias to 0 and every LayerNorm to 1/0, which would
   let a wrong bias or LayerNorm mapping pass unnoticed, so those are overwritten with random
   values; the weights use initializer_range 0.3 (HF's default is 0.02) so that the logits
   spread enough for a wrong mapping, and for greedy decoding to have clear winners.
   `fixtures/gpt2_tiny_expected.json` holds:

       "inputs"      two sequences of token ids (lengths 16 and 11)
       "logits"      per input, the model's logits [T][512] (float32 values as JSON numbers)
       "loss"        per input, HF's loss with labels=input_ids (mean next-token cross-entropy)
       "greedy"      {"prompt": 5 ids, "tokens": the 30 new ids of greedy generate()}; the prompt
                     is the first random one whose continuation has >= 8 distinct tokens and
                     a top-1/top-2 logit gap >= 0.05 at every step
                     (checked identical with use_cache=True and use_cache=False)
       "num_params"  number of unique parameters (the tied head counted once)

Everything is deterministic (torch.manual_seed(0) and fixed generators).

Run by hand, not in CI:

    pip install torch transformers safetensors tokenizers
    python reference/make_gpt2_fixtures.py [--assets DIR]

`--assets` is the folder holding GPT-2's `encoder.json` and `vocab.bpe`; by default the
tiktoken-rs 0.12.1 crate's `assets/` folder in the cargo registry
(`~/.cargo/registry/src/*/tiktoken-rs-0.12.1/assets`).  Nothing is downloaded.
"""
import argparse
import glob
import json
import os
import random
import shutil

import torch

EOT = "<|endoftext|>"
EOT_ID = 50256
GPT2_VOCAB = 50257

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "fixtures")


def find_assets(arg):
    if arg:
        return arg
    pattern = os.path.expanduser("~/.cargo/registry/src/*/tiktoken-rs-0.12.1/assets")
    hits = sorted(glob.glob(pattern))
    if not hits:
        raise SystemExit(f"no GPT-2 assets at {pattern}; pass --assets DIR")
    return hits[0]


def texts():
    # A 60-letter run with no real words in it, fixed by its seed.
    rng = random.Random(20240601)
    letters = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(60))
    return [
        "The little robot counted seven blue pebbles before the tide came back in.",
        "We met at a café in Zürich; the naïve barista spelled my name Renée, then Zoë.",
        "東京の図書館で本を読みました。我们明天去公园散步。서울은 비가 와요.",
        "Family: 👩‍👩‍👧 flags: 🇫🇷🇯🇵 thumbs: 👍🏽 and a plain ✨ star.",
        "first line\nsecond line\n\n\nafter two blank lines\r\nwindows line\r\n\r\nend\n",
        "gaps:  two   three    four\tone tab\t\ttwo tabs \t mixed   \n    indented\n",
        f"pneumonoultramicroscopicsilicovolcanoconiosis and {letters} together",
        "I don't think we've met; I'll say it's they're fine, you'd agree, she's here.",
        "Numbers 12345 3.14159 and 2024-06-01, 1,000,000 or 0.5e-3 plus 007.",
        f"The first story ends here.{EOT}A second one starts. Spaced {EOT} and at the end{EOT}",
        " leading space, trailing space ",
        "",
    ]


def tokenizer_fixture(assets):
    from tokenizers import ByteLevelBPETokenizer
    import transformers
    from transformers import GPT2TokenizerFast

    vocab = os.path.join(assets, "encoder.json")
    merges = os.path.join(assets, "vocab.bpe")

    tok = ByteLevelBPETokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens([EOT])
    assert tok.token_to_id(EOT) == EOT_ID, tok.token_to_id(EOT)
    assert tok.get_vocab_size() == GPT2_VOCAB, tok.get_vocab_size()

    # transformers 5 takes the paths as `vocab`/`merges`; given `vocab_file`/`merges_file` it
    # silently builds an empty tokenizer.  transformers 4 takes `vocab_file`/`merges_file`.
    if int(transformers.__version__.split(".")[0]) >= 5:
        hf = GPT2TokenizerFast(vocab=vocab, merges=merges)
    else:
        hf = GPT2TokenizerFast(vocab_file=vocab, merges_file=merges)
    assert len(hf) == GPT2_VOCAB, len(hf)
    assert hf.convert_tokens_to_ids(EOT) == EOT_ID

    out = []
    for text in texts():
        ids = tok.encode(text).ids
        assert all(0 <= i < GPT2_VOCAB for i in ids)
        hf_ids = hf.encode(text, add_special_tokens=False)
        assert ids == hf_ids, (text, ids, hf_ids)
        assert tok.decode(ids, skip_special_tokens=False) == text, (text, ids)
        assert hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) == text, text
        assert ids.count(EOT_ID) == text.count(EOT), (text, ids)
        out.append({"text": text, "ids": ids})
        print(f"  {len(ids):3d} ids  {text[:50]!r}")
    path = os.path.join(OUT_DIR, "gpt2_tokens.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"texts": out}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return path


def model_fixture():
    from safetensors import safe_open
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=512,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        initializer_range=0.3,
        # GPT-2's 50256 does not exist in a 512-token vocab.
        bos_token_id=None,
        eos_token_id=None,
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.1)
            elif ".ln_" in name or name.startswith("transformer.ln_f"):
                assert name.endswith(".weight"), name
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "head not tied"
    model.eval()

    num_params = sum(p.numel() for p in model.parameters())  # parameters() yields tied ones once
    print(f"  parameters: {num_params}")

    model_dir = os.path.join(OUT_DIR, "gpt2_tiny")
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    model.save_pretrained(model_dir, safe_serialization=True)
    for name in os.listdir(model_dir):
        if name not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(model_dir, name))
    with safe_open(os.path.join(model_dir, "model.safetensors"), framework="pt") as f:
        keys = sorted(f.keys())
        print("  model.safetensors keys:")
        for k in keys:
            t = f.get_slice(k)
            print(f"    {k}  {t.get_dtype()} {t.get_shape()}")

    gen = torch.Generator().manual_seed(1234)
    inputs = [torch.randint(0, 512, (n,), generator=gen).tolist() for n in (16, 11)]
    logits, losses = [], []
    with torch.no_grad():
        for ids in inputs:
            x = torch.tensor([ids])
            out = model(input_ids=x, labels=x)
            logits.append(out.logits[0].float().tolist())
            losses.append(float(out.loss))
    print(f"  losses: {losses}")

    # The first random prompt whose greedy continuation is varied (at least 8 distinct tokens,
    # so that a broken KV cache or position shows) and never close to a tie (top-1 beats top-2
    # by at least 0.05 at every step, so that float differences cannot flip an argmax).
    common = dict(do_sample=False, max_new_tokens=30, pad_token_id=0)
    with torch.no_grad():
        for attempt in range(200):
            prompt = torch.randint(0, 512, (5,), generator=gen).tolist()
            cached = model.generate(torch.tensor([prompt]), use_cache=True, **common)[0, 5:].tolist()
            assert len(cached) == 30, cached
            lg = model(input_ids=torch.tensor([prompt + cached])).logits[0, 4:-1]
            assert lg.argmax(-1).tolist() == cached
            top2 = lg.topk(2, dim=-1).values
            margin = float((top2[:, 0] - top2[:, 1]).min())
            if margin >= 0.05 and len(set(cached)) >= 8:
                break
        else:
            raise SystemExit("no prompt with a clear, varied greedy continuation")
        uncached = model.generate(torch.tensor([prompt]), use_cache=False, **common)[0, 5:].tolist()
        assert cached == uncached, (cached, uncached)
    print(f"  prompt candidate {attempt}")
    print(f"  greedy: {prompt} -> {cached}  (smallest top-1/top-2 gap {margin:.4f})")
    print(f"  logit std: {torch.tensor(logits[0]).std():.4f}")

    path = os.path.join(OUT_DIR, "gpt2_tiny_expected.json")
    with open(path, "w") as f:
        json.dump(
            {
                "inputs": inputs,
                "logits": logits,
                "loss": losses,
                "greedy": {"prompt": prompt, "tokens": cached},
                "num_params": num_params,
            },
            f,
            separators=(",", ":"),
        )
        f.write("\n")
    return [os.path.join(model_dir, "config.json"), os.path.join(model_dir, "model.safetensors"), path]


def random_gpt2_small(out_dir):
    """A random model of GPT-2 small's shape (GPT2Config() defaults, 124,439,808 parameters),
    saved as the hub's `gpt2` is: a stand-in for the real weights on machines that cannot
    download them. Costs the same to run; says nothing sensible."""
    import transformers

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    model.save_pretrained(out_dir, safe_serialization=True)
    extra = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(extra):
        os.remove(extra)
    n = sum(p.numel() for p in model.parameters())
    print(f"random GPT-2 small ({n:,} parameters) -> {out_dir}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", help="folder with GPT-2's encoder.json and vocab.bpe")
    ap.add_argument(
        "--gpt2-small",
        metavar="DIR",
        help="instead of the fixtures, save a random GPT-2 small (Hugging Face layout) to DIR",
    )
    args = ap.parse_args()
    if args.gpt2_small:
        random_gpt2_small(args.gpt2_small)
        return
    assets = find_assets(args.assets)
    os.makedirs(OUT_DIR, exist_ok=True)
    print(f"tokenizer (assets {assets}):")
    files = [tokenizer_fixture(assets)]
    print("tiny GPT-2:")
    files += model_fixture()
    for p in files:
        print(f"  {os.path.relpath(p, os.path.dirname(HERE))}: {os.path.getsize(p)} bytes")


if __name__ == "__main__":
    main()
