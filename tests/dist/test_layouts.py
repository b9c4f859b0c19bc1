"""Same answers in every layout (issue: distributed runtime on CPU ranks):
(tp, pp) ∈ {(1,1), (2,1), (1,2), (2,2), (4,1), (1,4)} give the goldens'
greedy tokens and the goldens' logits (as top-5 log-probabilities of the first
generated token, within 1e-4) under self-spawn, mpirun, srun and a
torchrun-style environment. Launcher and layout come from the command line so
ctest runs each combination as its own test."""
import sys
import unittest

from dist_common import golden, json_lines, log_softmax, model_dir, run_job, write_batch

TOL = 1e-4  # f32 on both sides; only summation order differs (all-reduce, splits)


class Layout(unittest.TestCase):
    launcher = "self"
    tp = pp = 1
    model = "default"

    def test_goldens(self):
        g = golden(self.model)
        prompts = [p["ids"] for p in g["prompts"]]
        batch = write_batch(prompts)
        args = ["generate", "--model", model_dir(self.model), "--batch-file", batch, "--json", "--temperature", "0",
                "--max-tokens", "16", "--ignore-eos", "--logprobs", "5", "--max-num-batched-tokens", "64"]
        code, out, err = run_job(self.launcher, self.tp, self.pp, args)
        self.assertEqual(code, 0, f"exit {code}\n{err[-4000:]}")
        results = json_lines(out)
        self.assertEqual(len(results), len(prompts), out)
        for p, r in zip(g["prompts"], results):
            self.assertEqual(r["token_ids"], p["greedy"], f"greedy tokens differ for a {len(p['ids'])}-token prompt")
            want = log_softmax(p["last_logits"])
            for alt in r["logprobs"][0]["top_logprobs"]:
                self.assertAlmostEqual(alt["logprob"], want[alt["token_id"]], delta=TOL)


if __name__ == "__main__":
    Layout.launcher, Layout.tp, Layout.pp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if len(sys.argv) > 4:
        Layout.model = sys.argv[4]
    unittest.main(argv=sys.argv[:1], verbosity=2)
