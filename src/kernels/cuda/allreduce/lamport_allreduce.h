// Lamport all-reduce kernels (DESIGN §3.3): raw device pointers + a stream; no
// engine headers. The host side that owns the buffers and flags is
// comm/lamport_allreduce.h; this header only launches.
//
// Workspace layout (identical on every rank; peer_ws[r] is rank r's workspace
// as mapped in this process, peer_ws[rank] our own):
//   3 groups × [ stage0: world slots × capacity_bytes | stage1: capacity_bytes ]
//   stage0 slot s holds what rank s pushed to us (one-shot: its whole input;
//   two-shot: the vectors/rows we own); stage1 is the two-shot broadcast stage
//   (the reduced sums every owner unicast-stored into us).
// Every byte of a group is the dtype's −0.0 pattern ("not arrived") until a
// peer stores real data; inputs equal to −0 are stored as +0.
//
// Device flags (this rank's, uint32[kLamportFlagCount], not shared):
//   kCurGroup   group written by the next call (0..2)
//   kClearGroup group the next call clears (the previous call's)
//   kClearVecs  16-byte vectors per slot the previous call used (what to clear)
//   kCounter    blocks finished in the running call; the last one advances the
//               three fields above and resets it
//   kError      0, or (op << 16) | (1 + rank waited for) after a timed-out wait
//   kCapacity   capacity_bytes / 16 (for the host's checks and for messages)
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace shardlm::kernels::cuda {

constexpr int kLamportMaxRanks = 64;
enum LamportFlag : int { kCurGroup = 0, kClearGroup, kClearVecs, kCounter, kError, kCapacity, kLamportFlagCount = 8 };
enum class LamportDType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };
// Op codes stored in the error flag, so the host can name the op that timed out.
enum LamportOp : int { kOpOneShot = 1, kOpTwoShot = 2, kOpFusedOneShot = 3, kOpFusedTwoShot = 4 };

struct LamportParams {
  void* peer_ws[kLamportMaxRanks] = {};  // rank r's workspace in our address space
  uint32_t* flags = nullptr;              // this rank's device flags
  int rank = 0;
  int world = 1;
  size_t capacity_bytes = 0;              // one slot; a multiple of 16
  unsigned long long timeout_ns = 10ull * 1000 * 1000 * 1000;
  int max_blocks = 132;                   // ≤ co-resident blocks (two phases spin)
  bool pdl = true;                        // programmatic dependent launch
  // Fused calls of up to this many rows whose row fits one vector per thread
  // (≤ 1024 vectors) keep the row in registers (lamport_fused_reg_kernel);
  // others loop over their row's vectors (lamport_fused_kernel).
  int fused_reg_max_rows = 1 << 30;
  // Register-row kernel: a row is cut over a cluster of up to 8 blocks of
  // about this many vectors each while every row gets its own cluster.
  int fused_block_vectors = 128;
  // ... and every block of such a cluster sums the whole row itself instead
  // of exchanging its part's Σ r² through distributed shared memory
  // (lamport_fused_whole_row_kernel in lamport_fused.cu).
  bool fused_whole_row = false;
};

// Bytes a rank's workspace needs for `world` ranks and `capacity_bytes` per slot.
inline size_t lamport_workspace_bytes(int world, size_t capacity_bytes) {
  return 3 * static_cast<size_t>(world + 1) * capacity_bytes;
}

// Fills `bytes` (multiple of 4) of a workspace with the dtype's −0 pattern and
// resets `flags` (group 0 current, nothing to clear, no error).
cudaError_t lamport_init(void* ws, size_t bytes, LamportDType dt, uint32_t* flags, size_t capacity_bytes,
                         cudaStream_t stream);

// out[count] = Σ_ranks in[count] (fixed rank order, f32 accumulation).
// count × dtype size must be ≤ capacity_bytes. in == out is allowed.
cudaError_t lamport_allreduce(const LamportParams& p, LamportDType dt, const void* in, void* out, size_t count,
                              bool two_shot, cudaStream_t stream);

// Fused epilogue: s = Σ_ranks in[rows × hidden]; out_residual = s + residual;
// out = rmsnorm(out_residual) × weight[hidden]. hidden must be a multiple of
// 16 / dtype size. out_residual may alias residual; out may alias in.
cudaError_t lamport_allreduce_add_rmsnorm(const LamportParams& p, LamportDType dt, const void* in,
                                          const void* residual, const void* weight, float eps,
                                          void* out_residual, void* out, int rows, int hidden, bool two_shot,
                                          cudaStream_t stream);

}  // namespace shardlm::kernels::cuda
