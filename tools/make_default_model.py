#!/usr/bin/env python3
"""Writes models/default/: a tiny random-weight LlamaForCausalLM in HF format.

PLACEHOLDER: this model has random weights and prints noise. It exists so the
engine, the tokenizer and the tests have a real HF-format directory to load
before the trained demo model (issue 8, models/kjv/) lands.

Pure Python 3 standard library (no numpy, no torch). Deterministic: a fixed
seed and its own PRNG (splitmix64), sorted JSON keys, so running it twice gives
byte-identical files.

    python3 tools/make_default_model.py [--out models/default]

Writes:
  config.json             LlamaForCausalLM, f32, GQA (4 heads, 2 kv heads)
  generation_config.json  bos/eos ids
  model.safetensors       f32 weights, written with struct + json
  tokenizer.json          byte-level BPE (GPT-2 bytes_to_unicode, 256 byte
                          symbols + merges learnt from the text below) with
                          <|begin_of_text|> and <|end_of_text|> as special tokens
  tokenizer_config.json   bos/eos tokens and a small Jinja chat template
"""

import argparse
import json
import math
import os
import re
import struct
from collections import Counter

SEED = 0x5EED_0001

# Model shape. 4 layers, 4 heads and 2 kv heads so tp=2 and pp=2 both divide it.
VOCAB_SIZE = 512          # 256 bytes + 254 merges + 2 special tokens
HIDDEN = 64
LAYERS = 4
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 128
MAX_POS = 512
ROPE_THETA = 10000.0
RMS_EPS = 1e-5
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>"]
NUM_MERGES = VOCAB_SIZE - 256 - len(SPECIAL_TOKENS)
BOS_ID = VOCAB_SIZE - 2
EOS_ID = VOCAB_SIZE - 1

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# Public-domain English (US Declaration of Independence, 1776; Gettysburg
# Address, 1863), used only to learn the BPE merges.
TEXT = """\
When in the Course of human events, it becomes necessary for one people to
dissolve the political bands which have connected them with another, and to
assume among the powers of the earth, the separate and equal station to which
the Laws of Nature and of Nature's God entitle them, a decent respect to the
opinions of mankind requires that they should declare the causes which impel
them to the separation.

We hold these truths to be self-evident, that all men are created equal, that
they are endowed by their Creator with certain unalienable Rights, that among
these are Life, Liberty and the pursuit of Happiness. That to secure these
rights, Governments are instituted among Men, deriving their just powers from
the consent of the governed, That whenever any Form of Government becomes
destructive of these ends, it is the Right of the People to alter or to abolish
it, and to institute new Government, laying its foundation on such principles
and organizing its powers in such form, as to them shall seem most likely to
effect their Safety and Happiness. Prudence, indeed, will dictate that
Governments long established should not be changed for light and transient
causes; and accordingly all experience hath shewn, that mankind are more
disposed to suffer, while evils are sufferable, than to right themselves by
abolishing the forms to which they are accustomed. But when a long train of
abuses and usurpations, pursuing invariably the same Object evinces a design to
reduce them under absolute Despotism, it is their right, it is their duty, to
throw off such Government, and to provide new Guards for their future security.

Four score and seven years ago our fathers brought forth on this continent, a
new nation, conceived in Liberty, and dedicated to the proposition that all men
are created equal.

Now we are engaged in a great civil war, testing whether that nation, or any
nation so conceived and so dedicated, can long endure. We are met on a great
battle-field of that war. We have come to dedicate a portion of that field, as
a final resting place for those who here gave their lives that that nation
might live. It is altogether fitting and proper that we should do this.

But, in a larger sense, we can not dedicate -- we can not consecrate -- we can
not hallow -- this ground. The brave men, living and dead, who struggled here,
have consecrated it, far above our poor power to add or detract. The world will
little note, nor long remember what we say here, but it can never forget what
they did here. It is for us the living, rather, to be dedicated here to the
unfinished work which they who fought here have thus far so nobly advanced. It
is rather for us to be here dedicated to the great task remaining before us --
that from these honored dead we take increased devotion to that cause for which
they gave the last full measure of devotion -- that we here highly resolve that
these dead shall not have died in vain -- that this nation, under God, shall
have a new birth of freedom -- and that government of the people, by the
people, for the people, shall not perish from the earth. 1776, 1863.
"""

README = """\
# models/default — placeholder

A tiny LlamaForCausalLM with RANDOM weights (it prints noise), written by
`python3 tools/make_default_model.py` (pure Python, deterministic: the same
bytes every run). It stands in until the trained demo model (issue 8) lands.

f32, vocab 512 (256 byte symbols + 254 BPE merges + <|begin_of_text|>,
<|end_of_text|>), hidden 64, 4 layers, 4 heads, 2 kv heads, head_dim 16,
intermediate 128, rope_theta 10000, rms_norm_eps 1e-5, untied lm_head.
Goldens from HF transformers: tests/data/models/default/goldens.json.
"""

MASK64 = (1 << 64) - 1


def splitmix64(state):
    """One step of splitmix64: returns (new_state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def uniform_values(name, n, center, half_width):
    """n floats uniform in [center - half_width, center + half_width), from a
    stream seeded by SEED and the tensor's name (so tensors don't depend on
    each other's order)."""
    state = (SEED ^ fnv1a64(name)) & MASK64
    out = []
    for _ in range(n):
        state, r = splitmix64(state)
        u = (r >> 11) * (1.0 / (1 << 53))  # [0, 1)
        out.append(center + (2.0 * u - 1.0) * half_width)
    return out


# ---------------------------------------------------------------- weights

def weight_specs():
    """(name, shape, center, std) for every tensor of LlamaForCausalLM."""
    specs = [("model.embed_tokens.weight", [VOCAB_SIZE, HIDDEN], 0.0, 1.0),
             ("model.norm.weight", [HIDDEN], 1.0, 0.05),
             ("lm_head.weight", [VOCAB_SIZE, HIDDEN], 0.0, 0.1)]
    q_out = HEADS * HEAD_DIM
    kv_out = KV_HEADS * HEAD_DIM
    lin = 1.0 / math.sqrt(HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        specs += [
            (p + "input_layernorm.weight", [HIDDEN], 1.0, 0.05),
            (p + "post_attention_layernorm.weight", [HIDDEN], 1.0, 0.05),
            (p + "self_attn.q_proj.weight", [q_out, HIDDEN], 0.0, lin),
            (p + "self_attn.k_proj.weight", [kv_out, HIDDEN], 0.0, lin),
            (p + "self_attn.v_proj.weight", [kv_out, HIDDEN], 0.0, lin),
            (p + "self_attn.o_proj.weight", [HIDDEN, q_out], 0.0, 1.0 / math.sqrt(q_out)),
            (p + "mlp.gate_proj.weight", [INTERMEDIATE, HIDDEN], 0.0, lin),
            (p + "mlp.up_proj.weight", [INTERMEDIATE, HIDDEN], 0.0, lin),
            (p + "mlp.down_proj.weight", [HIDDEN, INTERMEDIATE], 0.0, 1.0 / math.sqrt(INTERMEDIATE)),
        ]
    return specs


def write_safetensors(path, tensors):
    """tensors: dict name -> (shape, list of floats); written as F32, in sorted
    name order, with a space-padded header whose length is a multiple of 8."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        shape, values = tensors[name]
        n = 1
        for d in shape:
            n *= d
        assert n == len(values), name
        blob = struct.pack("<%df" % n, *values)
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    hjson = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------- tokenizer

def bytes_to_unicode():
    """GPT-2's byte -> printable unicode character map, in GPT-2's order."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [(b, chr(c)) for b, c in zip(bs, cs)]


# GPT-2's pre-tokenisation regex, ASCII approximation (the text above is ASCII;
# \p{L} -> [A-Za-z], \p{N} -> [0-9]).
PRETOK = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def train_bpe(text, num_merges):
    b2u = dict(bytes_to_unicode())
    words = Counter()
    for piece in PRETOK.findall(text):
        words[tuple(b2u[b] for b in piece.encode("utf-8"))] += 1
    words = dict(words)
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        # Highest count; ties broken by the smallest pair (deterministic).
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        joined = best[0] + best[1]
        new_words = {}
        for w, c in words.items():
            out = []
            i = 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == best[0] and w[i + 1] == best[1]:
                    out.append(joined)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            t = tuple(out)
            new_words[t] = new_words.get(t, 0) + c
        words = new_words
    return merges


def make_tokenizer():
    vocab = {}
    for _, ch in bytes_to_unicode():
        vocab[ch] = len(vocab)
    merges = train_bpe(TEXT, NUM_MERGES)
    assert len(merges) == NUM_MERGES, len(merges)
    for a, b in merges:
        assert a + b not in vocab
        vocab[a + b] = len(vocab)
    assert len(vocab) == BOS_ID
    added = [{"id": BOS_ID + i, "content": t, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for i, t in enumerate(SPECIAL_TOKENS)]
    bos = SPECIAL_TOKENS[0]
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                          "trim_offsets": True, "use_regex": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [BOS_ID], "tokens": [bos]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                    "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    tok_cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(a["id"]): {k: a[k] for k in a if k != "id"} for a in added},
        "bos_token": SPECIAL_TOKENS[0],
        "eos_token": SPECIAL_TOKENS[1],
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POS,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    return tok, tok_cfg


def write_json(path, obj, indent=2):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, indent=indent, sort_keys=False, ensure_ascii=False)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "models", "default"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POS,
        "mlp_bias": False,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "pretraining_tp": 1,
        "rms_norm_eps": RMS_EPS,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": VOCAB_SIZE,
    }
    write_json(os.path.join(args.out, "config.json"), config)
    write_json(os.path.join(args.out, "generation_config.json"),
               {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "do_sample": False})

    tensors = {}
    for name, shape, center, std in weight_specs():
        n = 1
        for d in shape:
            n *= d
        # uniform with the given standard deviation: half width = std * sqrt(3)
        tensors[name] = (shape, uniform_values(name, n, center, std * math.sqrt(3.0)))
    write_safetensors(os.path.join(args.out, "model.safetensors"), tensors)

    tok, tok_cfg = make_tokenizer()
    write_json(os.path.join(args.out, "tokenizer.json"), tok)
    write_json(os.path.join(args.out, "tokenizer_config.json"), tok_cfg)
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8", newline="\n") as f:
        f.write(README)
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"wrote {args.out} ({total} bytes)")


if __name__ == "__main__":
    main()
