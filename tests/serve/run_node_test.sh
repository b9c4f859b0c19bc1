#!/usr/bin/env bash
# ctest wrapper for the node tests: checks the `openai` npm package that
# tests/serve/setup_openai_client.sh installs. Missing → fail, unless
# SHARDLM_SKIP_NETWORK_TESTS=1 → skip (exit 77, ctest's SKIP_RETURN_CODE).
#   run_node_test.sh TEST_FILE.mjs [needs-openai]
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
file="$1"
needs_openai="${2:-}"
if ! command -v node >/dev/null 2>&1; then
  [ "${SHARDLM_SKIP_NETWORK_TESTS:-0}" = 1 ] && { echo "SKIP: node is not installed"; exit 77; }
  echo "FAIL: node is not installed (scripts/install_deps.sh installs it)" >&2; exit 1
fi
if [ -n "$needs_openai" ] && [ ! -f "$here/node_modules/openai/package.json" ]; then
  if [ "${SHARDLM_SKIP_NETWORK_TESTS:-0}" = 1 ]; then
    echo "SKIP: the openai npm package is missing and SHARDLM_SKIP_NETWORK_TESTS=1"; exit 77
  fi
  echo "FAIL: the openai npm package is missing: run bash tests/serve/setup_openai_client.sh" >&2
  echo "      (or set SHARDLM_SKIP_NETWORK_TESTS=1 to skip the tests that need the network)" >&2
  exit 1
fi
# The load tests open ~1200 sockets on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec node --test --test-reporter=spec "$here/$file"
