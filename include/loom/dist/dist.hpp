#pragma once
/// @file dist.hpp
/// Choosing the communicator at run time: make_communicator("auto") is MPI when the program was
/// started by mpirun (and loom was built with MPI), else a single process, for which every
/// collective is a no-op, so a program that always goes through a communicator behaves as before.
/// make_communicator("nccl") is asked for by name only: its buffers must be GPU memory.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "loom/config.hpp"
#include "loom/dist/communicator.hpp"
#include "loom/dist/nccl.hpp"
#if LOOM_HAVE_MPI
#include "loom/dist/mpi.hpp"
#endif

namespace loom::dist {

/// True when loom was built with MPI (CMake found it and the program links loom::mpi).
inline constexpr bool have_mpi() {
#if LOOM_HAVE_MPI
  return true;
#else
  return false;
#endif
}

/// This process's rank among the ranks on its machine (OpenMPI, MPICH or Slurm say it); 0 when
/// no launcher says.
inline int local_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return 0;
}

/// The number of ranks on this process's machine (OpenMPI, MPICH or Slurm say it); `ranks` when no
/// launcher says (all of them on this machine).
inline int local_size(int ranks) {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
    if (const char* s = std::getenv(v)) return std::max(1, std::atoi(s));
  return std::max(1, ranks);
}

/// The CPU threads one of `ranks` ranks should use: `requested` when positive, else the threads
/// this process would use alone shared among the ranks on its machine (at least 1), so that
/// `mpirun -np 2` on two cores runs two ranks of one thread, not two of two.
inline int threads_per_rank(int64_t requested, int ranks) {
  if (requested > 0) return int(requested);
  return ranks > 1 ? std::max(1, get_num_threads() / local_size(ranks)) : get_num_threads();
}

/// A communicator of the given kind: "single", "mpi", "nccl" (GPU buffers; the ranks come from
/// MPI, each on GPU local_rank() modulo the GPUs visible), or "auto" (MPI under an MPI launcher,
/// else single). Throws value_error for an unknown kind and backend_error for MPI or NCCL in a
/// build without them.
inline std::unique_ptr<Communicator> make_communicator(const std::string& kind = "auto") {
  LOOM_CHECK(kind == "auto" || kind == "single" || kind == "mpi" || kind == "nccl", value_error,
             "dist: unknown backend '", kind, "' (choose auto, single, mpi or nccl)");
  if (kind == "nccl") {
    LOOM_CHECK(have_nccl(), backend_error, no_nccl_message());
#if LOOM_HAVE_MPI && LOOM_WITH_CUDA && LOOM_HAVE_NCCL
    const int gpus = cuda::device_count();
    LOOM_CHECK(gpus > 0, device_error, "dist: the nccl backend needs a GPU, and no CUDA device is visible");
    return std::make_unique<NcclCommunicator>(std::make_unique<MpiCommunicator>(), local_rank() % gpus);
#else
    throw backend_error("dist: the nccl backend takes its ranks from MPI, and loom was built without MPI; "
                        "apt-get install openmpi-bin libopenmpi-dev and reconfigure");
#endif
  }
#if LOOM_HAVE_MPI
  if (kind == "mpi" || (kind == "auto" && launched_by_mpi())) return std::make_unique<MpiCommunicator>();
#else
  LOOM_CHECK(kind != "mpi", backend_error,
             "dist: loom was built without MPI; apt-get install openmpi-bin libopenmpi-dev and reconfigure");
  if (kind == "auto" && (std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE")))
    throw backend_error("dist: started by mpirun, but this program was built without MPI; apt-get install "
                        "openmpi-bin libopenmpi-dev and reconfigure");
#endif
  return std::make_unique<SingleProcess>();
}

}  // namespace loom::dist
