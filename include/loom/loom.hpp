#pragma once
/// @file loom.hpp
/// The umbrella header: tensors, random numbers, autograd, every CPU op, the nn layers and the
/// optimizers. I/O (<loom/io/checkpoint.hpp>), training helpers (<loom/train/...>) and the
/// tokenizer (<loom/tokenizer.hpp>) have their own headers.

#include "loom/config.hpp"
#include "loom/version.hpp"

#include "loom/core/device.hpp"
#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/math.hpp"
#include "loom/core/random.hpp"
#include "loom/core/shape.hpp"
#include "loom/core/tensor.hpp"

#include "loom/autograd/engine.hpp"
#include "loom/autograd/grad_mode.hpp"
#include "loom/autograd/gradcheck.hpp"
#include "loom/autograd/recompute.hpp"

#include "loom/ops/attention.hpp"
#include "loom/ops/dropout.hpp"
#include "loom/ops/elementwise.hpp"
#include "loom/ops/embedding.hpp"
#include "loom/ops/layer_norm.hpp"
#include "loom/ops/loss.hpp"
#include "loom/ops/matmul.hpp"
#include "loom/ops/reduce.hpp"
#include "loom/ops/rope.hpp"
#include "loom/ops/softmax.hpp"

#include "loom/nn/causal_lm.hpp"
#include "loom/nn/gpt.hpp"
#include "loom/nn/layers.hpp"
#include "loom/nn/llama.hpp"
#include "loom/nn/module.hpp"

#include "loom/optim/optim.hpp"
