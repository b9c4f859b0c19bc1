// Launch detection (DESIGN §1): who started this process, which rank it is, and
// where rank 0 (the rendezvous master) listens. Pure functions of the
// environment, so every rule is unit-tested with a fake getenv.
//
// Precedence (the first launcher whose variables are present wins; the more
// specific launcher goes first, e.g. torchrun or mpirun inside an sbatch script
// that already exported SLURM_PROCID for the batch step):
//   1. SHARDLM_RANK/SHARDLM_WORLD_SIZE (children of shardlm's self-spawn):
//      SHARDLM_LOCAL_RANK (default: rank), SHARDLM_MASTER_ADDR (default
//      127.0.0.1), SHARDLM_MASTER_PORT (required: the parent binds its port first
//      and passes the real one), SHARDLM_JOB_KEY.
//   2. torchrun: RANK, WORLD_SIZE, LOCAL_RANK (default: rank), MASTER_ADDR
//      (required), MASTER_PORT (default 29500).
//   3. OpenMPI (mpirun): OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK (local default:
//      rank). MASTER_ADDR if set; else, only when every rank is on this node
//      (OMPI_COMM_WORLD_LOCAL_SIZE == OMPI_COMM_WORLD_SIZE), 127.0.0.1; else an
//      error naming `mpirun -x MASTER_ADDR=...`. MASTER_PORT default 29500.
//   4. PMI (MPICH / Intel MPI hydra): PMI_RANK, PMI_SIZE; local rank from
//      MPI_LOCALRANKID or PMI_LOCAL_RANK (default: rank). Master as for OpenMPI,
//      with MPI_LOCALNRANKS as the node-local size.
//   5. SLURM (srun): SLURM_PROCID, SLURM_NTASKS (or SLURM_NPROCS), SLURM_LOCALID
//      (default: rank). MASTER_ADDR if set, else the first host of
//      SLURM_STEP_NODELIST, SLURM_JOB_NODELIST or SLURM_NODELIST (rank 0 runs on
//      the first node of the step). MASTER_PORT if set, else 15000 + SLURM_JOB_ID
//      mod 10000 (so concurrent jobs sharing a node do not collide), else 29500.
//   6. none of these, or a world of 1: a single process (kNone); local rank =
//      explicit > LOCAL_RANK > 0. With --tp/--pp > 1 the CLI self-spawns.
// An explicit local rank (--local-rank) beats every variable. Malformed
// integers are errors naming the variable; so is a half-set pair (RANK without
// WORLD_SIZE) and a rank outside [0, world).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace shardlm {

struct LaunchInfo {
  enum class Launcher { kNone, kTorchrun, kSlurm, kOpenMPI, kPMI, kSelfSpawn };
  Launcher launcher = Launcher::kNone;
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  std::string master_addr;  // empty for kNone
  int master_port = 29500;
  std::string job_key;      // SHARDLM_JOB_KEY when set (any launcher), else empty

  bool distributed() const { return world > 1; }
  // "torchrun: rank 1 of 4, local rank 1, master 10.0.0.1:29500"
  std::string describe() const;
};

const char* launcher_name(LaunchInfo::Launcher l);

using GetenvFn = std::function<std::optional<std::string>(const char*)>;

// `getenv` is usually env_get (base/env.h); tests pass a map.
Expected<LaunchInfo> detect_launch(const GetenvFn& getenv, std::optional<int> explicit_local_rank);

// Expands a SLURM compressed host list: "n1", "n[01-03]", "a[1,3-4],b7",
// "rack[1-2]-n[1-2]". Zero padding follows the lower bound ("n[08-10]" → n08,
// n09, n10). Errors name the malformed list.
Expected<std::vector<std::string>> expand_slurm_nodelist(const std::string& list);

// The device this rank uses: local_rank modulo the visible device count
// (CUDA_VISIBLE_DEVICES is applied by the driver before the count is taken).
Expected<int> pick_device(const LaunchInfo& info, int visible_device_count);

// After an allgather of (hostname, device) per global rank: two ranks on the
// same device of the same host is an error naming both ranks and the fix.
// Entries with a negative device (CPU ranks) are ignored.
Status check_device_assignment(const std::vector<std::pair<std::string, int>>& host_device_by_rank);

// The per-job HMAC key, agreed by every rank without communication:
// `explicit_key` (--job-key) > SHARDLM_JOB_KEY (info.job_key; self-spawn passes
// a random one) > a default derived from master address, port and world size.
// The default is integrity, not secrecy: anyone who knows the master address
// can compute it. Set SHARDLM_JOB_KEY to a secret shared by the ranks to keep
// other users of the network out.
std::string resolve_job_key(const LaunchInfo& info, const std::optional<std::string>& explicit_key);

}  // namespace shardlm
