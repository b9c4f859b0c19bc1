#!/usr/bin/env bash
# Builds the tokenizer libFuzzer targets with clang (-fsanitize=fuzzer,address,
# undefined) and runs each for a bounded time on its seed corpus.
#
#   bash fuzz/run_fuzz.sh [SECONDS_PER_TARGET]   (default 30; 3 targets)
#
# Build output goes to $SHARDLM_FUZZ_BUILD_DIR (default build-fuzz/), rebuilt
# incrementally. Exits non-zero when a target crashes, leaks, hits UB or a
# timeout; the crashing input is left in the build directory.
set -euo pipefail

secs="${1:-30}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${SHARDLM_FUZZ_BUILD_DIR:-$repo/build-fuzz}"
mkdir -p "$out/obj"

cxx=""
for c in clang++-14 clang++; do
  if command -v "$c" >/dev/null 2>&1; then cxx="$c"; break; fi
done
[ -n "$cxx" ] || { echo "run_fuzz: clang++ not found (scripts/install_deps.sh installs clang)" >&2; exit 1; }

flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
       -I"$repo/src" -DSHARDLM_SOURCE_DIR="\"$repo\"" $(pkg-config --cflags libpcre2-8 fmt 2>/dev/null || true))
libs=($(pkg-config --libs libpcre2-8 fmt 2>/dev/null || echo -lpcre2-8 -lfmt) -lutf8proc)

sources=("$repo"/src/tokenizer/*.cpp "$repo/src/base/status.cpp")
newest_header=$(ls -t "$repo"/src/tokenizer/*.h "$repo"/src/base/*.h | head -1)

# Compile the library sources (incrementally, 2 at a time).
compile() {
  local src="$1" obj="$2"
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ "$newest_header" -nt "$obj" ]; then
    echo "run_fuzz: compiling $(basename "$src")"
    "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
  fi
}
export -f compile
objs=()
pids=()
for src in "${sources[@]}"; do
  obj="$out/obj/$(basename "$src" .cpp).o"
  objs+=("$obj")
  compile "$src" "$obj" &
  pids+=($!)
  if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done

targets=(tokenizer_load_fuzz tokenizer_encode_fuzz jinja_fuzz)
for t in "${targets[@]}"; do
  bin="$out/$t"
  if [ ! -x "$bin" ] || [ "$here/$t.cpp" -nt "$bin" ] || [ "$here/fuzz_common.h" -nt "$bin" ] || \
     [ -n "$(find "${objs[@]}" -newer "$bin" 2>/dev/null | head -1)" ]; then
    echo "run_fuzz: linking $t"
    "$cxx" "${flags[@]}" -fsanitize=fuzzer "$here/$t.cpp" "${objs[@]}" "${libs[@]}" -o "$bin"
  fi
done

# Seed corpora (read-only), plus a scratch corpus per target in the build dir.
declare -A seeds=(
  [tokenizer_load_fuzz]="$repo/tests/tokenizer/fixtures"
  [tokenizer_encode_fuzz]="$here/corpus/encode"
  [jinja_fuzz]="$here/corpus/jinja"
)
status=0
for t in "${targets[@]}"; do
  work="$out/corpus_$t"
  mkdir -p "$work" "$out/artifacts"
  echo "run_fuzz: running $t for ${secs}s"
  if ! (cd "$out" && "./$t" "$work" "${seeds[$t]}" -max_total_time="$secs" -timeout=60 -rss_limit_mb=2048 \
          -max_len=8192 -print_final_stats=1 -artifact_prefix="$out/artifacts/$t-" 2>"$out/$t.log"); then
    echo "run_fuzz: $t FAILED; last lines of $out/$t.log:" >&2
    tail -40 "$out/$t.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$out/$t.log" | tail -2 | sed "s/^/run_fuzz: $t: /"
  fi
done
[ $status -eq 0 ] && echo "run_fuzz: all targets ran ${secs}s without a crash"
exit $status
