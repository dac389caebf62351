#include "tests/unit/fixture_harness.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "tests/unit/golden_util.h"
#include "tests/unit/test_util.h"
#include "worker/backends/cpu/cpu_backend.h"
#include "worker/engine/generator.h"
#include "worker/engine/resident_provider.h"
#include "worker/offline/owned_image.h"
#include "worker/pager/pager.h"
#include "worker/pager/planner.h"

namespace paged::testing {

void ExpectDecodeAndPrefillMatch(const std::string& model, const std::string& format,
                                 const std::string& device, const std::vector<int32_t>& tokens,
                                 const std::vector<std::vector<double>>& want, double tol,
                                 const std::string& what, FixtureLogits* out) {
  *out = FixtureLogits{};
  out->decode = RunLogits(model, format, tokens, /*prefill=*/false, device);
  const auto& got = out->decode;
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t p = 0; p < got.size(); ++p) {
    ASSERT_EQ(got[p].size(), want[p].size()) << what;
    const double err = RelativeError(got[p], want[p]);
    out->worst = std::max(out->worst, err);
    EXPECT_LT(err, tol) << what << ", position " << p;
  }
  const auto pre = RunLogits(model, format, tokens, /*prefill=*/true, device);
  ASSERT_EQ(pre.size(), 1u) << what;
  EXPECT_LT(RelativeError(pre[0], want.back()), tol) << what << ", one prefill step";
}

void ExpectPagedEqualsResident(const std::string& model, const std::string& format,
                               const std::vector<int32_t>& tokens, int build_threads) {
  LayoutOptions layout;
  layout.weight_format = format;
  layout.kv_gib = 0.001;
  auto img = OwnedImage::Build(model, layout, build_threads);
  ASSERT_TRUE(img.ok()) << img.status();
  const ModelImage& image = (*img)->image();
  std::unique_ptr<Backend> backend = MakeCpuBackend(2);
  auto run = [&](WeightProvider* provider) {
    Engine engine(backend.get(), provider, image.config(), int(image.header->block_tokens));
    auto r = TeacherForcedLogits(engine, tokens, image.header->kv_n_blocks);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<std::vector<float>>{};
  };
  auto resident = ResidentProvider::Create(backend.get(), image);
  ASSERT_TRUE(resident.ok()) << resident.status();
  const auto want = run(resident->get());
  ASSERT_EQ(want.size(), tokens.size());
  PlanLimits limits;
  limits.budget_bytes = 1ull << 30;
  limits.max_step_tokens = 64;
  limits.max_step_seqs = 2;
  limits.max_step_kv_tokens = 256;
  limits.resident = "none";
  limits.slots = 2;
  auto plan = PlanMemory(*image.header, limits);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->n_resident, 0);
  auto pager = Pager::Create(backend.get(), image, *plan, PagerOptions{});
  ASSERT_TRUE(pager.ok()) << pager.status();
  const auto got = run(pager->get());
  ASSERT_EQ(got.size(), want.size());
  for (size_t p = 0; p < got.size(); ++p) EXPECT_EQ(got[p], want[p]) << "position " << p;
}

}  // namespace paged::testing
