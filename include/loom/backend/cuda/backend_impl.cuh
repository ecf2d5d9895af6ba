#pragma once
#ifndef __CUDACC__
#error "loom/backend/cuda/*.cuh must be compiled by nvcc (from a .cu file)"
#endif
// The definitions behind cuda_api.hpp. Exactly one .cu file includes this header: CMake
// generates it for the loom::cuda target; without CMake, compile a one-line .cu file
//   #include <loom/backend/cuda/backend_impl.cuh>
// with nvcc -std=c++17 and link it with -lcudart -lcublas -lcublasLt. With NCCL (dist/nccl.hpp),
// also define LOOM_HAVE_NCCL=1 there and in your own files, and link -lnccl.

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/runtime.cuh"
#include "loom/backend/cuda/elementwise.cuh"
#include "loom/backend/cuda/dropout.cuh"
#include "loom/backend/cuda/reduce.cuh"
#include "loom/backend/cuda/softmax.cuh"
#include "loom/backend/cuda/layer_norm.cuh"
#include "loom/backend/cuda/rms_norm.cuh"
#include "loom/backend/cuda/embedding.cuh"
#include "loom/backend/cuda/loss.cuh"
#include "loom/backend/cuda/attention.cuh"
#include "loom/backend/cuda/attention_bf16.cuh"
#include "loom/backend/cuda/matmul.cuh"
#include "loom/backend/cuda/optim.cuh"
#if LOOM_HAVE_NCCL
#include "loom/backend/cuda/nccl.cuh"
#endif
