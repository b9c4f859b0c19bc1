"""The distributed runtime under stress (issue: distributed runtime on CPU
ranks): the non-blocking PP loop, warmup agreed across ranks with injected
faults, and rank death — all with real processes."""
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from dist_common import (BINARY, alive, base_env, children_of, golden, json_lines, model_dir, run_job,
                         write_batch)

MODEL = model_dir("default")


def greedy_args(batch, max_tokens=8, extra=()):
    return ["generate", "--model", MODEL, "--batch-file", batch, "--json", "--temperature", "0", "--max-tokens",
            str(max_tokens), "--ignore-eos"] + list(extra)


def read_trace(path):
    retire, execs, sampled = [], {}, {}
    with open(path) as f:
        for line in f:
            if line.startswith("it "):
                retire.append(line.split(" ", 2)[2].strip())
            elif line.startswith("exec mb"):
                _, _, mb, _, t = line.split()
                execs[int(mb)] = int(t)
            elif line.startswith("sampled mb"):
                _, _, mb, _, t = line.split()
                sampled[int(mb)] = int(t)
    return retire, execs, sampled


class PipelineTransportFlag(unittest.TestCase):
    """--pp-transport: auto (the default) is the host relay on CPU ranks; a
    value the job cannot honour is an error every rank reports, never a hang."""

    def test_auto_runs_and_bad_values_fail_on_every_rank(self):
        batch = write_batch([[5, 6, 7]])
        # The bound is above the job's own 120 s connect bound, so a rendezvous
        # failure shows as the job's message, not as this harness's timeout.
        code, out, err = run_job("torchrun", 1, 2, greedy_args(batch, 3, ["--pp-transport", "auto"]), timeout=180)
        self.assertEqual(code, 0, err[-3000:])
        self.assertEqual(len(json_lines(out)), 1)
        for value, message in (("nccl", "--pp-transport nccl needs --device cuda"),
                               ("carrier-pigeon", "--pp-transport must be auto, host or nccl")):
            code, _, err = run_job("torchrun", 1, 2, greedy_args(batch, 3, ["--pp-transport", value]), timeout=60)
            self.assertNotEqual(code, 0, value)
            self.assertGreaterEqual(err.count(message), 2, err[-3000:])  # both ranks say why


class PipelineLoop(unittest.TestCase):
    def run_pp2(self, sync):
        prompts = [[(7 * i + j) % 500 + 1 for j in range(3 + i)] for i in range(8)]
        batch = write_batch(prompts)
        trace = tempfile.mkdtemp()
        # A 16-token budget splits the prefills over several micro-batches.
        extra = ["--max-num-batched-tokens", "16", "--log-level", "info"] + (["--pp-sync"] if sync else [])
        code, out, err = run_job("self", 1, 2, greedy_args(batch, 12, extra),
                                 {"SHARDLM_TRACE_DIR": trace, "SHARDLM_FAULT_SAMPLE_DELAY_MS": "100"})
        self.assertEqual(code, 0, err[-4000:])
        m = re.search(r"at most (\d+) in flight", err)
        self.assertIsNotNone(m, err[-2000:])
        return [r["token_ids"] for r in json_lines(out)], int(m.group(1)), trace

    def test_nonblocking_and_sync_agree(self):
        tokens, in_flight, trace = self.run_pp2(sync=False)
        self.assertEqual(len(tokens), 8)
        # Rank 0 kept scheduling while the last stage was still sampling.
        self.assertGreaterEqual(in_flight, 2)
        r0, exec0, _ = read_trace(os.path.join(trace, "rank0.trace"))
        r1, _, sampled1 = read_trace(os.path.join(trace, "rank1.trace"))
        overlapped = [mb for mb in sampled1 if mb + 1 in exec0 and exec0[mb + 1] < sampled1[mb]]
        self.assertTrue(overlapped, "rank 0 never ran a micro-batch while rank 1 was sampling the previous one")
        # Every rank retired the same requests in the same order.
        self.assertEqual(r0, r1)
        self.assertTrue(r0)
        sync_tokens, sync_in_flight, _ = self.run_pp2(sync=True)
        self.assertEqual(sync_in_flight, 1)
        self.assertEqual(sync_tokens, tokens)


class Warmup(unittest.TestCase):
    def test_low_memory_on_one_rank_skips_shape_everywhere(self):
        g = golden("default")
        batch = write_batch([p["ids"] for p in g["prompts"]])
        code, out, err = run_job("self", 2, 1, greedy_args(batch, 16, ["--max-num-batched-tokens", "64"]),
                                 {"SHARDLM_FAULT_LOW_MEMORY": "1:4,1:16"})
        self.assertEqual(code, 0, err[-4000:])
        for shape in (4, 16):
            lines = [l for l in err.splitlines() if f"skipping shape {shape} on every rank" in l]
            self.assertEqual(len(lines), 2, f"shape {shape}: {lines}")  # one per rank
            self.assertTrue(any("this rank (1) is not ready" in l for l in lines))
        self.assertNotIn("skipping shape 8", err)
        self.assertEqual([r["token_ids"] for r in json_lines(out)], [p["greedy"] for p in g["prompts"]])

    def check_forward_failure(self, index, tp, pp):
        batch = write_batch([[1, 2, 3, 4, 5]] * 4)
        start = time.time()
        code, out, err = run_job("self", tp, pp, greedy_args(batch, 32, ["--max-num-batched-tokens", "64"]),
                                 {"SHARDLM_FAULT_FORWARD_FAIL": f"1:{index}"}, timeout=60)
        self.assertNotEqual(code, 0)
        self.assertIn("rank 1", err)
        self.assertIn("injected failure", err)
        self.assertLess(time.time() - start, 30)

    def test_failure_in_warmup_forward(self):
        self.check_forward_failure(2, 2, 1)

    def test_failure_in_serving_forward(self):
        # 7 warmup shapes (1..64) run first, so forward #9 is a real step.
        self.check_forward_failure(9, 1, 2)


class RankDeath(unittest.TestCase):
    def start_long_job(self, trace):
        batch = write_batch([[1, 2, 3]] * 2)
        env = base_env({"SHARDLM_TRACE_DIR": trace, "SHARDLM_FAULT_SAMPLE_DELAY_MS": "50"})
        p = subprocess.Popen([BINARY] + greedy_args(batch, 400) + ["--tp", "2", "--pp", "2"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline and len(glob.glob(os.path.join(trace, "rank*.trace"))) < 4:
            time.sleep(0.2)
        time.sleep(2)  # mid-generation
        self.assertIsNone(p.poll(), "the job ended before the kill")
        pids = {}
        for f in glob.glob(os.path.join(trace, "*.pid")):
            with open(f) as fh:
                pids[int(os.path.basename(f)[4:-4])] = int(fh.read())
        self.assertEqual(len(pids), 4)
        return p, pids

    def assert_all_gone(self, pids, within):
        deadline = time.time() + within
        while time.time() < deadline and any(alive(x) for x in pids):
            time.sleep(0.1)
        self.assertFalse([x for x in pids if alive(x)], "ranks left behind")

    def test_kill_worker(self):
        p, pids = self.start_long_job(tempfile.mkdtemp())
        os.kill(pids[3], signal.SIGKILL)
        t0 = time.time()
        out, err = p.communicate(timeout=30)
        self.assertLess(time.time() - t0, 10, err[-3000:])
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(err, r"rank 3")
        self.assert_all_gone(pids.values(), 10)

    def test_kill_rank0(self):
        p, pids = self.start_long_job(tempfile.mkdtemp())
        os.kill(pids[0], signal.SIGKILL)
        p.communicate(timeout=30)
        self.assert_all_gone(pids.values(), 10)


if __name__ == "__main__":
    unittest.main(verbosity=2)
