#pragma once
// Loads the PyTorch reference fixtures that tests/fixtures/make_*fixtures.py write:
//   tensor <name> <float32|int64> <ndim> <size_0> ... <size_ndim-1>
//   <value_0> <value_1> ...            (one line, row-major)
// and compares tensors normwise: max|got - want| / max|want|.
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <loom/loom.hpp>

#include "catch.hpp"

namespace loom_test {

struct Fixture {
  std::map<std::string, loom::Tensor<float>> f;    // float32 tensors
  std::map<std::string, loom::Tensor<int64_t>> i;  // int64 tensors
};

inline Fixture load_fixture(const std::string& name) {
  std::string path = std::string(LOOM_TEST_DATA_DIR) + "/../fixtures/" + name;
  std::ifstream in(path);
  REQUIRE(in.good());
  Fixture fx;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream hs(line);
    std::string kw, tname, dtype;
    int ndim = 0;
    hs >> kw >> tname >> dtype >> ndim;
    REQUIRE(kw == "tensor");
    REQUIRE((dtype == "float32" || dtype == "int64"));
    std::vector<int64_t> dims(static_cast<size_t>(ndim), 0);
    for (auto& d : dims) hs >> d;
    loom::Shape shape(dims);
    std::string values;
    std::getline(in, values);
    std::istringstream vs(values);
    if (dtype == "int64") {
      std::vector<int64_t> v(static_cast<size_t>(loom::numel_of(shape)), 0);
      for (auto& e : v) vs >> e;
      fx.i[tname] = loom::from_vector(v, shape);
    } else {
      std::vector<float> v(static_cast<size_t>(loom::numel_of(shape)), 0.0f);
      for (auto& e : v) vs >> e;
      fx.f[tname] = loom::from_vector(v, shape);
    }
    REQUIRE_FALSE(vs.fail());
  }
  return fx;
}

inline double rel_error(const loom::Tensor<float>& got, const loom::Tensor<float>& want) {
  REQUIRE(got.shape() == want.shape());
  double scale = loom::max(loom::abs(want.to<double>())).item();
  return loom::max(loom::abs(got.to<double>() - want.to<double>())).item() / scale;
}

}  // namespace loom_test
