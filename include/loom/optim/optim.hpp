#pragma once
/// @file optim.hpp
/// Everything for training updates: SGD, Adam, AdamW, parameter groups, learning-rate schedules
/// and gradient clipping. See docs/11-optimizers.md.

#include "loom/optim/adamw.hpp"
#include "loom/optim/clip_grad.hpp"
#include "loom/optim/lr_schedule.hpp"
#include "loom/optim/optimizer.hpp"
#include "loom/optim/sgd.hpp"
