// Every binary's --help names its own flags with their meaning (abseil's
// usage config in common/cli.cc), not abseil's "No flags matched".
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "tests/unit/test_util.h"

namespace paged {
namespace {

using testing::BinaryPath;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunCommand;

struct HelpCase {
  const char* binary;
  std::vector<const char*> flags;  // some of its flags, with part of their meaning
};

void PrintTo(const HelpCase& c, std::ostream* os) { *os << c.binary; }

class HelpTest : public ::testing::TestWithParam<HelpCase> {};

TEST_P(HelpTest, ListsItsFlagsWithTheirMeaning) {
  const HelpCase& c = GetParam();
  auto [code, out] = RunCommand({BinaryPath(c.binary), "--help"});
  EXPECT_EQ(code, 1) << out;  // abseil's --help exits 1 after printing
  EXPECT_THAT(out, Not(HasSubstr("No flags matched")));
  for (const char* f : c.flags) EXPECT_THAT(out, HasSubstr(f)) << c.binary;
}

INSTANTIATE_TEST_SUITE_P(
    Binaries, HelpTest,
    ::testing::Values(HelpCase{"paged-store", {"--model (", "--segment (", "--weight_format ("}},
                      HelpCase{"paged", {"--segment (", "--listen (", "--http ("}},
                      HelpCase{"paged-worker",
                               {"--segment (", "--gpu_budget (device memory budget", "--slots ("}},
                      HelpCase{"paged-up", {"--model (", "--device ("}},
                      HelpCase{"paged-run", {"--model (", "--prompt ("}},
                      HelpCase{"pagectl", {"--preset (", "--segment ("}}),
    [](const auto& info) {
      std::string name = info.param.binary;
      for (char& ch : name) ch = (ch == '-') ? '_' : ch;
      return name;
    });

}  // namespace
}  // namespace paged
