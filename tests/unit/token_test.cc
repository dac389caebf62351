// Where the bearer token comes from (common/token.h): the flag, a file, the
// environment, a systemd credential; never required on a command line.
#include "common/token.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>

#include "tests/unit/test_util.h"

namespace paged {
namespace {

using ::testing::HasSubstr;

class TokenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::unsetenv(kTokenEnv);
    ::unsetenv("CREDENTIALS_DIRECTORY");
  }
  void TearDown() override { SetUp(); }
  testing::TempDir dir_;
};

TEST_F(TokenTest, EachSourceInOrder) {
  EXPECT_EQ(*ResolveToken("", ""), "");  // none configured
  testing::WriteFile(dir_.File("paged-token"), "from-credential\n");
  ::setenv("CREDENTIALS_DIRECTORY", dir_.path().c_str(), 1);
  EXPECT_EQ(*ResolveToken("", ""), "from-credential");
  ::setenv(kTokenEnv, "from-env", 1);
  EXPECT_EQ(*ResolveToken("", ""), "from-env");
  testing::WriteFile(dir_.File("token"), "  from-file \n\n");
  EXPECT_EQ(*ResolveToken("", dir_.File("token")), "from-file");  // trimmed
  EXPECT_EQ(*ResolveToken("from-flag", dir_.File("token")), "from-flag");
}

TEST_F(TokenTest, AnUnreadableOrEmptyFileIsAnError) {
  auto missing = ResolveToken("", dir_.File("missing"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr(dir_.File("missing")));
  testing::WriteFile(dir_.File("empty"), "\n");
  auto empty = ResolveToken("", dir_.File("empty"));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("is empty"));
  // A credentials directory without our credential: no token, no error.
  ::setenv("CREDENTIALS_DIRECTORY", dir_.path().c_str(), 1);
  EXPECT_EQ(*ResolveToken("", ""), "");
}

}  // namespace
}  // namespace paged
