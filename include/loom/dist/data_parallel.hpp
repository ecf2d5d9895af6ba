#pragma once
/// @file data_parallel.hpp
/// Data parallelism: every rank holds the whole model, runs forward and backward on its own
/// micro-batches, and the ranks sum their gradients before the update.
///
///   backward pass (main thread)             communication thread
///   ---------------------------             --------------------
///   grad of h.5.mlp ready  -> copy into bucket 0
///   ...  bucket 0 full     -> queue 0   -->  all_reduce(bucket 0)     (while backward goes on)
///   grad of h.4.attn ready -> copy into bucket 1
///   ...                                      all_reduce(bucket 1)
///   finish(): wait for every bucket, copy the sums back, times 1/(ranks x micro-batches)
///
/// Buckets hold the parameters in reverse order (the order backward finishes them) and are
/// reduced strictly in bucket order, so every rank makes the same calls in the same order.
///
/// ZeRO stage 1 (ZeroAdamW): each bucket is cut into one piece per rank, at boundaries of the
/// 64Ki-element blocks that the gradient norm is summed over; gradients are reduce-scattered
/// instead of all-reduced; each rank keeps AdamW's moments for its pieces only, updates them, and
/// the parameters are all-gathered. The clipping norm is assembled from per-block partial sums, so
/// it has the same bits as one process's clip_grad_norm.

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "loom/core/tensor.hpp"
#include "loom/dist/communicator.hpp"
#include "loom/optim/adamw.hpp"
#include "loom/optim/clip_grad.hpp"

namespace loom::dist {

/// A 64-bit FNV-1a hash of the parameters' values (their bytes, in order).
inline uint64_t parameter_hash(const std::vector<Tensor<float>>& params) {
  uint64_t h = 1469598103934665603ull;
  for (const Tensor<float>& p0 : params) {
    Tensor<float> p = p0.detach().to(Device::cpu()).contiguous();
    const unsigned char* b = reinterpret_cast<const unsigned char*>(p.data());
    for (size_t i = 0; i < size_t(p.numel()) * sizeof(float); ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  return h;
}

/// Throws dist_error (on every rank) unless all ranks hold the same parameter values: each rank
/// must build the model from the same seed, or load the same checkpoint.
inline void check_same_parameters(Communicator& comm, const std::vector<Tensor<float>>& params) {
  std::vector<int64_t> hashes = comm.gather_values(int64_t(parameter_hash(params)), "parameter hash");
  std::string differ;
  for (int r = 1; r < comm.size(); ++r)
    if (hashes[size_t(r)] != hashes[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  LOOM_CHECK(differ.empty(), dist_error, "rank ", comm.rank(), ": the parameters of rank(s) ", differ,
             " differ from rank 0's; every rank must build the model from the same seed (or load the same checkpoint)");
}

/// Sums the gradients of `params` over the ranks, bucket by bucket, while the backward pass runs.
/// Use: begin() before the backward pass whose gradients are to be summed, finish() after it.
class GradReducer {
 public:
  /// A reducer over `params` (in the optimizer's order) with buckets of about `bucket_elems`
  /// elements; `shard` reduce-scatters (each rank gets its pieces) instead of all-reducing.
  GradReducer(Communicator& comm, std::vector<Tensor<float>> params, int64_t bucket_elems, bool shard)
      : comm_(comm), params_(std::move(params)), shard_(shard) {
    LOOM_CHECK(bucket_elems > 0, value_error, "GradReducer: the bucket size must be positive, got ", bucket_elems);
    // Buckets in the order backward finishes the parameters: the reverse of the model's order.
    where_.resize(params_.size());
    for (size_t k = params_.size(); k-- > 0;) {
      if (buckets_.empty() || buckets_.back().numel >= bucket_elems) buckets_.emplace_back();
      Bucket& b = buckets_.back();
      where_[k] = {buckets_.size() - 1, b.numel};
      b.params.push_back(k);
      b.numel += params_[k].numel();
    }
    for (Bucket& b : buckets_) {
      b.data.assign(size_t(b.numel), 0.0f);
      b.counts = shard_ ? block_aligned_counts(b) : even_counts(b.numel, comm_.size());
    }
    for (size_t k = 0; k < params_.size(); ++k) params_[k].on_grad_ready([this, k] { grad_ready(k); });
    worker_ = std::thread([this] { run(); });
  }
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;
  /// Stops the communication thread and removes the hooks.
  ~GradReducer() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
    for (Tensor<float>& p : params_) p.on_grad_ready(nullptr);
  }

  /// Arms the hooks: the next backward pass's gradients are copied into the buckets as they
  /// finish, each added to `earlier[k]` (the sum of this step's earlier micro-batches) if given.
  void begin(std::vector<Tensor<float>> earlier = {}) {
    LOOM_CHECK(earlier.empty() || earlier.size() == params_.size(), value_error, "GradReducer: ", earlier.size(),
               " earlier gradients for ", params_.size(), " parameters");
    earlier_ = std::move(earlier);
    std::lock_guard<std::mutex> lock(mutex_);
    for (Bucket& b : buckets_) b.waiting = int(b.params.size()), b.queued = b.done = false;
    copied_.assign(params_.size(), false);
    next_ = 0;
    error_ = nullptr;
    armed_ = true;
  }

  /// Waits until every bucket is reduced. Parameters that the pass did not reach count as zero.
  /// Without sharding, each parameter's grad() becomes the sum times `scale`; with it, only this
  /// rank's pieces hold the scaled sum (piece()). Rethrows a failure of the communication thread.
  void finish(float scale) {
    for (size_t k = 0; k < params_.size(); ++k)
      if (!copied_[k]) grad_ready(k);
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return std::all_of(buckets_.begin(), buckets_.end(), [](const Bucket& b) { return b.done; }); });
      armed_ = false;
    }
    earlier_.clear();
    if (error_) std::rethrow_exception(error_);
    for (Bucket& b : buckets_) {
      if (shard_) {
        float* x = b.data.data() + piece_offset(b, comm_.rank());
        if (scale != 1.0f)
          for (int64_t i = 0; i < b.counts[size_t(comm_.rank())]; ++i) x[i] = x[i] * scale;
        continue;
      }
      if (scale != 1.0f)
        for (float& x : b.data) x = x * scale;
      for (size_t k : b.params) {
        Tensor<float>& p = params_[k];
        Tensor<float> g = Tensor<float>::empty(p.shape());
        std::memcpy(g.data(), b.data.data() + where_[k].offset, size_t(p.numel()) * sizeof(float));
        p.set_grad(p.device().is_cpu() ? g : g.to(p.device()));
      }
    }
  }

  /// One bucket: parameters laid end to end, and how it is cut into pieces per rank.
  struct Bucket {
    std::vector<size_t> params;   ///< parameter indices, in layout order
    int64_t numel = 0;
    std::vector<float> data;      ///< gradients in, sums out (and, for ZeRO, parameters for the all-gather)
    std::vector<int64_t> counts;  ///< elements of each rank's piece
    int waiting = 0;              ///< parameters not yet copied in this pass
    bool queued = false, done = false;
  };
  /// Where a parameter sits: its bucket and its offset in it.
  struct Place {
    size_t bucket = 0;
    int64_t offset = 0;
  };
  /// The buckets.
  std::vector<Bucket>& buckets() { return buckets_; }
  /// Where parameter k sits.
  const Place& place(size_t k) const { return where_[k]; }
  /// The parameters.
  const std::vector<Tensor<float>>& params() const { return params_; }
  /// The offset of rank r's piece in bucket b.
  static int64_t piece_offset(const Bucket& b, int r) {
    int64_t o = 0;
    for (int i = 0; i < r; ++i) o += b.counts[size_t(i)];
    return o;
  }
  /// The communicator.
  Communicator& comm() { return comm_; }

 private:
  // Pieces of about numel / ranks elements whose boundaries fall on a parameter's start or on a
  // multiple of the norm block inside a parameter: the gradient norm's partial sums stay whole.
  std::vector<int64_t> block_aligned_counts(const Bucket& b) const {
    std::vector<int64_t> cuts;  // allowed boundaries, ascending
    for (size_t k : b.params) {
      const int64_t start = where_[k].offset;
      for (int64_t i = 0; i < params_[k].numel(); i += optim_detail::norm_block) cuts.push_back(start + i);
    }
    cuts.push_back(b.numel);
    const int n = comm_.size();
    std::vector<int64_t> counts(size_t(n), 0);
    int64_t prev = 0;
    for (int r = 0; r < n; ++r) {
      int64_t target = r + 1 == n ? b.numel : b.numel * (r + 1) / n;
      auto it = std::lower_bound(cuts.begin(), cuts.end(), target);
      int64_t end = it == cuts.end() ? b.numel : *it;
      if (it != cuts.begin() && it != cuts.end() && target - *(it - 1) < *it - target) end = *(it - 1);
      end = std::max(end, prev);
      counts[size_t(r)] = end - prev;
      prev = end;
    }
    return counts;
  }

  // A parameter's gradient is final: copy it into its bucket; queue the bucket when it is full.
  void grad_ready(size_t k) {
    if (!armed_ || copied_[k]) return;
    const Place& at = where_[k];
    Bucket& b = buckets_[at.bucket];
    float* dst = b.data.data() + at.offset;
    Tensor<float> g = params_[k].grad();
    if (g.defined()) {
      Tensor<float> h = g.detach().to(Device::cpu()).contiguous();
      std::memcpy(dst, h.data(), size_t(h.numel()) * sizeof(float));
    } else {
      std::fill(dst, dst + params_[k].numel(), 0.0f);
    }
    if (k < earlier_.size() && earlier_[k].defined()) {  // earlier + this micro-batch, in that order
      Tensor<float> e = earlier_[k].detach().to(Device::cpu()).contiguous();
      const float* ep = e.data();
      for (int64_t i = 0; i < e.numel(); ++i) dst[i] = g.defined() ? ep[i] + dst[i] : ep[i];
    }
    copied_[k] = true;
    std::lock_guard<std::mutex> lock(mutex_);
    if (--b.waiting == 0) {
      b.queued = true;
      cv_.notify_all();
    }
  }

  // The communication thread: reduce the buckets strictly in order as they fill up.
  void run() {
    for (;;) {
      size_t i;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || (armed_ && next_ < buckets_.size() && buckets_[next_].queued); });
        if (stop_) return;
        i = next_++;
      }
      Bucket& b = buckets_[i];
      if (!error_) {
        try {
          if (shard_) {
            float* mine = b.data.data() + piece_offset(b, comm_.rank());
            comm_.reduce_scatter(b.data.data(), mine, b.counts, ReduceOp::sum, "reduce_scatter 'gradients'");
          } else {
            comm_.all_reduce(b.data.data(), b.numel, ReduceOp::sum, "all_reduce 'gradients'");
          }
        } catch (...) {
          error_ = std::current_exception();
        }
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        b.done = true;
      }
      cv_.notify_all();
    }
  }

  Communicator& comm_;
  std::vector<Tensor<float>> params_;
  bool shard_;
  std::vector<Bucket> buckets_;
  std::vector<Place> where_;
  std::vector<bool> copied_;
  std::vector<Tensor<float>> earlier_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::thread worker_;
  size_t next_ = 0;
  bool armed_ = false, stop_ = false;
  std::exception_ptr error_;
};

/// ZeRO stage 1 over an AdamW: the same update, bit for bit, with each rank holding the moments
/// of its pieces of the reducer's buckets only. The AdamW supplies the groups, learning rates and
/// hyper-parameters; its own state stays empty except while a checkpoint is made or restored.
class ZeroAdamW {
 public:
  /// The sharded optimizer of `opt`'s parameters; `reducer` must shard over opt.params().
  ZeroAdamW(AdamW& opt, GradReducer& reducer) : opt_(opt), red_(reducer) {
    const int r = red_.comm().rank();
    for (auto& b : red_.buckets()) {
      m_.emplace_back(size_t(b.counts[size_t(r)]), 0.0f);
      v_.emplace_back(size_t(b.counts[size_t(r)]), 0.0f);
    }
    for (ParamGroup& g : opt_.param_groups())
      group_of_.insert(group_of_.end(), g.params.size(), &g);  // the group of each parameter, in order
  }

  /// Optimizer steps taken.
  int64_t steps() const { return step_; }

  /// The global L2 norm of the summed gradients (from every rank's pieces); when it exceeds
  /// max_norm > 0, this rank's pieces are scaled as clip_grad_norm scales whole gradients.
  double clip_grad_norm(double max_norm) {
    // One partial sum per norm block, in the order one process sums them (parameter by parameter).
    std::vector<int64_t> first_block(red_.params().size() + 1, 0);
    for (size_t k = 0; k < red_.params().size(); ++k)
      first_block[k + 1] = first_block[k] + (red_.params()[k].numel() + optim_detail::norm_block - 1) / optim_detail::norm_block;
    std::vector<double> partial(size_t(first_block.back()), 0.0);
    for_each_mine([&](size_t k, int64_t in_param, float*, float*, float* g, int64_t n) {
      for (int64_t lo = 0; lo < n; lo += optim_detail::norm_block) {
        int64_t len = std::min(optim_detail::norm_block, n - lo);
        partial[size_t(first_block[k] + (in_param + lo) / optim_detail::norm_block)] =
            optim_detail::block_sum_of_squares(g + lo, len);
      }
    });
    // Each block has one owner and zeros elsewhere: the sum over ranks is exact.
    red_.comm().all_reduce(partial.data(), int64_t(partial.size()), ReduceOp::sum, "all_reduce 'gradient norm'");
    double total = 0.0;
    for (double s : partial) total += s;
    const double norm = std::sqrt(total);
    const double coef = max_norm / (norm + 1e-6);
    if (max_norm > 0 && coef < 1.0) {
      const float c = float(coef);
      for_each_mine([&](size_t, int64_t, float*, float*, float* g, int64_t n) {
        for (int64_t i = 0; i < n; ++i) g[i] = g[i] * c;
      });
    }
    return norm;
  }

  /// AdamW on this rank's pieces, then an all-gather of the parameters.
  void step() {
    ++step_;
    for_each_mine([&](size_t k, int64_t in_param, float* m, float* v, float* g, int64_t n) {
      const ParamGroup& grp = *group_of_[k];
      const optim_detail::AdamScalars s = opt_.scalars(*grp.lr, *grp.weight_decay, step_);
      Tensor<float>& p = const_cast<Tensor<float>&>(red_.params()[k]);
      if (p.storage()) p.storage()->bump_version();
      optim_detail::adam_kernel(p.data() + in_param, m, v, g, n, s);
    });
    const int r = red_.comm().rank();
    for (auto& b : red_.buckets()) {  // the updated pieces into the buckets, then everyone's pieces out
      const int64_t lo = GradReducer::piece_offset(b, r), hi = lo + b.counts[size_t(r)];
      copy_params(b, lo, hi, true);
      red_.comm().all_gather(b.data.data() + lo, b.data.data(), b.counts, "all_gather 'parameters'");
      copy_params(b, 0, b.numel, false);
    }
  }

  /// AdamW's state as AdamW itself would list it (state_tensors(), state_scalars()), with every
  /// rank's pieces gathered on rank `root`: what a checkpoint that any number of ranks can resume
  /// holds. Collective; the other ranks only send and get empty results.
  std::pair<std::vector<std::pair<std::string, Tensor<float>>>, std::map<std::string, std::string>> gather_state(
      int root = 0) {
    const bool here = red_.comm().rank() == root;
    const std::vector<std::string> keys = param_keys();
    std::vector<std::pair<std::string, Tensor<float>>> tensors;
    if (here && step_ > 0)
      for (size_t k = 0; k < keys.size(); ++k) {
        tensors.emplace_back(keys[k] + ".exp_avg", Tensor<float>::empty(red_.params()[k].shape()));
        tensors.emplace_back(keys[k] + ".exp_avg_sq", Tensor<float>::empty(red_.params()[k].shape()));
      }
    for (size_t bi = 0; bi < red_.buckets().size(); ++bi) {
      auto& b = red_.buckets()[bi];
      std::vector<float> full(here ? size_t(b.numel) : 0);
      for (int which = 0; which < 2; ++which) {
        const std::vector<float>& mine = which == 0 ? m_[bi] : v_[bi];
        red_.comm().gather(mine.data(), full.data(), b.counts, root, "gather 'optimizer state'");
        if (tensors.empty()) continue;
        for (size_t k : b.params) {
          Tensor<float>& dst = tensors[2 * k + size_t(which)].second;
          std::memcpy(dst.data(), full.data() + red_.place(k).offset, size_t(dst.numel()) * sizeof(float));
        }
      }
    }
    std::map<std::string, std::string> scalars;
    if (here) {
      scalars = opt_.state_scalars();
      if (step_ > 0)
        for (const std::string& k : keys) scalars[k + ".step"] = std::to_string(step_);
    }
    return {std::move(tensors), std::move(scalars)};
  }

  /// Takes this rank's pieces of the moments and the step count from `opt` (after a checkpoint
  /// was restored into it), then empties opt's state.
  void scatter_from_optimizer() {
    std::map<std::string, std::string> scalars = opt_.state_scalars();
    std::map<std::string, Tensor<float>> state;
    for (auto& [name, t] : opt_.state_tensors()) state[name] = t.to(Device::cpu()).contiguous();
    std::vector<std::string> keys = param_keys();
    step_ = 0;
    for (size_t k = 0; k < keys.size(); ++k) {
      auto it = scalars.find(keys[k] + ".step");
      int64_t s = it == scalars.end() ? 0 : std::stoll(it->second);
      LOOM_CHECK(k == 0 || s == step_, value_error, "ZeroAdamW: parameter '", keys[k], "' has taken ", s,
                 " steps, the first one ", step_, "; ZeRO needs every parameter updated at every step");
      step_ = s;
    }
    for_each_mine([&](size_t k, int64_t in_param, float* m, float* v, float*, int64_t n) {
      auto mi = state.find(keys[k] + ".exp_avg"), vi = state.find(keys[k] + ".exp_avg_sq");
      if (mi == state.end() || vi == state.end()) {
        std::fill(m, m + n, 0.0f), std::fill(v, v + n, 0.0f);
        return;
      }
      std::memcpy(m, mi->second.data() + in_param, size_t(n) * sizeof(float));
      std::memcpy(v, vi->second.data() + in_param, size_t(n) * sizeof(float));
    });
    opt_.load_state({}, without_steps(scalars));  // keep hyper-parameters and learning rates, drop the buffers
  }

  /// Bytes of optimizer state this rank holds.
  int64_t state_bytes() const {
    int64_t n = 0;
    for (const auto& m : m_) n += int64_t(m.size()) * 2 * int64_t(sizeof(float));
    return n;
  }

 private:
  // f(param k, offset in the parameter, m, v, g, n) for each run of this rank's pieces that lies
  // in one parameter; m and v are this rank's moments, g the summed gradient in the bucket.
  template <class F>
  void for_each_mine(F&& f) {
    const int r = red_.comm().rank();
    for (size_t bi = 0; bi < red_.buckets().size(); ++bi) {
      auto& b = red_.buckets()[bi];
      const int64_t lo = GradReducer::piece_offset(b, r), hi = lo + b.counts[size_t(r)];
      for (size_t k : b.params) {
        const int64_t start = red_.place(k).offset, end = start + red_.params()[k].numel();
        const int64_t a = std::max(lo, start), e = std::min(hi, end);
        if (a >= e) continue;
        f(k, a - start, m_[bi].data() + (a - lo), v_[bi].data() + (a - lo), b.data.data() + a, e - a);
      }
    }
  }
  // Parameters to bucket (to_bucket) or bucket to parameters, for the range [lo, hi) of bucket b.
  void copy_params(GradReducer::Bucket& b, int64_t lo, int64_t hi, bool to_bucket) {
    for (size_t k : b.params) {
      const int64_t start = red_.place(k).offset, end = start + red_.params()[k].numel();
      const int64_t a = std::max(lo, start), e = std::min(hi, end);
      if (a >= e) continue;
      float* p = red_.params()[k].data() + (a - start);
      if (to_bucket) std::memcpy(b.data.data() + a, p, size_t(e - a) * sizeof(float));
      else std::memcpy(p, b.data.data() + a, size_t(e - a) * sizeof(float));
    }
  }
  std::map<std::string, std::string> without_steps(std::map<std::string, std::string> scalars) const {
    for (const std::string& k : param_keys()) scalars.erase(k + ".step");
    return scalars;
  }
  std::vector<std::string> param_keys() const {
    std::vector<std::string> keys;
    size_t i = 0;
    for (const ParamGroup& g : opt_.param_groups())
      for (size_t j = 0; j < g.params.size(); ++j, ++i) keys.push_back(g.names.empty() ? std::to_string(i) : g.names[j]);
    return keys;
  }

  AdamW& opt_;
  GradReducer& red_;
  std::vector<std::vector<float>> m_, v_;  ///< per bucket: this rank's piece of exp_avg and exp_avg_sq
  std::vector<ParamGroup*> group_of_;
  int64_t step_ = 0;
};

}  // namespace loom::dist
