#include "worker/pager/host_profile.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace paged {

absl::StatusOr<std::vector<std::pair<int, double>>> MeasureHostExecutor(
    HostExecutor& host, const ModelImage& image, int layer, const std::vector<int>& rows,
    int repeats) {
  constexpr std::string_view kMatrices[] = {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"};
  // Layers may differ in their types (mixed GGUF files): the host must read
  // every layer's, not only the measured one's.
  for (int l = 0; l < image.config().n_layers; ++l) {
    for (std::string_view name : kMatrices) {
      const WeightRef w = image.LayerTensor(l, name);
      if (w.rows > 0 && !host.Supports(w.dtype))
        return absl::UnimplementedError(
            absl::StrCat("the host executor cannot read ", std::string(DTypeName(w.dtype)),
                         " weights (layer ", l, " ", std::string(name), ")"));
    }
  }
  std::vector<WeightRef> mats;
  uint64_t bytes = 0;
  int64_t widest = 0, tallest = 0;
  for (std::string_view name : kMatrices) {
    const WeightRef w = image.LayerTensor(layer, name);
    if (w.rows == 0) continue;
    mats.push_back(w);
    bytes += PayloadBytes(w.dtype, uint64_t(w.rows), uint64_t(w.cols));
    widest = std::max(widest, w.cols);
    tallest = std::max(tallest, w.rows);
  }
  std::vector<std::pair<int, double>> out;
  if (mats.empty()) return out;
  const int max_n = rows.empty() ? 1 : *std::max_element(rows.begin(), rows.end());
  std::vector<float> x(size_t(max_n) * size_t(widest), 0.01f);
  std::vector<float> y(size_t(max_n) * size_t(tallest));
  for (int n : rows) {
    double best = 1e30;
    for (int r = 0; r < std::max(repeats, 1); ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      for (const WeightRef& w : mats)
        host.MatMul(x.data(), n, w, 0, w.rows, nullptr, y.data(), w.rows);
      best = std::min(best,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    out.emplace_back(n, double(bytes) / std::max(best, 1e-9) / 1e9);
  }
  return out;
}

}  // namespace paged
