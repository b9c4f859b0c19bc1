#!/usr/bin/env python3
"""Trains shardlm's demo model (issue 8): a small LlamaForCausalLM on the King
James Bible, with a byte-level BPE tokenizer trained by HF `tokenizers`.

Runs on a GPU machine with torch, transformers and tokenizers:

    tools/train_default_model/make_corpus.sh .corpus        # where bible-kjv is installed
    python3 tools/train_default_model/train.py --corpus .corpus --out models/kjv

Writes to --out: config.json, generation_config.json, model.safetensors (bf16,
tied embeddings), tokenizer.json, tokenizer_config.json (chat template),
heldout.txt + heldout_excerpt.txt (the evaluation texts) and eval.json (held-out
perplexity computed here, the method spelled out, the sample generation).

Fixed seed; the number of steps is fixed (--steps) unless the measured speed
says they won't fit in --time-budget seconds, in which case fewer are run (the
count is recorded in eval.json; pass it back with --steps to replay).
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time

import torch
import torch.nn.functional as F
import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from make_default_model import CHAT_TEMPLATE  # noqa: E402

SEED = 20261121
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"


def log(*a):
    print(*a, flush=True)


def train_tokenizer(train_path, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([train_path], trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)])
    return tok


def encode_lines(tok, path):
    """Token stream of the file (lines kept with their '\\n') and the offset of
    each line's first token. Byte-level pre-tokenisation splits at '\\n', so this
    equals encoding the whole file at once."""
    with open(path, encoding="utf-8") as f:
        lines = [l for l in f.read().split("\n") if l]
    encs = tok.encode_batch([l + "\n" for l in lines], add_special_tokens=False)
    stream, starts = [], []
    for e in encs:
        starts.append(len(stream))
        stream.extend(e.ids)
    return stream, starts


@torch.no_grad()
def perplexity(model, ids, window, stride, device):
    """Token-level sliding-window perplexity (HF's recipe). ids[0] is the BOS;
    every later token t is scored once, from the window [begin, end) that first
    reaches it with t >= begin + 1, so every scored token has at least
    window - stride tokens of context except in the first window."""
    n = len(ids)
    x_all = torch.tensor(ids, device=device)
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        logits = model(x_all[begin:end][None]).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        t0 = max(prev_end, begin + 1)
        tgt = x_all[t0:end]
        lp = logp[t0 - 1 - begin:end - 1 - begin].gather(1, tgt[:, None])
        nll -= lp.sum().item()
        count += end - t0
        prev_end = end
        if end == n:
            break
    return math.exp(nll / count), count, nll


@torch.no_grad()
def greedy(model, ids, n, device):
    x = torch.tensor([ids], device=device)
    for _ in range(n):
        nxt = model(x).logits[0, -1].float().argmax()
        x = torch.cat([x, nxt.view(1, 1)], dim=1)
    return x[0, len(ids):].tolist()


@torch.no_grad()
def sample(model, ids, n, device, temperature=0.8, top_k=40, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.tensor([ids], device=device)
    for _ in range(n):
        logits = model(x).logits[0, -1].float() / temperature
        v, i = torch.topk(logits, top_k)
        p = torch.softmax(v, dim=-1)
        nxt = i[torch.multinomial(p, 1, generator=g)]
        x = torch.cat([x, nxt.view(1, 1)], dim=1)
    return x[0, len(ids):].tolist()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=".corpus")
    ap.add_argument("--out", default="models/kjv")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--time-budget", type=float, default=180.0)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    args = ap.parse_args()

    t_start = time.time()
    torch.manual_seed(SEED)
    torch.cuda.manual_seed_all(SEED)
    dev = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    log("torch", torch.__version__, "transformers", transformers.__version__,
        "tokenizers", tokenizers.__version__, torch.cuda.get_device_name())

    train_txt = os.path.join(args.corpus, "train.txt")
    val_txt = os.path.join(args.corpus, "val.txt")
    held_txt = os.path.join(args.corpus, "heldout.txt")
    tok = train_tokenizer(train_txt, args.vocab)
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    vocab = tok.get_vocab_size()
    log(f"tokenizer: vocab {vocab} bos {bos_id} eos {eos_id} ({time.time() - t_start:.1f}s)")

    train_stream, train_starts = encode_lines(tok, train_txt)
    val_stream, _ = encode_lines(tok, val_txt)
    log(f"train tokens {len(train_stream)} ({len(train_starts)} verses), val tokens {len(val_stream)}")

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, head_dim=args.hidden // args.heads,
                      max_position_embeddings=args.seq, rms_norm_eps=1e-5,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                      tie_word_embeddings=True, bos_token_id=bos_id, eos_token_id=eos_id,
                      attention_dropout=args.dropout)
    model = LlamaForCausalLM(cfg).to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    log(f"model params {nparams} ({nparams * 2 / 1e6:.1f} MB in bf16)")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=True)

    T = args.seq
    stream_gpu = torch.tensor(train_stream, device=dev)
    starts = torch.tensor([s for s in train_starts if s + T - 1 <= len(train_stream)])
    ar = torch.arange(T - 1, device=dev)
    bos_col = torch.full((args.batch, 1), bos_id, device=dev, dtype=torch.long)
    g = torch.Generator().manual_seed(SEED)

    # validation batches: [bos] + consecutive chunks of val
    vchunks = [val_stream[i:i + T - 1] for i in range(0, len(val_stream) - (T - 1) + 1, T - 1)]
    vx = torch.tensor([[bos_id] + c for c in vchunks], device=dev)

    @torch.no_grad()
    def val_loss():
        model.eval()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            l = model(input_ids=vx, labels=vx).loss.item()
        model.train()
        return l

    total = args.steps
    best = (float("inf"), -1, None)
    hist = []
    model.train()
    t_train = time.time()
    step = 0
    while step < total:
        lr = args.lr * (step + 1) / args.warmup if step < args.warmup else \
            args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - args.warmup) / max(1, total - args.warmup))))
        for grp in opt.param_groups:
            grp["lr"] = lr
        idx = starts[torch.randint(len(starts), (args.batch,), generator=g)].to(dev)
        x = torch.cat([bos_col, stream_gpu[idx[:, None] + ar]], dim=1)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step == 30:
            torch.cuda.synchronize()
            per = (time.time() - t_train) / step
            fit = int((args.time_budget - (time.time() - t_train)) / per) + step
            log(f"{per * 1000:.1f} ms/step, {args.batch * T / per / 1e6:.2f} M tok/s")
            if fit < total:
                log(f"!! only {fit} of {total} steps fit in {args.time_budget}s: running {fit}")
                total = fit
        if step % args.eval_every == 0 or step == total:
            vl = val_loss()
            hist.append([step, round(loss.item(), 4), round(vl, 4)])
            log(f"step {step}/{total} lr {lr:.2e} train {loss.item():.4f} val {vl:.4f} "
                f"({time.time() - t_train:.0f}s)")
            if vl < best[0]:
                best = (vl, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
    train_seconds = time.time() - t_train
    log(f"best val {best[0]:.4f} at step {best[1]}; trained {train_seconds:.0f}s")
    model.load_state_dict(best[2])
    model.eval()

    # ---- export (bf16)
    out = args.out
    os.makedirs(out, exist_ok=True)
    model.config.attention_dropout = 0.0
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save(os.path.join(out, "tokenizer.json"))
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True} for i, t in ((bos_id, BOS), (eos_id, EOS))}
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": added,
                   "bos_token": BOS, "eos_token": EOS, "chat_template": CHAT_TEMPLATE,
                   "clean_up_tokenization_spaces": False, "model_max_length": T,
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)
        f.write("\n")
    shutil.copy(held_txt, os.path.join(out, "heldout.txt"))
    with open(held_txt, encoding="utf-8") as f:
        held_lines = f.read().split("\n")
    with open(os.path.join(out, "heldout_excerpt.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(held_lines[:25]) + "\n")  # the book of Jude

    # ---- evaluation on the exported checkpoint
    def load(dtype, attn, device):
        m = LlamaForCausalLM.from_pretrained(out, dtype=dtype, attn_implementation=attn).to(device)
        return m.eval()

    def text_ids(path):
        with open(path, encoding="utf-8") as f:
            return [bos_id] + tok.encode(f.read(), add_special_tokens=False).ids

    held_ids = text_ids(os.path.join(out, "heldout.txt"))
    exc_ids = text_ids(os.path.join(out, "heldout_excerpt.txt"))
    m32 = load(torch.float32, "eager", dev)
    ppl32, cnt, nll = perplexity(m32, held_ids, args.window, args.stride, dev)
    eppl32, ecnt, enll = perplexity(m32, exc_ids, args.window, args.stride, dev)
    mcpu = load(torch.float32, "eager", "cpu")
    eppl_cpu, _, _ = perplexity(mcpu, exc_ids, args.window, args.stride, "cpu")
    m16 = load(torch.bfloat16, "sdpa", dev)
    ppl16, _, _ = perplexity(m16, held_ids, args.window, args.stride, dev)
    eppl16, _, _ = perplexity(m16, exc_ids, args.window, args.stride, dev)
    log(f"held-out ppl f32 {ppl32:.4f} over {cnt} tokens (bf16 {ppl16:.4f}); "
        f"excerpt ppl f32 {eppl32:.4f} gpu / {eppl_cpu:.4f} cpu over {ecnt} tokens (bf16 {eppl16:.4f})")

    prompt = "And God said"
    p_ids = [bos_id] + tok.encode(prompt, add_special_tokens=False).ids
    g_ids = greedy(m32, p_ids, 64, dev)
    s_ids = sample(m32, p_ids, 64, dev)
    g_txt = tok.decode(g_ids, skip_special_tokens=False)
    s_txt = tok.decode(s_ids, skip_special_tokens=False)
    log("greedy :", repr(prompt + g_txt))
    log("sampled:", repr(prompt + s_txt))

    ev = {
        "model": "models/kjv",
        "corpus": "King James Bible, Debian bible-kjv 4.38 (`bible -f RANGE`, verse references "
                  "stripped, one verse per line): tools/train_default_model/make_corpus.sh",
        "train_books": "Gen1:1-Jas5:20", "val_books": "1Pet1:1-3John1:14 (checkpoint selection)",
        "heldout_books": "Jude1:1-Rev22:21 (never trained on)",
        "heldout_file": "models/kjv/heldout.txt",
        "heldout_excerpt_file": "models/kjv/heldout_excerpt.txt (the book of Jude, first 25 lines)",
        "method": ("ids = [<|begin_of_text|> (id %d)] + tokenizer(text of the whole file, no special "
                   "tokens); windows [begin, min(begin+%d, N)) for begin = 0, %d, 2*%d, ... until a "
                   "window reaches N; in each window the tokens t with max(prev_end, begin+1) <= t < end "
                   "are scored (log-softmax of the logits at t-1, float64), prev_end = end; "
                   "ppl = exp(sum NLL / count), count = N-1") % (bos_id, args.window, args.stride, args.stride),
        "window": args.window, "stride": args.stride,
        "heldout_tokens_scored": cnt, "heldout_nll_sum": nll,
        "heldout_ppl_f32": ppl32, "heldout_ppl_bf16_gpu_sdpa": ppl16,
        "excerpt_tokens_scored": ecnt, "excerpt_nll_sum": enll,
        "excerpt_ppl_f32": eppl32, "excerpt_ppl_f32_cpu": eppl_cpu, "excerpt_ppl_bf16_gpu_sdpa": eppl16,
        "f32_note": "f32 = the exported bf16 weights upcast to float32, eager attention, TF32 off",
        "sample_prompt": prompt, "sample_prompt_ids": p_ids,
        "sample_greedy_ids": g_ids, "sample_greedy": prompt + g_txt,
        "sample_topk40_t0.8_seed0": prompt + s_txt,
        "train": {"seed": SEED, "steps_run": total, "best_step": best[1], "best_val_loss": best[0],
                  "batch": args.batch, "seq": T, "lr": args.lr, "warmup": args.warmup,
                  "schedule": "linear warmup, cosine to 10%", "optimizer": "AdamW b=(0.9,0.95) wd=0.1 "
                  "on matrices, grad clip 1.0, bf16 autocast, attention dropout %.2f" % args.dropout,
                  "train_tokens": len(train_stream), "val_tokens": len(val_stream),
                  "seconds": round(train_seconds, 1), "gpu": torch.cuda.get_device_name(),
                  "history_step_train_val": hist},
        "params": nparams,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
        "sha256": {f: sha256(os.path.join(out, f)) for f in ("model.safetensors", "tokenizer.json")},
        "remake": "tools/train_default_model/make_corpus.sh .corpus && python3 "
                  "tools/train_default_model/train.py --corpus .corpus --out models/kjv --steps %d --dropout %g --lr %g"
                  % (total, args.dropout, args.lr),
    }
    with open(os.path.join(out, "eval.json"), "w", encoding="utf-8") as f:
        json.dump(ev, f, indent=2, ensure_ascii=False)
        f.write("\n")
    log(f"done in {time.time() - t_start:.0f}s; files: " +
        ", ".join(f"{f} {os.path.getsize(os.path.join(out, f))}" for f in sorted(os.listdir(out))))


if __name__ == "__main__":
    main()
