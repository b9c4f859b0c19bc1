// Symmetric buffers (DESIGN §3.3, issue 6 item 2): every rank of a group
// allocates a workspace of the same size and maps every peer's, so a kernel
// can store straight into a peer's memory over NVLink.
//
// Two mechanisms, picked per process at create():
//   fabric  cuMemCreate(CU_MEM_HANDLE_TYPE_FABRIC) + cuMemExportToShareableHandle:
//           works across the nodes of one NVLink domain (GB200 NVL72). Used only
//           when cuDeviceGetAttribute(CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED)
//           is 1 on this device (and SHARDLM_SYMM_FABRIC is not 0), our own
//           fabric allocation + export actually works (the lent 2×H200 report
//           the attribute as 1 yet refuse cuMemCreate(FABRIC): "operation not
//           permitted", no IMEX channel), and every rank of the group says so
//           (agreed through the rendezvous); otherwise IPC.
//   ipc     cudaMalloc + cudaIpcGetMemHandle / cudaIpcOpenMemHandle: one node.
// The handles travel through the rendezvous (hex strings under
// "<prefix>/symm/<name>/<rank>"). Multicast objects are never created.
// describe() says which mechanism was used and how fabric support was checked.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace shardlm {

class Rendezvous;

// A communication group as the rendezvous sees it: ranks are global rendezvous
// ranks; `index` is ours within `ranks`. Keys are namespaced by `prefix`.
struct CommGroup {
  Rendezvous* rv = nullptr;
  std::string prefix = "tp0";
  std::vector<int> ranks;  // global ranks of the group, group order
  int index = 0;           // our position in `ranks`
  int size() const { return static_cast<int>(ranks.size()); }
};

class SymmetricBuffer {
 public:
  // Collective over the group: allocates `bytes` on `device` (the current
  // device must already be it), exchanges handles, maps every peer. Bounded by
  // the rendezvous timeout `timeout_s`.
  static Expected<std::unique_ptr<SymmetricBuffer>> create(const CommGroup& group, const std::string& name,
                                                           size_t bytes, int device, double timeout_s = 120);
  ~SymmetricBuffer();
  SymmetricBuffer(const SymmetricBuffer&) = delete;
  SymmetricBuffer& operator=(const SymmetricBuffer&) = delete;

  void* local() const { return peers_[index_]; }
  void* peer(int i) const { return peers_[i]; }  // i: group index; peer(index()) == local()
  const std::vector<void*>& peers() const { return peers_; }
  size_t bytes() const { return bytes_; }
  int index() const { return index_; }
  int size() const { return static_cast<int>(peers_.size()); }
  bool fabric() const { return fabric_; }
  const std::string& describe() const { return describe_; }

 private:
  SymmetricBuffer() = default;
  Status create_ipc(const CommGroup& g, const std::string& key, double timeout_s);
  Status fabric_local();  // our allocation: create + map + export
  Status fabric_map(unsigned long long handle, void** out);
  Status fabric_import(const CommGroup& g, const std::string& key, double timeout_s);
  void release_fabric();  // unmaps and releases whatever the fabric path made

  size_t bytes_ = 0;
  size_t mapped_bytes_ = 0;  // fabric: rounded to the allocation granularity
  size_t granularity_ = 0;
  std::string fabric_export_;  // hex CUmemFabricHandle of our allocation
  int index_ = 0;
  int device_ = 0;
  bool fabric_ = false;
  std::vector<void*> peers_;
  std::vector<unsigned long long> fabric_handles_;  // CUmemGenericAllocationHandle per rank
  std::string describe_;
};

// Checks the fabric-handle attribute of `device` and says how (for logs/doctor).
struct FabricSupport {
  bool supported = false;
  std::string how;
};
FabricSupport check_fabric_support(int device);

}  // namespace shardlm
