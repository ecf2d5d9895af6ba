#pragma once
/// @file report.hpp
/// Watching a training run: progress bars, a CSV log, and an SVG plot of the loss curves that
/// loom draws itself (no plotting library needed).
///
/// The library itself never prints: training reports progress through callbacks and return
/// values. The bars here are drawing helpers for command-line programs (loom-train, loom-bpe),
/// which choose the stream they draw on.

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include "loom/core/error.hpp"
#include "loom/io/file.hpp"

namespace loom::train {

/// A one-line progress bar (step, loss, tokens/s, ETA) redrawn in place on a terminal, or plain
/// lines every `every` steps when `out` is a file or pipe. For programs: loom-train draws it on
/// Peak resident memory of this process so far, in MiB (getrusage's ru_maxrss).
inline double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

/// stderr.
class ProgressBar {
 public:
  /// A bar for `total` steps drawn on `out`.
  ProgressBar(std::FILE* out, int64_t total, int64_t every = 10)
      : out_(out), total_(total), every_(std::max<int64_t>(every, 1)), tty_(isatty(fileno(out)) != 0),
        start_(std::chrono::steady_clock::now()) {}
  /// Reports step `step` (1-based) with its loss and the tokens processed per second.
  void update(int64_t step, double loss, double tokens_per_s) {
    double elapsed = seconds();
    double eta = step > 0 ? elapsed / double(step) * double(total_ - step) : 0.0;
    std::ostringstream line;
    line << std::fixed << std::setprecision(4) << "step " << step << "/" << total_ << " | loss " << loss << " | "
         << std::setprecision(0) << tokens_per_s << " tok/s | ETA " << format_time(eta);
    if (tty_) {
      const int width = 24;
      int filled = total_ > 0 ? int(double(width) * double(step) / double(total_)) : width;
      std::string bar = "[" + std::string(size_t(filled), '#') + std::string(size_t(width - filled), '.') + "] ";
      std::fprintf(out_, "\r%s%s\033[K", bar.c_str(), line.str().c_str());
      if (step >= total_) std::fprintf(out_, "\n");
    } else if (step % every_ == 0 || step == total_ || step == 1) {
      std::fprintf(out_, "%s\n", line.str().c_str());
    }
    std::fflush(out_);
  }
  /// Prints a message on its own line without breaking the bar.
  void message(const std::string& text) {
    std::fprintf(out_, tty_ ? "\r%s\033[K\n" : "%s\n", text.c_str());
    std::fflush(out_);
  }
  /// Seconds since the bar was made.
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }
  /// "1h02m", "3m05s" or "12s".
  static std::string format_time(double s) {
    int64_t t = int64_t(std::max(0.0, s) + 0.5);
    char buf[32];
    if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(t / 3600), (long long)(t % 3600 / 60));
    else if (t >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
    else std::snprintf(buf, sizeof buf, "%llds", (long long)t);
    return buf;
  }

 private:
  std::FILE* out_;
  int64_t total_, every_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
};

/// The BPE training bar, "training BPE [#####...] 120/3840 merges", redrawn in place on `out` at
/// most ten times a second. Pass it as tokenizer::TrainOptions::on_progress, by reference
/// (std::ref(bar)) so that finish() sees the updates. The update with every merge done ends the
/// line; finish() ends it when training stopped early. For programs: loom-bpe draws it on stderr.
class MergeProgressBar {
 public:
  /// A bar drawn on `out`.
  explicit MergeProgressBar(std::FILE* out) : out_(out) {}
  /// Reports `done` of `want` merges.
  void operator()(size_t done, size_t want) {
    auto now = std::chrono::steady_clock::now();
    done_ = done, want_ = want;
    if (done != want && drawn_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    draw();
  }
  /// Ends the bar's line unless the last update already did (training stopped before `want`).
  void finish() {
    if (drawn_ && done_ != want_) {
      draw();
      std::fprintf(out_, "\n");
      std::fflush(out_);
    }
  }

 private:
  void draw() {
    const int width = 40;
    const int fill = want_ ? static_cast<int>(width * std::min(done_, want_) / want_) : width;
    std::fprintf(out_, "\rtraining BPE [%.*s%*s] %zu/%zu merges", fill, "########################################",
                 width - fill, "", done_, want_);
    if (done_ == want_) std::fprintf(out_, "\n");
    std::fflush(out_);
    drawn_ = true;
  }

  std::FILE* out_;
  size_t done_ = 0, want_ = 0;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

/// One row of the training log.
struct LogRow {
  int64_t step = 0;
  double train_loss = NAN;  ///< NaN when not measured at this step
  double val_loss = NAN;
  double lr = NAN;
  double tokens_per_s = NAN;
  double elapsed_s = NAN;
};

/// Appends rows to a CSV file (step,train_loss,val_loss,lr,tokens_per_s,elapsed_s); empty cells for NaN.
class CsvLog {
 public:
  /// Opens `path`: a new file with a header, or (append) the end of an existing log.
  explicit CsvLog(const std::string& path, bool append = false) {
    bool exists = append && std::ifstream(path).good();
    out_.open(path, append ? std::ios::app : std::ios::trunc);
    LOOM_CHECK(out_.good(), io_error, path, ": cannot open the log for writing");
    if (!exists) out_ << "step,train_loss,val_loss,lr,tokens_per_s,elapsed_s\n";
    out_.flush();
  }
  /// Writes one row and flushes (a crash loses nothing already logged).
  void write(const LogRow& r) {
    auto cell = [](double v) {
      if (std::isnan(v)) return std::string();
      std::ostringstream os;
      os << std::setprecision(7) << v;
      return os.str();
    };
    out_ << r.step << ',' << cell(r.train_loss) << ',' << cell(r.val_loss) << ',' << cell(r.lr) << ','
         << cell(r.tokens_per_s) << ',' << cell(r.elapsed_s) << '\n';
    out_.flush();
  }
  /// Drops the rows of the log at `path` whose step is past `step`, and an unfinished last line,
  /// rewriting the file atomically; returns the number of lines dropped. A resumed run calls it
  /// with the checkpoint's step before appending, so that the steps it repeats appear once. A
  /// missing log is left missing (0 dropped).
  static size_t drop_rows_after(const std::string& path, int64_t step) {
    if (!std::ifstream(path).good()) return 0;
    const std::string text = io::read_file(path);
    std::string kept;
    size_t dropped = 0, begin = 0;
    bool header = true;
    while (begin < text.size()) {
      size_t end = text.find('\n', begin);
      if (end == std::string::npos) {  // cut off mid-write
        ++dropped;
        break;
      }
      std::string_view line(text.data() + begin, end - begin + 1);
      begin = end + 1;
      int64_t row_step = 0;
      auto r = std::from_chars(line.data(), line.data() + line.size(), row_step);
      bool keep = header || line.size() == 1 || (r.ec == std::errc() && *r.ptr == ',' && row_step <= step);
      header = false;
      if (keep) kept.append(line);
      else ++dropped;
    }
    if (dropped > 0) io::write_file_atomic(path, kept);
    return dropped;
  }
  /// Reads every row of a CSV log written by this class.
  static std::vector<LogRow> read(const std::string& path) {
    std::ifstream in(path);
    LOOM_CHECK(in.good(), io_error, path, ": cannot open the log");
    std::vector<LogRow> rows;
    std::string line;
    std::getline(in, line);  // header
    int lineno = 1;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.empty()) continue;
      std::vector<std::string> cells;
      std::stringstream ss(line);
      std::string c;
      while (std::getline(ss, c, ',')) cells.push_back(c);
      while (cells.size() < 6) cells.emplace_back();
      auto num = [&](const std::string& s) {
        if (s.empty()) return double(NAN);
        try {
          return std::stod(s);
        } catch (...) {
          throw io_error(detail::concat(path, ":", lineno, ": not a number: '", s, "'"));
        }
      };
      LogRow r;
      r.step = int64_t(num(cells[0]));
      r.train_loss = num(cells[1]), r.val_loss = num(cells[2]), r.lr = num(cells[3]);
      r.tokens_per_s = num(cells[4]), r.elapsed_s = num(cells[5]);
      rows.push_back(r);
    }
    return rows;
  }

 private:
  std::ofstream out_;
};

namespace detail {
// "Nice" tick spacing (1, 2 or 5 times a power of ten) for about `n` ticks over [lo, hi].
inline double nice_step(double lo, double hi, int n) {
  double raw = (hi - lo) / std::max(n, 1);
  if (!(raw > 0)) return 1.0;
  double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}
inline std::string fmt(double v) {
  std::ostringstream os;
  os << std::setprecision(4) << v;
  return os.str();
}
}  // namespace detail

/// An SVG line chart of train and validation loss against step, with axes, ticks, grid and legend.
inline std::string loss_plot_svg(const std::vector<LogRow>& rows, const std::string& title = "loss") {
  const double W = 720, H = 440, L = 70, R = 20, Tm = 40, Bm = 55;
  std::vector<std::pair<double, double>> tr, va;
  for (const LogRow& r : rows) {
    if (std::isfinite(r.train_loss)) tr.emplace_back(double(r.step), r.train_loss);
    if (std::isfinite(r.val_loss)) va.emplace_back(double(r.step), r.val_loss);
  }
  double x0 = 0, x1 = 1, y0 = INFINITY, y1 = -INFINITY;
  for (auto* s : {&tr, &va})
    for (auto& [x, y] : *s) x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
  if (!std::isfinite(y0)) y0 = 0, y1 = 1;
  if (y1 - y0 < 1e-9) y0 -= 0.5, y1 += 0.5;
  double ys = detail::nice_step(y0, y1, 6), xs = detail::nice_step(x0, x1, 8);
  y0 = std::floor(y0 / ys) * ys, y1 = std::ceil(y1 / ys) * ys;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - Bm - (y - y0) / (y1 - y0) * (H - Tm - Bm); };
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << W / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">" << title << "</text>\n";
  for (double y = y0; y <= y1 + ys / 2; y += ys) {
    s << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << py(y) << "\" y2=\"" << py(y)
      << "\" stroke=\"#e0e0e0\"/>\n<text x=\"" << L - 8 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">"
      << detail::fmt(y) << "</text>\n";
  }
  for (double x = x0; x <= x1 + xs / 2; x += xs) {
    s << "<line x1=\"" << px(x) << "\" x2=\"" << px(x) << "\" y1=\"" << Tm << "\" y2=\"" << H - Bm
      << "\" stroke=\"#f0f0f0\"/>\n<text x=\"" << px(x) << "\" y=\"" << H - Bm + 18 << "\" text-anchor=\"middle\">"
      << detail::fmt(x) << "</text>\n";
  }
  s << "<line x1=\"" << L << "\" x2=\"" << L << "\" y1=\"" << Tm << "\" y2=\"" << H - Bm << "\" stroke=\"black\"/>\n"
    << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << H - Bm << "\" y2=\"" << H - Bm << "\" stroke=\"black\"/>\n"
    << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">step</text>\n"
    << "<text x=\"18\" y=\"" << (Tm + H - Bm) / 2 << "\" text-anchor=\"middle\" transform=\"rotate(-90 18 "
    << (Tm + H - Bm) / 2 << ")\">cross-entropy loss</text>\n";
  auto series = [&](const std::vector<std::pair<double, double>>& pts, const char* color, const char* name, int slot) {
    if (pts.empty()) return;
    s << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.8\" points=\"";
    for (auto& [x, y] : pts) s << px(x) << ',' << py(y) << ' ';
    s << "\"/>\n";
    if (pts.size() < 60)
      for (auto& [x, y] : pts) s << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"2.5\" fill=\"" << color << "\"/>\n";
    double lx = W - R - 150, ly = Tm + 14 + 18 * slot;
    s << "<line x1=\"" << lx << "\" x2=\"" << lx + 24 << "\" y1=\"" << ly - 4 << "\" y2=\"" << ly - 4 << "\" stroke=\""
      << color << "\" stroke-width=\"2\"/>\n<text x=\"" << lx + 30 << "\" y=\"" << ly << "\">" << name << " ("
      << detail::fmt(pts.back().second) << ")</text>\n";
  };
  series(tr, "#1f77b4", "train", 0);
  series(va, "#d62728", "val", 1);
  s << "</svg>\n";
  return s.str();
}

}  // namespace loom::train
