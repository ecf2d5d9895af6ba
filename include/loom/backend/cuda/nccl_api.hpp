#pragma once
/// @file nccl_api.hpp
/// Host-callable declarations of loom's NCCL collectives (GPU buffers, one GPU per rank). Like
/// cuda_api.hpp it holds no CUDA or NCCL type, so g++ compiles any file that includes it; the
/// definitions are in nccl.cuh, which backend_impl.cuh compiles into loom::cuda when CMake found
/// NCCL (LOOM_HAVE_NCCL=1). Call them only when LOOM_WITH_CUDA && LOOM_HAVE_NCCL;
/// dist/nccl.hpp (NcclCommunicator) is the interface meant for programs.
///
/// Every collective is queued on the device's one loom stream (after the kernels queued there
/// before it) and then waited for: the call polls ncclCommGetAsyncError and cudaStreamQuery,
/// and when timeout_s passes it aborts the communicator (ncclCommAbort) and throws
/// loom::dist_error naming the rank and the operation. An aborted communicator throws on every
/// later call; only nccl_destroy is left to do.
///
/// Uneven pieces: NCCL's ReduceScatter and AllGather need the same count on every rank. When the
/// counts are equal loom calls them; otherwise it issues one grouped call per piece
/// (ncclGroupStart, then ncclReduce to rank r of piece r, or ncclBroadcast from rank r of piece
/// r, then ncclGroupEnd). That moves the same bytes as padding would, with no padded copy.
///
/// Sums are NCCL's (ring or tree order), so unlike the host backends their bits may depend on the
/// number of ranks. An average is that sum times T(1/N) (integers: divided by N), as on the host.

#include <cstdint>

namespace loom::cuda {

/// Bytes of an NCCL unique id (NCCL_UNIQUE_ID_BYTES).
inline constexpr int nccl_id_bytes = 128;

/// The id that names one NCCL group: drawn by one rank, handed to the others out of band.
struct NcclId {
  char bytes[nccl_id_bytes] = {};
};

/// Element types of the NCCL collectives (u8 can be broadcast and gathered, not reduced).
enum class CommType : int { f32, f64, i64, u8 };
/// How reductions combine the ranks' values.
enum class CommOp : int { sum, average };

/// One rank's NCCL communicator (opaque; defined in nccl.cuh).
struct NcclComm;

/// NCCL's version as a number, e.g. 22809 for 2.28.9.
int nccl_version();
/// Draws a new unique id (one rank does this; every rank passes the same id to nccl_create).
NcclId nccl_unique_id();
/// Joins the group named by `id` as rank `rank` of `size` on GPU `device`; waits at most
/// timeout_s for the other ranks. Returns a handle for the calls below.
NcclComm* nccl_create(const NcclId& id, int rank, int size, int device, double timeout_s);

/// In place: the n elements of `data` (device memory) become their sum or average over the ranks.
void nccl_all_reduce(NcclComm* c, void* data, int64_t n, CommType t, CommOp op, const char* what, double timeout_s);
/// `send` holds counts[0] + ... + counts[size-1] elements; rank r receives the reduction of piece
/// r into `recv` (counts[r] elements; in place when recv is this rank's piece of send).
void nccl_reduce_scatter(NcclComm* c, const void* send, void* recv, const int64_t* counts, CommType t, CommOp op,
                         const char* what, double timeout_s);
/// Rank r sends counts[r] elements; every rank receives all pieces, in rank order, in `recv`
/// (in place when send is this rank's piece of recv).
void nccl_all_gather(NcclComm* c, const void* send, void* recv, const int64_t* counts, CommType t, const char* what,
                     double timeout_s);
/// Every rank's n elements of `data` become rank root's.
void nccl_broadcast(NcclComm* c, void* data, int64_t n, CommType t, int root, const char* what, double timeout_s);
/// Returns once every rank has called it (an all-reduce of one element).
void nccl_barrier(NcclComm* c, const char* what, double timeout_s);

/// Stops this rank's NCCL work at once (ncclCommAbort); later calls on `c` throw dist_error.
void nccl_abort(NcclComm* c) noexcept;
/// Finalizes and frees the communicator (aborting it instead if the other ranks do not finalize
/// within timeout_s), then frees the handle.
void nccl_destroy(NcclComm* c, double timeout_s) noexcept;
/// For tests: take the per-piece path of reduce_scatter and all_gather even when counts are equal.
void nccl_set_always_grouped(NcclComm* c, bool on);

}  // namespace loom::cuda
