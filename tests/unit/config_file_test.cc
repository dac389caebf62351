// The key = value config file: sections, order (command line wins),
// comments, quoting, and errors naming file and line.
#include "common/config_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "tests/unit/test_util.h"

namespace paged {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The flags of a pretend paged-store.
bool StoreFlag(const std::string& name) {
  static const std::set<std::string> flags = {"model", "segment", "kv_gib", "remove_on_exit",
                                              "group"};
  return flags.count(name) > 0;
}

TEST(ConfigFileTest, GlobalThenSectionKeysAsFlags) {
  const char* text = R"(# paged.conf
[global]
segment = prod      # not a comment: kept in the value
token = secret

[store]
model=/var/lib/paged/models/x
  kv_gib   =  2.5
remove-on-exit = true
group = ""

[worker]
gpu-budget = 8GiB
[coordinator]
max-queue = 10
)";
  auto args = ParseConfigText(text, "paged.conf", "store", StoreFlag);
  ASSERT_TRUE(args.ok()) << args.status();
  // token is a [global] key the store has no flag for: not passed.
  EXPECT_THAT(*args, ElementsAre("--segment=prod      # not a comment: kept in the value",
                                 "--model=/var/lib/paged/models/x", "--kv-gib=2.5",
                                 "--remove-on-exit=true", "--group="));
}

TEST(ConfigFileTest, EmptyFileGivesNoFlags) {
  auto args = ParseConfigText("\n# nothing\n", "f", "store", StoreFlag);
  ASSERT_TRUE(args.ok());
  EXPECT_TRUE(args->empty());
}

TEST(ConfigFileTest, ErrorsNameTheFileAndLine) {
  struct Case {
    const char* text;
    const char* want;
  };
  const Case cases[] = {
      {"[store]\nkv-gb = 2\n", "f.conf:2: unknown key 'kv-gb' in [store]"},
      {"[stor]\n", "f.conf:1: unknown section [stor]"},
      {"[store\n", "f.conf:1: expected [section]"},
      {"\n[store]\nmodel\n", "f.conf:3: expected key = value"},
      {"model = x\n", "f.conf:1: 'model' outside a section"},
      {"[store]\nmodel = a\nmodel = b\n", "f.conf:3: 'model' already set in [store] on line 2"},
      {"[global]\nkv-gib = 1\n", "f.conf:2: unknown key 'kv-gib' in [global]"},
      {"[store]\nbad key = 1\n", "f.conf:2: bad key"},
      {"[store]\nconfig = other.conf\n", "f.conf:2: 'config' cannot be set"},
  };
  for (const Case& c : cases) {
    auto args = ParseConfigText(c.text, "f.conf", "store", StoreFlag);
    ASSERT_FALSE(args.ok()) << c.text;
    EXPECT_EQ(args.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(args.status().message()), HasSubstr(c.want)) << c.text;
  }
}

TEST(ConfigFileTest, OtherSectionsAreCheckedForFormOnly) {
  // The store cannot know the worker's flags; the worker checks them.
  auto args = ParseConfigText("[worker]\nnot-a-store-flag = 1\n", "f", "store", StoreFlag);
  ASSERT_TRUE(args.ok());
  EXPECT_TRUE(args->empty());
}

TEST(ConfigFileTest, ArgsWithConfigPutsTheFileBeforeTheCommandLine) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("paged.conf"),
                     "[global]\nsegment = from-file\n[store]\nkv-gib = 2\n");
  for (const std::vector<std::string>& given :
       {std::vector<std::string>{"paged-store", "--config", dir.File("paged.conf"), "--kv-gib=3"},
        std::vector<std::string>{"paged-store", "--config=" + dir.File("paged.conf"),
                                 "--kv-gib=3"}}) {
    std::vector<std::string> copy = given;
    std::vector<char*> argv;
    for (std::string& a : copy) argv.push_back(a.data());
    auto args = ArgsWithConfig(int(argv.size()), argv.data(), "store", StoreFlag);
    ASSERT_TRUE(args.ok()) << args.status();
    std::vector<std::string> want = {"paged-store", "--segment=from-file", "--kv-gib=2"};
    want.insert(want.end(), given.begin() + 1, given.end());
    EXPECT_EQ(*args, want);
  }
}

TEST(ConfigFileTest, ArgsWithConfigWithoutConfigOrWithAMissingFile) {
  std::vector<std::string> plain = {"paged-store", "--kv-gib=3", "--", "--config=x"};
  std::vector<char*> argv;
  for (std::string& a : plain) argv.push_back(a.data());
  auto args = ArgsWithConfig(int(argv.size()), argv.data(), "store", StoreFlag);
  ASSERT_TRUE(args.ok());
  EXPECT_EQ(*args, plain);  // --config after "--" is positional

  std::vector<std::string> missing = {"paged-store", "--config=/nonexistent/paged.conf"};
  argv.clear();
  for (std::string& a : missing) argv.push_back(a.data());
  args = ArgsWithConfig(int(argv.size()), argv.data(), "store", StoreFlag);
  EXPECT_EQ(args.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(args.status().message()), HasSubstr("/nonexistent/paged.conf"));

  std::vector<std::string> dangling = {"paged-store", "--config"};
  argv.clear();
  for (std::string& a : dangling) argv.push_back(a.data());
  args = ArgsWithConfig(int(argv.size()), argv.data(), "store", StoreFlag);
  EXPECT_EQ(args.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConfigFileTest, TheShippedDefaultConfigParsesForEveryBinary) {
  const std::string text = testing::ReadFile(testing::SourceDir() + "/systemd/paged.conf");
  ASSERT_FALSE(text.empty());
  for (const char* section : {"store", "worker", "coordinator"}) {
    auto args =
        ParseConfigText(text, "paged.conf", section, [](const std::string&) { return true; });
    EXPECT_TRUE(args.ok()) << section << ": " << args.status();
  }
}

}  // namespace
}  // namespace paged
