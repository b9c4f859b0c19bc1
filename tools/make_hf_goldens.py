#!/usr/bin/env python3
"""Makes tiny random-weight HF checkpoints of every supported architecture and
records HF transformers' outputs on them (goldens) for shardlm's tests.

Runs where torch + transformers are installed (the GPU machine; it computes on
the CPU, in f32 and f64, so results don't depend on GPU kernels or TF32):

    python3 tools/make_hf_goldens.py --out /tmp/g [--default-model models/default]

Writes <out>/<name>/ for each model: the checkpoint as save_pretrained writes it
(config.json, model.safetensors or model.safetensors.index.json + shards) and
goldens.json:

    {"model": name, "arch": ..., "dtype": checkpoint dtype, "compute_dtype": "float32",
     "notes": [...], "transformers_version": ..., "torch_version": ...,
     "inv_freq": [...], "attention_scaling": ...,
     "prompts": [{"ids": [...], "last_logits": [... vocab f32 ...],
                  "last_logits_f64": [...], "greedy": [16 ids],
                  "greedy_min_margin": top1 - top2 logit over the 16 steps}],
     "max_abs_diff_f32_f64": ...}

With --default-model DIR it also writes <out>/default/goldens.json for that
(already committed) checkpoint, plus tokenizer goldens from HF `tokenizers` and
the chat template rendered by transformers.
"""

import argparse
import copy
import json
import os
import sys

import torch
import transformers
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

SEED = 1234
GREEDY_TOKENS = 16
PROMPT_LENGTHS = [1, 7, 23]


def rope(theta, scaling=None):
    """Config kwargs for RoPE in both the transformers 5 (rope_parameters) and
    4.x (rope_theta + rope_scaling) spellings."""
    if hasattr(LlamaConfig(), "rope_parameters"):
        p = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            p.update(scaling)
        return {"rope_parameters": p}
    kw = {"rope_theta": theta}
    if scaling:
        kw["rope_scaling"] = dict(scaling)
    return kw


def base_kwargs(**over):
    kw = dict(vocab_size=256, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)
    kw.update(rope(10000.0))
    kw.update(over)
    return kw


def model_specs():
    """name -> (config class, model class, config kwargs, save dtype, extra)."""
    L = (LlamaConfig, LlamaForCausalLM)
    specs = {
        "llama_f32": (*L, base_kwargs(), torch.float32, {}),
        # llama3 rope: head_dim 16, theta 10000 -> wavelengths 6.3, 19.9, 62.8,
        # 199, ... With original_max 64, low 1, high 4: wavelen < 16 kept,
        # 16..64 smoothed (2 frequencies), > 64 divided by 8 (5 frequencies).
        "llama3_rope": (*L, base_kwargs(**rope(10000.0, {
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
            torch.float32, {"prompt_lengths": [1, 7, 23, 100]}),
        "llama_odd": (*L, base_kwargs(vocab_size=301, hidden_size=96, num_attention_heads=6,
                                      num_key_value_heads=3, head_dim=40, intermediate_size=200,
                                      rms_norm_eps=1e-6), torch.float32, {}),
        "llama_tied": (*L, base_kwargs(tie_word_embeddings=True), torch.float32, {}),
        "llama_bf16": (*L, base_kwargs(), torch.bfloat16, {}),
        "llama_sharded": (*L, base_kwargs(num_hidden_layers=4), torch.float32,
                          {"max_shard_size": "200KB"}),
        "mistral": (MistralConfig, MistralForCausalLM,
                    base_kwargs(sliding_window=4096, **rope(1000000.0)), torch.float32, {}),
        "mistral_swa": (MistralConfig, MistralForCausalLM,
                        base_kwargs(sliding_window=5), torch.float32, {}),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM,
                  base_kwargs(tie_word_embeddings=True, rms_norm_eps=1e-6,
                              use_sliding_window=False, **rope(1000000.0)), torch.float32, {}),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM,
                  base_kwargs(head_dim=32, rms_norm_eps=1e-6, use_sliding_window=False,
                              attention_bias=False, **rope(1000000.0)), torch.float32, {}),
    }
    return specs


NOTES = {
    "llama_bf16": ["checkpoint weights are bfloat16; goldens are a float32 forward on the "
                   "bf16 weights upcast exactly to float32 (from_pretrained(dtype=float32))"],
    "mistral_swa": ["sliding_window=5 as HF applies it: query i attends keys j with "
                    "i - 5 < j <= i (the window counts the query itself)"],
    "mistral": ["sliding_window=4096 never binds at these lengths"],
    "llama3_rope": ["rope_type llama3: factor 8, low_freq_factor 1, high_freq_factor 4, "
                    "original_max_position_embeddings 64; inv_freq below is HF's, after scaling"],
    "llama_odd": ["head_dim 40 != hidden 96 / 6 heads; q_proj out = 240, vocab 301 (odd)"],
    "qwen3": ["head_dim 32 with hidden 64 and 4 heads: q_proj out = 128 != hidden; q_norm/k_norm "
              "are RMSNorms over head_dim applied per head before rope"],
    "qwen2": ["q/k/v projections have biases; o_proj has none; tied embeddings"],
    "llama_tied": ["tie_word_embeddings: no lm_head.weight in the checkpoint"],
    "llama_sharded": ["saved with max_shard_size=200KB: model.safetensors.index.json + shards"],
}
COMMON_NOTES = [
    "last_logits: float32 forward on the CPU, attn_implementation=eager, whole prompt at once",
    "last_logits_f64: the same model cast to float64; HF still computes rope cos/sin and the "
    "eager softmax in float32, so it is a near-f64 reference, not an exact one",
    "greedy: manual greedy loop in float32 (argmax of the last position, full recompute each "
    "step, eos ignored), 16 new tokens; greedy_min_margin = smallest top1 - top2 gap seen",
    "numbers are rounded to 7 (f32) / 10 (f64) significant digits",
]


def reinit(model, seed):
    """Re-initialise every parameter so logits are far from zero: norms 1 +
    N(0, 0.1), biases N(0, 0.1), embedding N(0, 0.5) (N(0, 0.1) when tied to the
    LM head, else the input token's own row dominates and greedy repeats it),
    other matrices N(0, 0.08)."""
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "norm" in name:
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            elif name.endswith(".bias"):
                v = 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            elif "embed_tokens" in name:
                v = (0.1 if tied else 0.5) * torch.randn(p.shape, generator=g, dtype=torch.float64)
            else:
                v = 0.08 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            p.copy_(v.to(p.dtype))


def load(path, dtype):
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager",
                                                    output_loading_info=True)
    except TypeError:
        return AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype,
                                                    attn_implementation="eager",
                                                    output_loading_info=True)


def save(model, path, max_shard_size=None):
    kw = {}
    if max_shard_size:
        kw["max_shard_size"] = max_shard_size
    try:
        model.save_pretrained(path, safe_serialization=True, **kw)
    except TypeError:
        model.save_pretrained(path, **kw)


def r7(xs):
    return [float("%.7g" % x) for x in xs]


def r10(xs):
    return [float("%.10g" % x) for x in xs]


@torch.no_grad()
def run_prompts(model, model64, vocab, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    maxdiff = 0.0
    for n in lengths:
        ids = torch.randint(0, vocab, (1, n), generator=g)
        logits = model(ids).logits[0, -1].float()
        logits64 = model64(ids).logits[0, -1].double()
        maxdiff = max(maxdiff, (logits.double() - logits64).abs().max().item())
        seq = ids.clone()
        greedy = []
        margin = float("inf")
        for _ in range(GREEDY_TOKENS):
            last = model(seq).logits[0, -1].float()
            top = torch.topk(last, 2)
            margin = min(margin, (top.values[0] - top.values[1]).item())
            nxt = int(top.indices[0])
            greedy.append(nxt)
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
        out.append({"ids": ids[0].tolist(), "greedy": greedy,
                    "greedy_min_margin": float("%.4g" % margin),
                    "last_logits": r7(logits.tolist()),
                    "last_logits_f64": r10(logits64.tolist())})
    return out, maxdiff


def dump_goldens(path, head, prompts, extra_lists=None):
    """JSON with one line per prompt field, so diffs stay readable."""
    lines = ["{"]
    items = list(head.items())
    for k, v in items:
        lines.append("  %s: %s," % (json.dumps(k), json.dumps(v, ensure_ascii=False)))
    for k, v in (extra_lists or {}).items():
        lines.append("  %s: [" % json.dumps(k))
        lines.append(",\n".join("    " + json.dumps(e, ensure_ascii=False) for e in v))
        lines.append("  ],")
    lines.append('  "prompts": [')
    plines = []
    for p in prompts:
        fields = ["      %s: %s" % (json.dumps(k), json.dumps(v)) for k, v in p.items()]
        plines.append("    {\n" + ",\n".join(fields) + "\n    }")
    lines.append(",\n".join(plines))
    lines.append("  ]")
    lines.append("}")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    json.load(open(path, encoding="utf-8"))  # check it parses


def rope_info(model):
    re_ = model.model.rotary_emb
    return ([float("%.9g" % x) for x in re_.inv_freq.double().tolist()],
            float(getattr(re_, "attention_scaling", 1.0)))


def versions():
    return {"transformers_version": transformers.__version__, "torch_version": torch.__version__}


def make_model(name, spec, out, index):
    cfg_cls, model_cls, kw, save_dtype, extra = spec
    cfg = cfg_cls(**kw)
    torch.manual_seed(SEED + index)
    model = model_cls(cfg)
    reinit(model, SEED + index)
    model = model.to(save_dtype)
    d = os.path.join(out, name)
    save(model, d, extra.get("max_shard_size"))
    return d


def goldens_for(name, d, arch_note_dtype, lengths, seed, notes, extra_lists=None):
    model, info = load(d, torch.float32)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        print(f"  !! {name}: loading info {bad}")
    model.eval()
    model64 = copy.deepcopy(model).to(torch.float64)
    vocab = model.config.vocab_size
    prompts, maxdiff = run_prompts(model, model64, vocab, lengths, seed)
    inv_freq, att = rope_info(model)
    head = {"model": name, "arch": model.config.architectures[0] if model.config.architectures
            else type(model).__name__, "dtype": arch_note_dtype, "compute_dtype": "float32",
            "notes": notes + COMMON_NOTES, **versions(), "inv_freq": inv_freq,
            "attention_scaling": att, "max_abs_diff_f32_f64": float("%.4g" % maxdiff)}
    dump_goldens(os.path.join(d, "goldens.json"), head, prompts, extra_lists)
    lg = prompts[-1]["last_logits"]
    print(f"  {name}: files={sorted(os.listdir(d))} "
          f"logit range [{min(lg):.3f}, {max(lg):.3f}] f32-vs-f64 {maxdiff:.2e} "
          f"greedy[-1]={prompts[-1]['greedy'][:8]} margin={prompts[-1]['greedy_min_margin']}")


def tokenizer_goldens(model_dir):
    texts = ["Hello, world!", "We hold these truths to be self-evident.", " leading space",
             "multi\n\nline  two  spaces\ttab  ", "Four score and seven years ago, 1863.",
             "Unicode: caf\u00e9 \u00f1 \u65e5\u672c\u8a9e \U0001F642", "it's they'll we've I'M",
             "<|begin_of_text|>special in text<|end_of_text|>", ""]
    out = []
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    for t in texts:
        plain = tok.encode(t, add_special_tokens=False)
        withs = tok.encode(t, add_special_tokens=True)
        out.append({"text": t, "ids": plain.ids, "tokens": plain.tokens,
                    "ids_with_special": withs.ids,
                    "decoded": tok.decode(plain.ids, skip_special_tokens=False)})
    chat = []
    try:
        from transformers import AutoTokenizer
        at = AutoTokenizer.from_pretrained(model_dir)
        msgs = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello!"}]
        for gen in (True, False):
            s = at.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            chat.append({"messages": msgs, "add_generation_prompt": gen, "text": s,
                         "ids": tok.encode(s, add_special_tokens=False).ids})
    except Exception as e:  # keep the rest of the goldens
        print("  !! chat template:", repr(e))
    return out, chat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--default-model", default=None)
    ap.add_argument("--only", default=None, help="comma-separated model names")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print("torch", torch.__version__, "transformers", transformers.__version__,
          "python", sys.version.split()[0])
    os.makedirs(args.out, exist_ok=True)
    specs = model_specs()
    names = args.only.split(",") if args.only else list(specs)
    failed = []
    for i, name in enumerate(sorted(specs)):
        if name not in names:
            continue
        try:
            d = make_model(name, specs[name], args.out, i)
            dt = "bfloat16" if specs[name][3] == torch.bfloat16 else "float32"
            goldens_for(name, d, dt, specs[name][4].get("prompt_lengths", PROMPT_LENGTHS),
                        SEED + 100 + i, NOTES.get(name, []))
        except Exception as e:
            import traceback
            traceback.print_exc()
            failed.append(name)
    if args.default_model:
        try:
            d = os.path.join(args.out, "default")
            os.makedirs(d, exist_ok=True)
            import shutil
            src = os.path.abspath(args.default_model)
            # goldens are computed on the committed checkpoint; only goldens.json is kept
            tmp = os.path.join(args.out, ".default_ckpt")
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            toks, chat = tokenizer_goldens(src)
            goldens_for("default", tmp, "float32", PROMPT_LENGTHS, SEED + 999,
                        ["models/default (tools/make_default_model.py), random weights"],
                        {"tokenizer": toks, "chat_template": chat})
            shutil.move(os.path.join(tmp, "goldens.json"), os.path.join(d, "goldens.json"))
            shutil.rmtree(tmp)
            for t in toks[:4]:
                print("   tok", repr(t["text"]), t["ids"][:12], repr(t["decoded"]))
            for c in chat:
                print("   chat", repr(c["text"]))
        except Exception:
            import traceback
            traceback.print_exc()
            failed.append("default")
    # show a saved config of the rope model and the shard index
    for name in ("llama3_rope", "llama_sharded"):
        for f in ("config.json", "model.safetensors.index.json"):
            p = os.path.join(args.out, name, f)
            if os.path.exists(p):
                print(f"--- {name}/{f}\n" + open(p).read()[:1500])
    if failed:
        print("FAILED:", failed)
        sys.exit(1)
    print("all goldens made")


if __name__ == "__main__":
    main()
