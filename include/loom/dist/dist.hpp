#pragma once
/// @file dist.hpp
/// Choosing the communicator at run time: make_communicator("auto") is MPI when the program was
/// started by mpirun (and loom was built with MPI), else a single process, for which every
/// collective is a no-op, so a program that always goes through a communicator behaves as before.

#include <cstdlib>
#include <memory>
#include <string>

#include "loom/dist/communicator.hpp"
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

/// A communicator of the given kind: "single", "mpi", or "auto" (MPI under an MPI launcher,
/// else single). Throws value_error for an unknown kind and backend_error for MPI in a build
/// without it.
inline std::unique_ptr<Communicator> make_communicator(const std::string& kind = "auto") {
  LOOM_CHECK(kind == "auto" || kind == "single" || kind == "mpi", value_error, "dist: unknown backend '", kind,
             "' (choose auto, single or mpi)");
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
