#!/usr/bin/env python3
"""Peer figures for `shardlm bench decode`: HF transformers on the same
Llama-3-8B shape (random bf16 weights made on the GPU, no checkpoint), decode
ms/step at each batch size with every sequence at --context tokens.

Two modes, both without torch.compile:
  eager   model forward with the default DynamicCache (grows by concatenation)
  static  StaticCache sized for the run, explicit cache_position
Method: prefill context-1 tokens (logits of the last row only), then time
--steps single-token steps (CUDA-synchronised wall clock, median), each step
at context ≈ --context. Prints one table row per (mode, batch) and writes JSON.
--workload B:PP+TG adds llama-batched-bench's measure, as `shardlm bench
decode --workload`: B prompts of PP tokens prefilled in one forward, then TG
single-token steps (argmax fed back); generated tokens/s = B·TG / the steps' time.

Run on the GPU machine:  python3 bench/hf_decode.py --batches 1,8,64,256 --json $OUT/hf.json
"""
import argparse
import json
import statistics
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def make_model(layers):
    cfg = LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    # Uniform ±1/sqrt(fan_in), as shardlm's bench (values do not change the speed, zeros might).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.uniform_(-1.0 / p.shape[1] ** 0.5, 1.0 / p.shape[1] ** 0.5)
    return model, cfg


def static_cache(cfg, batch, max_len):
    from transformers import StaticCache
    tries = [
        dict(config=cfg, max_batch_size=batch, max_cache_len=max_len, device="cuda", dtype=torch.bfloat16),
        dict(config=cfg, max_cache_len=max_len),
    ]
    last = None
    for kw in tries:
        try:
            return StaticCache(**kw)
        except TypeError as e:  # the constructor's arguments changed across transformers versions
            last = e
    raise last


@torch.no_grad()
def run(model, cfg, mode, batch, context, steps):
    prompt = torch.randint(0, cfg.vocab_size, (batch, context - 1), device="cuda")
    kw = {}
    if mode == "static":
        kw["past_key_values"] = static_cache(cfg, batch, context + steps + 4)
        kw["cache_position"] = torch.arange(context - 1, device="cuda")
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1, **kw)
    cache = out.past_key_values
    tok = out.logits[:, -1:].argmax(-1)
    times = []
    pos = context - 1
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        kw = {"cache_position": torch.tensor([pos], device="cuda")} if mode == "static" else {}
        out = model(input_ids=tok, past_key_values=cache, use_cache=True, logits_to_keep=1, **kw)
        tok = out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cache = out.past_key_values
        pos += 1
    return statistics.median(times[2:] if len(times) > 4 else times)


@torch.no_grad()
def run_workload(model, cfg, mode, batch, prompt_len, gen):
    prompt = torch.randint(0, cfg.vocab_size, (batch, prompt_len), device="cuda")
    kw = {}
    if mode == "static":
        kw["past_key_values"] = static_cache(cfg, batch, prompt_len + gen + 4)
        kw["cache_position"] = torch.arange(prompt_len, device="cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1, **kw)
    cache = out.past_key_values
    tok = out.logits[:, -1:].argmax(-1)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    for i in range(gen):
        kw = {"cache_position": torch.tensor([prompt_len + i], device="cuda")} if mode == "static" else {}
        out = model(input_ids=tok, past_key_values=cache, use_cache=True, logits_to_keep=1, **kw)
        tok = out.logits[:, -1:].argmax(-1)
        cache = out.past_key_values
    torch.cuda.synchronize()
    return t1 - t0, time.perf_counter() - t1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--modes", default="eager,static")
    ap.add_argument("--json", default="")
    ap.add_argument("--workload", default="", help="B:PP+TG, e.g. 64:128+128 (empty: none)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    model, cfg = make_model(a.layers)
    torch.cuda.synchronize()
    print(f"HF transformers {transformers.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name()}; "
          f"model made in {time.perf_counter() - t0:.1f} s; attention: {model.config._attn_implementation}")
    print(f"{'mode':>7} {'batch':>6} {'ctx':>5} {'ms/step':>9} {'tok/s':>8}")
    rows = []
    for mode in a.modes.split(","):
        for b in [int(x) for x in a.batches.split(",")]:
            try:
                ms = run(model, cfg, mode, b, a.context, a.steps) * 1e3
                print(f"{mode:>7} {b:>6} {a.context:>5} {ms:>9.2f} {b / ms * 1e3:>8.0f}", flush=True)
                rows.append({"mode": mode, "batch": b, "context": a.context, "ms_per_step": ms})
            except Exception as e:  # OOM or an API difference: report and go on
                print(f"{mode:>7} {b:>6} {a.context:>5}   failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
                rows.append({"mode": mode, "batch": b, "error": f"{type(e).__name__}: {e}"[:500]})
            torch.cuda.empty_cache()
    if a.workload:
        b, rest = a.workload.split(":")
        pp, tg = (int(x) for x in rest.split("+"))
        b = int(b)
        for mode in a.modes.split(","):
            try:
                run_workload(model, cfg, mode, b, pp, 4)  # warm (allocator, kernels)
                tp, td = run_workload(model, cfg, mode, b, pp, tg)
                print(f"workload {mode} B {b} × (PP {pp} + TG {tg}): prefill {tp * 1e3:.1f} ms; {tg} decode steps "
                      f"{td * 1e3:.1f} ms: S_TG {b * tg / td:.0f} generated tok/s", flush=True)
                rows.append({"mode": mode, "workload": a.workload, "prefill_ms": tp * 1e3, "decode_ms": td * 1e3,
                             "generated_tokens_per_s": b * tg / td})
            except Exception as e:
                print(f"workload {mode}: failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
                rows.append({"mode": mode, "workload": a.workload, "error": f"{type(e).__name__}: {e}"[:500]})
            torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                       "device": torch.cuda.get_device_name(), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
