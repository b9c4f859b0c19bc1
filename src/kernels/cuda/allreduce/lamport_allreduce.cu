// Lamport all-reduce (TensorRT-LLM / FlashInfer style; DESIGN §3.3).
//
// Algorithm. Every rank's workspace is mapped by every peer (CUDA IPC or cuMem
// fabric handles; comm/symmetric_buffer.h). A slot byte that still holds the
// dtype's −0.0 pattern means "not arrived": writers store inputs with −0
// replaced by +0, readers poll with volatile (L1-bypassing) 16-byte loads until
// no element of the vector has the sentinel bits (bitwise compare: a float
// compare would treat −0 == +0). The data is its own flag, so no barrier.
//   one-shot: each rank stores its whole input into slot[rank] of every
//     peer's stage0 (and its own); then each rank polls slot 0..W−1 and sums
//     in that fixed order in f32 → every rank gets bitwise-identical results.
//   two-shot: vector (plain) / row (fused) t belongs to rank t mod W. Each rank
//     stores its t-th piece into owner's stage0 slot[rank]; the owner sums the
//     W slots (fixed order, f32), rounds, and unicast-stores the sum into every
//     peer's stage1 (no multicast anywhere); every rank then polls its stage1.
// Three groups rotate mod 3: call k writes group k%3 and clears group
// (k−1)%3 (used by the previous call, fully read by us before this kernel
// started: stream order / griddepcontrol.wait). A fast peer may already be in
// call k+1 writing group (k+1)%3, cleared during call k−1, and can never be in
// k+2 (that needs our k+1 stores). The last block to finish advances the
// device flags, so CUDA-graph replays keep rotating without the host.
// Every spin-wait is bounded by %globaltimer: on expiry the thread records
// (op << 16) | (1 + awaited rank) in the error flag and every other waiter
// leaves at its next check; the host reads the flag after synchronising.
// The phases that spin need all blocks co-resident: grids are ≤ max_blocks
// (≤ SM count) and ≤ what the occupancy calculator says fits, so a spinning
// block never starves one that must store first.
// The fused all-reduce + residual + RMSNorm kernels are in lamport_fused.cu;
// the device pieces both files share in lamport_device.cuh.
#include "kernels/cuda/allreduce/lamport_allreduce.h"

#include "kernels/cuda/allreduce/lamport_device.cuh"

namespace shardlm::kernels::cuda {
using namespace lamport;
namespace {

template <int D, bool kTwoShot>
__global__ void __launch_bounds__(kPlainThreads) lamport_plain_kernel(LamportParams p, const void* in, void* out,
                                                                     size_t count) {
  pdl_wait_and_trigger();
  constexpr int N = Vec<D>::N;
  constexpr int op = kTwoShot ? kOpTwoShot : kOpOneShot;
  const Groups g = read_groups(p);
  const size_t n_vecs = (count + N - 1) / N;
  const size_t tid = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  bool failed = false;

  // 1. push
  for (size_t v = tid; v < n_vecs; v += stride)
    push_vec<kTwoShot>(p, g, static_cast<int>(v % p.world), v, load_input<D>(in, v, count));
  // 2. clear the previous call's group (ours only)
  clear_previous<D>(p, g);
  // 3. reduce
  if constexpr (!kTwoShot) {
    for (size_t v = tid; v < n_vecs; v += stride) {
      float acc[N];
      sum_slots<D>(p, g, v, op, acc, failed);
      store_output<D>(out, v, count, pack<D>(acc));
    }
  } else {
    // 3a. reduce the vectors we own, broadcast the sums into every stage1
    for (size_t v = p.rank + tid * p.world; v < n_vecs; v += stride * p.world)
      reduce_and_broadcast<D>(p, g, v, op, failed);
    // 3b. gather every sum from our stage1
    for (size_t v = tid; v < n_vecs; v += stride) {
      uint4 s = poll<D>(stage1(p.peer_ws[p.rank], g, g.cur, p.world) + v, p.flags, p.timeout_ns, op,
                        static_cast<int>(v % p.world), failed);
      store_output<D>(out, v, count, s);
    }
  }
  finish_call(p, g, static_cast<uint32_t>(n_vecs));
}

__global__ void fill_kernel(uint32_t* p, size_t words, uint32_t pattern) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < words;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    p[i] = pattern;
}
__global__ void init_flags_kernel(uint32_t* flags, uint32_t capacity_vecs) {
  for (int i = 0; i < kLamportFlagCount; ++i) flags[i] = 0;
  flags[kCurGroup] = 0;
  flags[kClearGroup] = 2;  // nothing to clear yet (kClearVecs = 0)
  flags[kCapacity] = capacity_vecs;
}

}  // namespace

cudaError_t lamport_init(void* ws, size_t bytes, LamportDType dt, uint32_t* flags, size_t capacity_bytes,
                         cudaStream_t stream) {
  const uint32_t pattern = dt == LamportDType::kF32 ? 0x80000000u : 0x80008000u;
  fill_kernel<<<1024, 256, 0, stream>>>(reinterpret_cast<uint32_t*>(ws), bytes / 4, pattern);
  init_flags_kernel<<<1, 1, 0, stream>>>(flags, static_cast<uint32_t>(capacity_bytes / 16));
  return cudaGetLastError();
}

cudaError_t lamport_allreduce(const LamportParams& p, LamportDType dt, const void* in, void* out, size_t count,
                              bool two_shot, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const int n = dt == LamportDType::kF32 ? 4 : 8;
  const size_t n_vecs = (count + n - 1) / n;
  if (n_vecs * 16 > p.capacity_bytes || p.world < 1 || p.world > kLamportMaxRanks) return cudaErrorInvalidValue;
  if ((reinterpret_cast<uintptr_t>(in) | reinterpret_cast<uintptr_t>(out)) & 15) return cudaErrorMisalignedAddress;
  size_t blocks = (n_vecs + kPlainThreads - 1) / kPlainThreads;
  if (blocks > static_cast<size_t>(p.max_blocks)) blocks = p.max_blocks;
  if (blocks < 1) blocks = 1;
  dim3 grid(static_cast<unsigned>(blocks)), block(kPlainThreads);
  switch (dt_index(dt) * 2 + (two_shot ? 1 : 0)) {
    case 0: return launch(p, lamport_plain_kernel<0, false>, grid, block, stream, p, in, out, count);
    case 1: return launch(p, lamport_plain_kernel<0, true>, grid, block, stream, p, in, out, count);
    case 2: return launch(p, lamport_plain_kernel<1, false>, grid, block, stream, p, in, out, count);
    case 3: return launch(p, lamport_plain_kernel<1, true>, grid, block, stream, p, in, out, count);
    case 4: return launch(p, lamport_plain_kernel<2, false>, grid, block, stream, p, in, out, count);
    case 5: return launch(p, lamport_plain_kernel<2, true>, grid, block, stream, p, in, out, count);
  }
  return cudaErrorInvalidValue;
}

}  // namespace shardlm::kernels::cuda
