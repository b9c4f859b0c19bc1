"""Helpers for the distributed tests: run `shardlm generate` as a real job
under self-spawn, mpirun, srun or a torchrun-style environment, and read the
goldens of the engine-core issue."""
import json
import math
import os
import random
import signal
import subprocess
import tempfile
import time

SOURCE_DIR = os.environ["SHARDLM_SOURCE_DIR"]
BINARY = os.path.join(os.environ["SHARDLM_BINARY_DIR"], "shardlm")


def golden(name):
    with open(os.path.join(SOURCE_DIR, "tests/data/models", name, "goldens.json")) as f:
        return json.load(f)


def model_dir(name):
    d = os.path.join(SOURCE_DIR, "tests/data/models", name)
    return d if os.path.exists(os.path.join(d, "config.json")) else os.path.join(SOURCE_DIR, "models", name)


def free_port():
    # A random high port for MASTER_PORT; collisions between concurrent tests are
    # unlikely and show up as a clear rendezvous error, never as a wrong answer.
    return random.randint(20000, 60000)


def base_env(extra=None):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "SLURM_", "OMPI_", "PMI_", "SHARDLM_RANK",
                         "SHARDLM_WORLD", "SHARDLM_LOCAL", "SHARDLM_MASTER", "SHARDLM_JOB")):
            del env[k]
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    env["SHARDLM_NUM_THREADS"] = "1"  # several ranks share 2 cores
    if extra:
        env.update(extra)
    return env


def launch_cmd(launcher, n, args):
    """The command line that starts an n-rank job of `shardlm args`."""
    if launcher == "self":
        return [BINARY] + args
    if launcher == "mpirun":
        return ["mpirun", "-n", str(n), "--oversubscribe", "--bind-to", "none", BINARY] + args
    if launcher == "srun":
        return ["srun", "-n", str(n), "-O", "--kill-on-bad-exit=1", BINARY] + args
    raise ValueError(launcher)


def run_job(launcher, tp, pp, args, extra_env=None, timeout=180):
    """Runs one job; returns (returncode, stdout, stderr)."""
    n = tp * pp
    full = args + ["--tp", str(tp), "--pp", str(pp)]
    env = base_env(extra_env)
    if launcher == "torchrun":
        # torchrun-style: the test is the launcher; one process per rank.
        port = free_port()
        procs = []
        for r in range(n):
            e = dict(env, RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                     MASTER_PORT=str(port))
            procs.append(subprocess.Popen([BINARY] + full, env=e, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=timeout) for p in procs]
        code = max(p.returncode for p in procs) if all(p.returncode >= 0 for p in procs) else -1
        return code, outs[0][0], "".join(o[1] for o in outs)
    if launcher in ("mpirun", "srun") and n > 1:
        env["MASTER_ADDR"] = "127.0.0.1"
        env["MASTER_PORT"] = str(free_port())
    p = subprocess.run(launch_cmd(launcher, n, full), env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def json_lines(stdout):
    return [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]


def log_softmax(row):
    m = max(row)
    s = sum(math.exp(v - m) for v in row)
    return [v - m - math.log(s) for v in row]


def write_batch(prompts):
    f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    for ids in prompts:
        f.write(json.dumps({"prompt_ids": ids}) + "\n")
    f.close()
    return f.name


def children_of(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie counts as gone: it has exited and only waits to be reaped.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
