#include "graph/program.h"

#include <fmt/format.h>

namespace shardlm::graph {

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::kEmbedding: return "embedding";
    case OpKind::kRMSNorm: return "rmsnorm";
    case OpKind::kAdd: return "add";
    case OpKind::kAddRMSNorm: return "add_rmsnorm";
    case OpKind::kLinear: return "linear";
    case OpKind::kHeadRMSNorm: return "head_rmsnorm";
    case OpKind::kRoPE: return "rope";
    case OpKind::kAttention: return "attention";
    case OpKind::kSiLUMul: return "silu_mul";
    case OpKind::kAllReduce: return "all_reduce";
    case OpKind::kAllReduceAddRMSNorm: return "all_reduce_add_rmsnorm";
    case OpKind::kRoPEAttention: return "rope_attention";
    case OpKind::kLinearSiLUMul: return "linear_silu_mul";
    case OpKind::kGatherRows: return "gather_rows";
    case OpKind::kAllGatherColumns: return "all_gather_columns";
  }
  return "?";
}

int Program::add_buffer(const std::string& name, int64_t width, RowSpace rows) {
  buffers.push_back(Buffer{name, width, rows});
  return static_cast<int>(buffers.size()) - 1;
}

int Program::add_weight(const std::string& name) {
  weights.push_back(name);
  return static_cast<int>(weights.size()) - 1;
}

int Program::find_buffer(const std::string& name) const {
  for (size_t i = 0; i < buffers.size(); ++i)
    if (buffers[i].name == name) return static_cast<int>(i);
  return -1;
}

std::string Program::to_string() const {
  std::string s = fmt::format("program for {} — layers {}..{}, {} ops\n", mapping.str(), first_layer,
                              first_layer + num_layers_local - 1, ops.size());
  auto bname = [&](int b) { return b < 0 ? std::string("-") : buffers[b].name; };
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    std::string w;
    for (int id : op.weights) w += (w.empty() ? "" : ", ") + weights[id];
    s += fmt::format("{:4d}  {:<24s} {}{}{} -> {}{}\n", i, op_kind_name(op.kind),
                     op.layer >= 0 ? fmt::format("L{} ", op.layer) : std::string(), bname(op.in),
                     op.in2 >= 0 ? ", " + bname(op.in2) : std::string(), bname(op.out),
                     w.empty() ? std::string() : "  [" + w + "]");
  }
  return s;
}

}  // namespace shardlm::graph
