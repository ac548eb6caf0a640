#!/usr/bin/env python3
"""Writes the Llama-family parity fixtures that tinygpt's Rust tests compare against.

Everything is made here, from nothing downloaded: two small tokenizers trained on a text
written for this file, and two tiny random models, so the fixtures are small and the tests need
no network.

Tokenizers (`fixtures/llama/*/tokenizer.json`), the two kinds the family ships:
  * byte-level BPE (as SmolLM2 and Qwen2.5), special tokens <|endoftext|>, <|im_start|>,
    <|im_end|>, nothing added around a text;
  * SentencePiece-style BPE (as TinyLlama and Llama 2): a `▁` pre-tokenizer (Metaspace, prepended
    to the first word), byte fallback (<0x00>..<0xFF> in the vocabulary for any character the
    merges lack), and `<s>` added before every text by the post-processor.

Models, each a directory `transformers` loads with `from_pretrained`:
  * `llama/` — LlamaForCausalLM: grouped-query attention (4 query heads, 2 key/value heads),
    head_dim 12 (given, and not hidden_size / heads = 8), llama3 rope scaling, untied head,
    weights stored as bfloat16 in two shards (`model.safetensors.index.json`), and config.json
    rewritten the way transformers 4 writes it (`rope_theta`, `rope_scaling`, `torch_dtype`);
    the SentencePiece-style tokenizer.
  * `qwen2/` — Qwen2ForCausalLM: biases on q/k/v, one key/value head, tied head, float32, one
    file, config.json as transformers 5 writes it (`rope_parameters`, `dtype`); the byte-level
    tokenizer, a ChatML chat template in tokenizer_config.json and `<|im_end|>` as the end of
    sequence in generation_config.json.
Norm weights and biases are randomised (HF initialises them to 1 and 0, which would hide a
wrong mapping) and the weights use initializer_range 0.2 so that greedy decoding has clear
winners.

`fixtures/llama_expected.json` holds, per model: "inputs" (two id sequences), "logits" (per
input, [T][vocab] float32), "loss" (HF's with labels=input_ids), "greedy" (a prompt and the 30
ids of greedy generate(), the same with and without the cache); per tokenizer: texts with their
ids (without and with special tokens) and the decoded text; and a chat: messages, the template's
text and its ids.

Run by hand, not in CI:

    pip install torch transformers safetensors tokenizers
    python reference/make_llama_fixtures.py
"""

import json
import os
import shutil

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "llama")

# Written for this file.
CORPUS = """\
The little model reads a line, guesses the next word, and learns from every mistake it makes.
A small model trained on a laptop can still write a sentence that sounds almost right.
Rotary embeddings turn each query and key by an angle that grows with the position.
Grouped heads share their keys and values, so the cache of a long chat stays small.
When the tokenizer meets a word it has never seen, it falls back to the bytes of the word.
Numbers like 1, 22, 333 and 4096 are split into pieces; so are names like Qwen and SmolLM.
She said: "Keep the weights, change the data, and train again tomorrow morning."
Tabs	and  double  spaces, new lines,
and punctuation (commas, colons: semicolons; dashes - and dots...) all count as text.
""" * 3

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'].strip() + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TEXTS = [
    "The little model reads a line.",
    " leading space, and  two spaces",
    "Unseen: zebra quokka 12345",
    "accents: café naïve, CJK: 你好, emoji: 🦀👍🏽",
    "line one\nline two\n\n\ttabbed",
    "<|im_start|>user\nhi<|im_end|>",
    "",
]


def byte_level_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer)
    return tok


def sentencepiece_tokenizer():
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                 split=False)
    tok.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(content=" ", left=1, right=0)])
    trainer = BpeTrainer(vocab_size=420, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
                         show_progress=False)
    tok.train_from_iterator(CORPUS.splitlines(), trainer)
    # The byte tokens belong to the vocabulary, not to the added (special) tokens: a text that
    # spells "<0x41>" is text.
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in byte_tokens]
    tok = Tokenizer.from_str(json.dumps(data))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok


def randomise(model, generator):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=generator))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))


def rewrite_as_transformers_4(directory):
    path = os.path.join(directory, "config.json")
    with open(path) as f:
        config = json.load(f)
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = rope if rope.get("rope_type", "default") != "default" else None
    config["torch_dtype"] = config.pop("dtype")
    config["transformers_version"] = "4.46.0"
    with open(path, "w") as f:
        json.dump(config, f, indent=2)


def greedy_case(model, vocab, generator):
    for _ in range(200):
        prompt = torch.randint(3, vocab, (1, 5), generator=generator)
        cached = model.generate(prompt, max_new_tokens=30, do_sample=False, use_cache=True,
                                min_new_tokens=30)
        uncached = model.generate(prompt, max_new_tokens=30, do_sample=False, use_cache=False,
                                  min_new_tokens=30)
        new = cached[0, 5:].tolist()
        assert new == uncached[0, 5:].tolist()
        # Clear winners at every step, so float differences cannot flip a token.
        with torch.no_grad():
            logits = model(cached[:, :-1]).logits[0, 4:]
        top = logits.topk(2, dim=-1).values
        if len(set(new)) >= 8 and bool(((top[:, 0] - top[:, 1]) >= 0.05).all()):
            return {"prompt": prompt[0].tolist(), "tokens": new}
    raise SystemExit("no prompt with clear greedy winners")


def expected_for(directory, generator, eos):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    model.eval()
    model.generation_config.eos_token_id = None  # the 30 tokens run their full length
    model.generation_config.pad_token_id = 0
    vocab = model.config.vocab_size
    inputs = [torch.randint(0, vocab, (1, n), generator=generator) for n in (16, 11)]
    out = {"inputs": [], "logits": [], "loss": []}
    with torch.no_grad():
        for ids in inputs:
            result = model(ids, labels=ids)
            out["inputs"].append(ids[0].tolist())
            # 7 significant digits: float32's precision, half the file.
            out["logits"].append([[float(f"{v:.7g}") for v in row]
                                  for row in result.logits[0].tolist()])
            out["loss"].append(result.loss.item())
    out["greedy"] = greedy_case(model, vocab, generator)
    out["num_params"] = sum(p.numel() for p in model.parameters())
    return out


def tokenizer_cases(directory):
    fast = AutoTokenizer.from_pretrained(directory)
    raw = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    cases = []
    for text in TEXTS:
        ids = raw.encode(text, add_special_tokens=False).ids
        with_special = raw.encode(text, add_special_tokens=True).ids
        assert fast(text, add_special_tokens=True)["input_ids"] == with_special, text
        assert fast(text, add_special_tokens=False)["input_ids"] == ids, text
        decoded = raw.decode(ids, skip_special_tokens=False)
        assert fast.decode(ids) == decoded
        cases.append({"text": text, "ids": ids, "with_special": with_special,
                      "decoded": decoded})
    return cases


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    expected = {}

    # Llama: SentencePiece-style tokens, GQA, llama3 rope scaling, bf16 shards, transformers 4.
    sp = sentencepiece_tokenizer()
    llama_dir = os.path.join(OUT, "llama")
    config = LlamaConfig(
        vocab_size=sp.get_vocab_size(), hidden_size=32, intermediate_size=72,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
        max_position_embeddings=128, rms_norm_eps=1e-5, initializer_range=0.2,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16})
    model = LlamaForCausalLM(config)
    randomise(model, generator)
    model.to(torch.bfloat16).save_pretrained(llama_dir, max_shard_size="20KB")
    rewrite_as_transformers_4(llama_dir)
    sp.save(os.path.join(llama_dir, "tokenizer.json"))
    with open(os.path.join(llama_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>",
                   "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
                   "model_max_length": 128}, f, indent=2)
    expected["llama"] = expected_for(llama_dir, generator, eos=2)
    expected["llama"]["tokenizer"] = tokenizer_cases(llama_dir)

    # Qwen2: byte-level tokens, q/k/v biases, tied head, f32, transformers 5, a chat template.
    bl = byte_level_tokenizer()
    qwen_dir = os.path.join(OUT, "qwen2")
    im_end = bl.token_to_id("<|im_end|>")
    config = Qwen2Config(
        vocab_size=bl.get_vocab_size(), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        max_position_embeddings=128, rms_norm_eps=1e-6, initializer_range=0.2,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=im_end,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    model = Qwen2ForCausalLM(config)
    randomise(model, generator)
    model.save_pretrained(qwen_dir)
    bl.save(os.path.join(qwen_dir, "tokenizer.json"))
    with open(os.path.join(qwen_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None,
                   "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                   "chat_template": CHAT_TEMPLATE, "model_max_length": 128}, f, indent=2)
    expected["qwen2"] = expected_for(qwen_dir, generator, eos=im_end)
    expected["qwen2"]["tokenizer"] = tokenizer_cases(qwen_dir)
    fast = AutoTokenizer.from_pretrained(qwen_dir)
    messages = [{"role": "user", "content": "Hello there "},
                {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": "What is a rotary embedding?"}]
    text = fast.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = fast.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                   return_dict=False)
    expected["qwen2"]["chat"] = {"messages": messages, "text": text, "ids": list(ids),
                                 "eos_token_id": im_end}

    with open(os.path.join(HERE, "fixtures", "llama_expected.json"), "w") as f:
        json.dump(expected, f)
    for name in ("llama", "qwen2"):
        d = os.path.join(OUT, name)
        print(name, sorted(os.listdir(d)),
              sum(os.path.getsize(os.path.join(d, x)) for x in os.listdir(d)), "bytes")


if __name__ == "__main__":
    main()
