#include <algorithm>
#include <cmath>

#include "bench/quant_quality.h"
#include "common/status.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

namespace paged {
namespace {

absl::StatusOr<std::vector<std::vector<float>>> Logits(const std::string& path,
                                                       const std::string& format,
                                                       const std::vector<int32_t>& tokens) {
  LayoutOptions layout;
  layout.weight_format = format;
  layout.kv_gib = 0.01;
  ASSIGN_OR_RETURN(auto m, LocalModel::Load(path, layout, "cpu"));
  return TeacherForcedLogits(*m->engine, tokens, m->kv_blocks());
}

size_t ArgMax(const std::vector<float>& v) {
  return size_t(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

absl::StatusOr<std::vector<FormatQuality>> MeasureQuality(const std::string& model_path,
                                                          const std::vector<int32_t>& tokens,
                                                          const std::vector<std::string>& formats) {
  ASSIGN_OR_RETURN(auto ref, Logits(model_path, "f32", tokens));
  std::vector<FormatQuality> out;
  for (const std::string& f : formats) {
    ASSIGN_OR_RETURN(auto got, Logits(model_path, f, tokens));
    FormatQuality q;
    q.format = f;
    int agree = 0;
    for (size_t p = 0; p < ref.size(); ++p) {
      agree += ArgMax(ref[p]) == ArgMax(got[p]);
      double num = 0, den = 0;
      for (size_t i = 0; i < ref[p].size(); ++i) {
        num += double(got[p][i] - ref[p][i]) * (got[p][i] - ref[p][i]);
        den += double(ref[p][i]) * ref[p][i];
      }
      const double rel = std::sqrt(num / den);
      q.mean_rel_error += rel / double(ref.size());
      q.max_rel_error = std::max(q.max_rel_error, rel);
    }
    q.top1_agreement = double(agree) / double(ref.size());
    out.push_back(q);
  }
  return out;
}

}  // namespace paged
