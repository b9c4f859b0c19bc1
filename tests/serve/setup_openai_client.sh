#!/usr/bin/env bash
# Installs the official `openai` npm package into tests/serve/node_modules
# (git-ignored) for the end-to-end serve tests. Idempotent: an install of the
# pinned version is kept. Never fails the caller: if npm cannot reach the
# registry it says so, and the serve tests then fail (unless
# SHARDLM_SKIP_NETWORK_TESTS=1, which makes them skip).
#
#   bash tests/serve/setup_openai_client.sh
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Pinned so the tests see the same client everywhere (v5: no dependencies; uses the built-in fetch).
version="5.23.2"

if [ "$(node -p "require('$here/node_modules/openai/package.json').version" 2>/dev/null)" = "$version" ]; then
  echo "setup_openai_client: openai@$version present in $here/node_modules"
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "setup_openai_client: npm is not installed (scripts/install_deps.sh installs it)" >&2; exit 0; }
echo "setup_openai_client: npm install openai@$version"
if (cd "$here" && npm install --silent --no-save --no-package-lock --no-audit --no-fund "openai@$version" >/dev/null); then
  echo "setup_openai_client: openai@$version -> $here/node_modules"
else
  echo "setup_openai_client: npm install failed; the serve tests will fail (SHARDLM_SKIP_NETWORK_TESTS=1 skips them)" >&2
fi
exit 0
