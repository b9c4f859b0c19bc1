"""Helpers for the distributed tests: run `shardlm generate` as a real job
under self-spawn, mpirun, srun or a torchrun-style environment, and read the
goldens of the engine-core issue."""
import json
import math
import os
import random
import signal
import socket
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
    """A MASTER_PORT for one job: below the kernel's ephemeral range (where no
    outgoing connection can be holding it; CI once drew a port an outgoing
    loopback connection held, rank 0 refused to start and the other rank waited
    out its connect bound) and free when drawn."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low = 20000 if ephemeral_low > 21000 else 1024
    high = ephemeral_low - 1 if ephemeral_low > 21000 else 20000
    for _ in range(100):
        port = random.randint(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    raise RuntimeError("free_port: no free port found in 100 draws")


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
        deadline = time.time() + timeout
        try:
            outs = [p.communicate(timeout=max(1.0, deadline - time.time())) for p in procs]
        except subprocess.TimeoutExpired:
            # Report what the ranks said instead of a bare TimeoutExpired.
            for p in procs:
                p.kill()
            outs = [p.communicate() for p in procs]
            return -9, outs[0][0], f"run_job: ranks still running after {timeout} s; killed\n" + "".join(o[1] for o in outs)
        code = max(p.returncode for p in procs) if all(p.returncode >= 0 for p in procs) else -1
        return code, outs[0][0], "".join(o[1] for o in outs)
    if launcher in ("mpirun", "srun") and n > 1:
        env["MASTER_ADDR"] = "127.0.0.1"
        env["MASTER_PORT"] = str(free_port())
    try:
        p = subprocess.run(launch_cmd(launcher, n, full), env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        said = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return -9, "", f"run_job: job still running after {timeout} s; killed\n" + said
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
