// Symmetric buffers: see symmetric_buffer.h. The sequence per rank:
//   1. decide the mechanism: fabric when this device reports
//      CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED and every rank agrees
//      (each publishes "0"/"1"; all must say 1), else IPC;
//   2. allocate and export (cudaIpcMemHandle_t or CUmemFabricHandle, 64 bytes),
//      publish hex(handle) under "<prefix>/symm/<name>/<seq>/handle/<i>";
//   3. open every peer's handle; our own slot is the local pointer;
//   4. a rendezvous barrier so no rank frees while a peer still opens.
// Teardown unmaps peers before freeing our own allocation.
#include "comm/symmetric_buffer.h"

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <type_traits>
#include <cstring>

#include "base/log.h"
#include "comm/rendezvous.h"

namespace shardlm {
namespace {

// Driver API entry points, fetched through the runtime
// (cudaGetDriverEntryPointByVersion) so that nothing links libcuda: binaries
// then load on machines without a driver (test discovery on CPU builders).
struct Driver {
  decltype(&::cuGetErrorString) GetErrorString = nullptr;
  decltype(&::cuDeviceGet) DeviceGet = nullptr;
  decltype(&::cuDeviceGetAttribute) DeviceGetAttribute = nullptr;
  decltype(&::cuMemGetAllocationGranularity) MemGetAllocationGranularity = nullptr;
  decltype(&::cuMemAddressReserve) MemAddressReserve = nullptr;
  decltype(&::cuMemMap) MemMap = nullptr;
  decltype(&::cuMemSetAccess) MemSetAccess = nullptr;
  decltype(&::cuMemCreate) MemCreate = nullptr;
  decltype(&::cuMemExportToShareableHandle) MemExportToShareableHandle = nullptr;
  decltype(&::cuMemImportFromShareableHandle) MemImportFromShareableHandle = nullptr;
  decltype(&::cuMemUnmap) MemUnmap = nullptr;
  decltype(&::cuMemAddressFree) MemAddressFree = nullptr;
  decltype(&::cuMemRelease) MemRelease = nullptr;
  bool ok = false;
};
const Driver& D() {
  static const Driver d = [] {
    Driver d;
    bool ok = true;
    auto load = [&ok](const char* name, auto& fn) {
      void* p = nullptr;
      cudaDriverEntryPointQueryResult q;
      if (cudaGetDriverEntryPointByVersion(name, &p, 12000, cudaEnableDefault, &q) != cudaSuccess || !p) ok = false;
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
    };
    load("cuGetErrorString", d.GetErrorString);
    load("cuDeviceGet", d.DeviceGet);
    load("cuDeviceGetAttribute", d.DeviceGetAttribute);
    load("cuMemGetAllocationGranularity", d.MemGetAllocationGranularity);
    load("cuMemAddressReserve", d.MemAddressReserve);
    load("cuMemMap", d.MemMap);
    load("cuMemSetAccess", d.MemSetAccess);
    load("cuMemCreate", d.MemCreate);
    load("cuMemExportToShareableHandle", d.MemExportToShareableHandle);
    load("cuMemImportFromShareableHandle", d.MemImportFromShareableHandle);
    load("cuMemUnmap", d.MemUnmap);
    load("cuMemAddressFree", d.MemAddressFree);
    load("cuMemRelease", d.MemRelease);
    d.ok = ok;
    return d;
  }();
  return d;
}

std::string to_hex(const void* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<const unsigned char*>(p)[i];
    s.push_back(d[c >> 4]);
    s.push_back(d[c & 15]);
  }
  return s;
}

bool from_hex(const std::string& s, void* out, size_t n) {
  if (s.size() != 2 * n) return false;
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < n; ++i) {
    int hi = val(s[2 * i]), lo = val(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    static_cast<unsigned char*>(out)[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return true;
}

Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return make_error(ErrorCode::kInternal, "{}: {}", what, cudaGetErrorString(e));
}
Status cu_status(CUresult r, const char* what) {
  if (r == CUDA_SUCCESS) return Status::Ok();
  const char* s = nullptr;
  D().GetErrorString(r, &s);
  return make_error(ErrorCode::kInternal, "{}: {}", what, s ? s : "unknown CUresult");
}

std::string handle_key(const std::string& key, int i) { return key + "/handle/" + std::to_string(i); }

}  // namespace

FabricSupport check_fabric_support(int device) {
  FabricSupport f;
  CUdevice dev;
  cudaFree(nullptr);  // initialises the runtime (and so the driver) on the current device
  if (!D().ok || D().DeviceGet(&dev, device) != CUDA_SUCCESS) {
    f.how = "driver entry points or cuDeviceGet unavailable: fabric handles not checked, assumed unsupported";
    return f;
  }
  int v = 0;
  CUresult r = D().DeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED, dev);
  f.supported = r == CUDA_SUCCESS && v == 1;
  f.how = fmt::format("cuDeviceGetAttribute(CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED, device {}) = {}{}",
                      device, v, r == CUDA_SUCCESS ? "" : " (query failed)");
  const char* env = std::getenv("SHARDLM_SYMM_FABRIC");
  if (f.supported && env && std::string(env) == "0") {
    f.supported = false;
    f.how += "; disabled by SHARDLM_SYMM_FABRIC=0";
  }
  return f;
}

Expected<std::unique_ptr<SymmetricBuffer>> SymmetricBuffer::create(const CommGroup& g, const std::string& name,
                                                                   size_t bytes, int device, double timeout_s) {
  if (!g.rv) return make_error(ErrorCode::kInvalidArgument, "symmetric buffer {}: no rendezvous", name);
  if (g.size() < 1 || g.index < 0 || g.index >= g.size())
    return make_error(ErrorCode::kInvalidArgument, "symmetric buffer {}: bad group index {}", name, g.index);
  std::unique_ptr<SymmetricBuffer> b(new SymmetricBuffer());
  b->bytes_ = bytes;
  b->index_ = g.index;
  b->device_ = device;
  b->peers_.assign(g.size(), nullptr);
  const std::string key = fmt::format("{}/symm/{}/{}", g.prefix, name, g.rv->next_sequence(g.prefix + "/symm/" + name));

  // The attribute alone is not enough: without an IMEX channel (no fabric
  // manager, as on the lent 2×H200 machines, which report the attribute as 1)
  // cuMemCreate(FABRIC) fails with "operation not permitted". So each rank
  // tries its own fabric allocation first and votes 1 only if it worked.
  FabricSupport fs = check_fabric_support(device);
  std::string fabric_note;
  bool local_fabric = false;
  if (fs.supported) {
    Status probe = b->fabric_local();
    local_fabric = probe.ok();
    if (!local_fabric) {
      fabric_note = "; fabric allocation failed: " + probe.message() + " (no IMEX channel?)";
      b->release_fabric();
    }
  }
  SHARDLM_TRY(g.rv->set(key + "/fabric/" + std::to_string(g.index), local_fabric ? "1" : "0", timeout_s));
  bool all_fabric = true;
  for (int i = 0; i < g.size(); ++i) {
    SHARDLM_ASSIGN_OR_RETURN(std::string v, g.rv->get(key + "/fabric/" + std::to_string(i), timeout_s));
    all_fabric = all_fabric && v == "1";
  }
  if (all_fabric) {
    b->fabric_ = true;
    SHARDLM_TRY(b->fabric_import(g, key, timeout_s));
  } else {
    if (local_fabric) {
      b->release_fabric();
      fabric_note += "; a peer cannot use fabric handles";
    }
    SHARDLM_TRY(b->create_ipc(g, key, timeout_s));
  }
  b->describe_ = fmt::format("symmetric buffer '{}': {} bytes × {} ranks via {} ({}{})", name, bytes, g.size(),
                             b->fabric_ ? "cuMem fabric handles" : "CUDA IPC", fs.how, fabric_note);
  SLOG_INFO("{}", b->describe_);
  // Nobody may free (a failed peer's destructor) while another still opens.
  SHARDLM_TRY(g.rv->barrier(key + "/mapped", timeout_s, g.size()));
  return b;
}

Status SymmetricBuffer::create_ipc(const CommGroup& g, const std::string& key, double timeout_s) {
  void* mine = nullptr;
  SHARDLM_TRY(cuda_status(cudaMalloc(&mine, bytes_ ? bytes_ : 16), "cudaMalloc (symmetric buffer)"));
  peers_[index_] = mine;
  cudaIpcMemHandle_t h;
  SHARDLM_TRY(cuda_status(cudaIpcGetMemHandle(&h, mine), "cudaIpcGetMemHandle"));
  SHARDLM_TRY(g.rv->set(handle_key(key, index_), to_hex(&h, sizeof(h)), timeout_s));
  for (int i = 0; i < g.size(); ++i) {
    if (i == index_) continue;
    SHARDLM_ASSIGN_OR_RETURN(std::string hex, g.rv->get(handle_key(key, i), timeout_s));
    cudaIpcMemHandle_t ph;
    if (!from_hex(hex, &ph, sizeof(ph)))
      return make_error(ErrorCode::kFormat, "symmetric buffer: bad IPC handle from group rank {}", i);
    void* p = nullptr;
    Status st = cuda_status(cudaIpcOpenMemHandle(&p, ph, cudaIpcMemLazyEnablePeerAccess),
                            "cudaIpcOpenMemHandle");
    if (!st.ok()) return st.with_context(fmt::format("opening group rank {}'s workspace", i));
    peers_[i] = p;
  }
  return Status::Ok();
}

// Our own fabric allocation: create, map, export (kept in fabric_export_).
Status SymmetricBuffer::fabric_local() {
  CUmemAllocationProp prop = {};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device_;
  prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_FABRIC;
  SHARDLM_TRY(cu_status(D().MemGetAllocationGranularity(&granularity_, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
                        "cuMemGetAllocationGranularity"));
  mapped_bytes_ = ((bytes_ ? bytes_ : 1) + granularity_ - 1) / granularity_ * granularity_;
  fabric_handles_.assign(peers_.size(), 0);
  CUmemGenericAllocationHandle mine;
  SHARDLM_TRY(cu_status(D().MemCreate(&mine, mapped_bytes_, &prop, 0), "cuMemCreate (fabric)"));
  fabric_handles_[index_] = mine;
  SHARDLM_TRY(fabric_map(mine, &peers_[index_]));
  CUmemFabricHandle fh;
  SHARDLM_TRY(cu_status(D().MemExportToShareableHandle(&fh, mine, CU_MEM_HANDLE_TYPE_FABRIC, 0),
                        "cuMemExportToShareableHandle"));
  fabric_export_ = to_hex(&fh, sizeof(fh));
  return Status::Ok();
}

Status SymmetricBuffer::fabric_map(unsigned long long handle, void** out) {
  CUmemAccessDesc access = {};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = device_;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  CUdeviceptr va = 0;
  SHARDLM_TRY(cu_status(D().MemAddressReserve(&va, mapped_bytes_, granularity_, 0, 0), "cuMemAddressReserve"));
  if (CUresult r = D().MemMap(va, mapped_bytes_, 0, handle, 0); r != CUDA_SUCCESS) {
    D().MemAddressFree(va, mapped_bytes_);
    return cu_status(r, "cuMemMap");
  }
  if (CUresult r = D().MemSetAccess(va, mapped_bytes_, &access, 1); r != CUDA_SUCCESS) {
    D().MemUnmap(va, mapped_bytes_);
    D().MemAddressFree(va, mapped_bytes_);
    return cu_status(r, "cuMemSetAccess");
  }
  *out = reinterpret_cast<void*>(va);
  return Status::Ok();
}

Status SymmetricBuffer::fabric_import(const CommGroup& g, const std::string& key, double timeout_s) {
  SHARDLM_TRY(g.rv->set(handle_key(key, index_), fabric_export_, timeout_s));
  for (int i = 0; i < g.size(); ++i) {
    if (i == index_) continue;
    SHARDLM_ASSIGN_OR_RETURN(std::string hex, g.rv->get(handle_key(key, i), timeout_s));
    CUmemFabricHandle ph;
    if (!from_hex(hex, &ph, sizeof(ph)))
      return make_error(ErrorCode::kFormat, "symmetric buffer: bad fabric handle from group rank {}", i);
    CUmemGenericAllocationHandle h;
    SHARDLM_TRY(cu_status(D().MemImportFromShareableHandle(&h, &ph, CU_MEM_HANDLE_TYPE_FABRIC),
                          "cuMemImportFromShareableHandle"));
    fabric_handles_[i] = h;
    SHARDLM_TRY(fabric_map(h, &peers_[i]));
  }
  return Status::Ok();
}

void SymmetricBuffer::release_fabric() {
  for (size_t i = 0; i < peers_.size(); ++i) {
    if (peers_[i]) {
      D().MemUnmap(reinterpret_cast<CUdeviceptr>(peers_[i]), mapped_bytes_);
      D().MemAddressFree(reinterpret_cast<CUdeviceptr>(peers_[i]), mapped_bytes_);
      peers_[i] = nullptr;
    }
    if (i < fabric_handles_.size() && fabric_handles_[i]) D().MemRelease(fabric_handles_[i]);
  }
  fabric_handles_.clear();
}

SymmetricBuffer::~SymmetricBuffer() {
  if (fabric_) {
    release_fabric();
    return;
  }
  for (size_t i = 0; i < peers_.size(); ++i)
    if (peers_[i] && static_cast<int>(i) != index_) cudaIpcCloseMemHandle(peers_[i]);
  if (!peers_.empty() && peers_[index_]) cudaFree(peers_[index_]);
}

}  // namespace shardlm
