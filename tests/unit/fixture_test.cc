// PAGED_REQUIRE_FIXTURE: a missing fixture fails a test under CI instead of
// skipping it silently, and skips elsewhere.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

#include "tests/unit/test_util.h"

namespace paged {
namespace {

void NeedsAMissingFixture() { PAGED_REQUIRE_FIXTURE(std::string(), "the missing fixture"); }

TEST(FixtureTest, AMissingFixtureFailsUnderCi) {
  const char* old = std::getenv("CI");
  const std::string saved = old ? old : "";
  ::setenv("CI", "true", 1);
  EXPECT_FATAL_FAILURE(NeedsAMissingFixture(),
                       "the missing fixture is missing (required under CI)");
  if (old) {
    ::setenv("CI", saved.c_str(), 1);
  } else {
    ::unsetenv("CI");
  }
}

TEST(FixtureTest, UnderCiFollowsTheEnvironment) {
  const char* old = std::getenv("CI");
  const std::string saved = old ? old : "";
  ::setenv("CI", "true", 1);
  EXPECT_TRUE(testing::UnderCi());
  ::setenv("CI", "false", 1);
  EXPECT_FALSE(testing::UnderCi());
  ::unsetenv("CI");
  EXPECT_FALSE(testing::UnderCi());
  if (old) ::setenv("CI", saved.c_str(), 1);
}

TEST(FixtureTest, TheSharedModelIsHereUnderCi) {
  // The suite's transcript and crash tests depend on it.
  PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
  EXPECT_FALSE(testing::StoriesTranscript().empty());
}

}  // namespace
}  // namespace paged
