#!/usr/bin/env bash
# Builds the GPU binaries here (nvcc is here; the GPU machine lacks shardlm's
# C++ dependencies) and copies them, stripped, with the non-glibc shared
# libraries they load (not libnccl: 218 MB, the device has NCCL) into a carry
# folder for the device tool (it carries at most 64 MiB with the working tree).
#   bash bench/make_gpu_carry.sh [DIR [BUILD [BINARY…]]]
# BINARY: paths under BUILD (the ninja target is the file name). Defaults:
# .gpu-carry, build-cuda, shardlm + the CUDA kernel and model tests (what
# bench/gpu_run.sh runs). DIR/source_dir records this checkout: the test
# binaries read their data under the source dir they were built in.
set -euo pipefail
C=${1:-.gpu-carry}
B=${2:-build-cuda}
shift $(( $# < 2 ? $# : 2 ))
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(shardlm tests/cuda/cuda_kernels_test tests/cuda/cuda_model_test)
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$B" "${bins[@]##*/}"
rm -rf "$C" && mkdir -p "$C/bin" "$C/lib"
for b in "${bins[@]}"; do cp "$B/$b" "$C/bin/"; done
strip "$C"/bin/*
pwd > "$C/source_dir"
for f in "$C"/bin/*; do ldd "$f"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|librt|libpthread|libresolv|ld-linux[^/]*)\.so|/usr/local/cuda|libnccl' |
  while read -r l; do cp -L "$l" "$C/lib/"; done
grep -qx "/$C/" .git/info/exclude 2>/dev/null || echo "/$C/" >> .git/info/exclude
du -sh "$C"
