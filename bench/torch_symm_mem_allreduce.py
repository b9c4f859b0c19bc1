#!/usr/bin/env python3
"""torch symmetric-memory all-reduce timings, the peer of `shardlm bench allreduce`.

Run one process per GPU with torchrun (bench/run_gpu_comm.sh does it):
    TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NCCL_NVLS_ENABLE=0 \
        torchrun --nproc-per-node 2 bench/torch_symm_mem_allreduce.py [--min 4096] [--max 268435456]

Per size (bf16, ×2 steps) it times torch.ops.symm_mem.one_shot_all_reduce and
torch.ops.symm_mem.two_shot_all_reduce_ the way the C++ bench times its
algorithms: CUDA-graph replays of back-to-back calls (eager when capture
fails, marked "eager"), and prints latency and algorithm bandwidth. Multicast
stays off (TORCH_SYMM_MEM_DISABLE_MULTICAST=1 is forced below): on the lent
machines NVLink multicast can take the host's GPUs out of service.
"""
import argparse
import json
import os

os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] = "1"
os.environ.setdefault("NCCL_NVLS_ENABLE", "0")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.distributed._symmetric_memory as symm_mem  # noqa: E402


def time_op(fn, calls, reps):
    """Seconds per call and the mode ("graph" or "eager")."""
    torch.cuda.synchronize()
    dist.barrier()
    try:
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(calls):
                fn()
        for _ in range(3):
            g.replay()
        torch.cuda.synchronize()
        dist.barrier()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            g.replay()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) * 1e-3 / (calls * reps), "graph"
    except Exception as e:  # capture unsupported for this op/version: time eagerly
        if dist.get_rank() == 0:
            print(f"  (graph capture failed: {type(e).__name__}: {e}; timing eagerly)", flush=True)
        torch.cuda.synchronize()
        dist.barrier()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(calls * reps):
            fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) * 1e-3 / (calls * reps), "eager"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--min", type=int, default=4096)
    ap.add_argument("--max", type=int, default=256 << 20)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    group = dist.group.WORLD
    group_name = group.group_name
    if hasattr(symm_mem, "enable_symm_mem_for_group"):
        symm_mem.enable_symm_mem_for_group(group_name)
    rank, world = dist.get_rank(), dist.get_world_size()
    buf = symm_mem.empty(args.max // 2, dtype=torch.bfloat16, device=f"cuda:{local}")
    symm_mem.rendezvous(buf, group_name)
    buf.zero_()
    out = torch.empty_like(buf)
    if rank == 0:
        print(f"torch {torch.__version__} symmetric memory, {world} ranks, bf16, multicast off", flush=True)
        print(f"{'size':>10} | {'one-shot us':>11} {'GB/s':>7} | {'two-shot us':>11} {'GB/s':>7} | mode", flush=True)
    rows = []
    size = args.min
    while size <= args.max:
        n = size // 2
        t = buf[:n]
        calls = 50 if size <= (1 << 20) else 10 if size <= (16 << 20) else 2
        reps = 20 if size <= (16 << 20) else 5
        res = {}
        for name, fn in (
            ("one_shot", lambda: torch.ops.symm_mem.one_shot_all_reduce(t, "sum", group_name)),
            ("two_shot", lambda: torch.ops.symm_mem.two_shot_all_reduce_(t, "sum", group_name)),
        ):
            try:
                res[name] = time_op(fn, calls, reps)
            except Exception as e:  # e.g. a size over the op's limit
                res[name] = (None, f"failed: {type(e).__name__}: {str(e)[:80]}")
        if rank == 0:
            def cell(x):
                return f"{'-':>11} {'-':>7}" if x[0] is None else f"{x[0] * 1e6:11.2f} {size / x[0] / 1e9:7.1f}"
            label = size >= (1 << 20) and f"{size >> 20} MB" or f"{size >> 10} KB"
            print(f"{label:>10} | {cell(res['one_shot'])} | {cell(res['two_shot'])} | "
                  f"{res['one_shot'][1]}/{res['two_shot'][1]}", flush=True)
        rows.append({"bytes": size, **{k: (v[0] * 1e6 if v[0] else None) for k, v in res.items()}})
        size *= 2
    if rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
