#include "runtime/sequence.h"

namespace shardlm {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStopToken:
    case FinishReason::kStopString:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAborted:
      return "abort";
    case FinishReason::kNone:
      break;
  }
  return "";
}

}  // namespace shardlm
