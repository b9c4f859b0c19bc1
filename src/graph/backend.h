// The backend interface (DESIGN §2): one implementation per device kind (CPU
// reference, CUDA). A backend owns the weights of its rank, the paged KV cache
// and the activation buffers, and runs a Program for a StepInput. The CPU
// backend is the oracle every other backend is tested against.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "comm/communicator.h"
#include "graph/program.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tensor/tensor.h"

namespace shardlm::graph {

struct KvCacheShape {
  int64_t num_layers = 0;  // layers of this stage
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t nkv_heads = 0;   // local
  int64_t head_dim = 0;
  // Bytes for K and V of all layers.
  int64_t bytes(size_t elem_size) const {
    return 2 * num_layers * num_blocks * block_size * nkv_heads * head_dim * static_cast<int64_t>(elem_size);
  }
};

// One block of a random (dummy) weight: rows [row0, row0 + rows) × columns
// [col0, col0 + cols) of a full [·, full_cols] tensor whose element (r, c) is
// the counter hash of (seed, r · full_cols + c) (kernels/cpu random_fill.cpp),
// written at row dst_row of the weight. Every backend and every shard of a
// tensor gets the same numbers.
struct RandomBlock {
  uint64_t seed = 0;
  int64_t full_cols = 1;
  int64_t row0 = 0, col0 = 0, rows = 0, cols = 0;
  int64_t dst_row = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // Takes a host tensor (any float dtype, possibly an mmap view) for weight id
  // `id` of the program; the backend converts/copies it as it needs.
  virtual Status set_weight(int id, const Tensor& host) = 0;
  // Weight `id` of `shape`: zeros, then each block filled with its random
  // numbers × `scale` (bf16 values) — `--load-format dummy`, benchmarks.
  virtual Status set_random_weight_blocks(int id, const Shape& shape, const std::vector<RandomBlock>& blocks,
                                          float scale) = 0;
  virtual Status allocate_kv_cache(const KvCacheShape& shape) = 0;
  // The tensor-parallel group for all-reduce ops (nullptr when tp == 1).
  virtual void set_tp_communicator(Communicator* comm) = 0;

  // Runs the program. On a non-first stage `stage_input` is the residual stream
  // [ntok, hidden] received from the previous stage. On a non-last stage the
  // residual stream to send is returned in `stage_output`; on the last stage the
  // logits [logit_rows, vocab] are returned in `logits` (host f32).
  virtual Status forward(const Program& program, const StepInput& step,
                         const std::vector<float>* stage_input, std::vector<float>* stage_output,
                         std::vector<float>* logits) = 0;

  // Last stage: forward(), then one token per logit row drawn where the logits
  // are (counter-based, kernels/cpu sample_row_counter and its CUDA twin), so
  // only `rows.size()` tokens leave the device instead of rows × vocab floats.
  virtual Status forward_sample(const Program& program, const StepInput& step,
                                const std::vector<float>* stage_input,
                                const std::vector<kernels::cpu::CounterSampling>& rows,
                                std::vector<int32_t>* tokens) = 0;
  // Whether forward_sample saves a device-to-host copy (the engine then uses it
  // for steps that need no logprobs or penalties). The CPU backend implements
  // forward_sample but says no: its host sampler is the reference.
  virtual bool samples_on_device() const = 0;
  // Whether this backend passes the residual stream between pipeline stages
  // itself, device to device (CUDA with GPU stage links): forward() then takes
  // no stage_input and fills no stage_output, and the caller must run the
  // micro-batches of neighbouring stages in the same order.
  virtual bool stage_io_on_device() const = 0;
};

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace shardlm::graph
