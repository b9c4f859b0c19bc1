#!/usr/bin/env bash
# Builds the GPU binaries here (nvcc is here; the GPU machine lacks shardlm's
# C++ dependencies) and copies them, stripped, with the non-glibc shared
# libraries they load into .gpu-carry/ for bench/gpu_run.sh (≤ ~30 MiB; the
# device tool carries at most 64 MiB with the working tree).
set -euo pipefail
B=${1:-build-cuda}
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$B" shardlm cuda_kernels_test cuda_model_test
rm -rf .gpu-carry && mkdir -p .gpu-carry/bin .gpu-carry/lib
cp "$B/shardlm" "$B/tests/cuda/cuda_kernels_test" "$B/tests/cuda/cuda_model_test" .gpu-carry/bin/
strip .gpu-carry/bin/*
pwd > .gpu-carry/source_dir
for f in .gpu-carry/bin/*; do ldd "$f"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|librt|libpthread|libresolv|ld-linux[^/]*)\.so|/usr/local/cuda' |
  while read -r l; do cp -L "$l" .gpu-carry/lib/; done
grep -qx '/.gpu-carry/' .git/info/exclude 2>/dev/null || echo '/.gpu-carry/' >> .git/info/exclude
du -sh .gpu-carry
