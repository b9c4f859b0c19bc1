"""`kill -9` of a worker rank under `shardlm serve --tp 2`: /health answers 503
within 10 s, then every rank exits non-zero and none is left behind."""
import os
import re
import signal
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from dist_common import BINARY, alive, base_env, children_of, model_dir


def health(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


class ServeRankDeath(unittest.TestCase):
    def test_kill_worker_under_tp2(self):
        p = subprocess.Popen([BINARY, "serve", model_dir("default"), "--tp", "2", "--port", "0", "--host",
                              "127.0.0.1", "--max-num-batched-tokens", "64"],
                             env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        port = None
        deadline = time.time() + 120
        lines = []
        while time.time() < deadline and port is None:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"listening on http://[^:]+:(\d+)", line)
            if m:
                port = int(m.group(1))
        self.assertIsNotNone(port, "".join(lines[-30:]))
        while time.time() < deadline and health(port) != 200:
            time.sleep(0.2)
        self.assertEqual(health(port), 200)
        workers = children_of(p.pid)
        self.assertEqual(len(workers), 1)
        os.kill(workers[0], signal.SIGKILL)
        t0 = time.time()
        saw_503 = False
        while time.time() - t0 < 10:
            if health(port) == 503:
                saw_503 = True
                break
            time.sleep(0.1)
        self.assertTrue(saw_503, "/health did not turn 503 within 10 s")
        code = p.wait(timeout=30)
        self.assertNotEqual(code, 0)
        self.assertFalse(alive(workers[0]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
