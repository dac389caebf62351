// pagectl: the admin CLI of paged.
#include <cstdio>
#include <string>
#include <vector>

#include "client/pagectl/commands.h"
#include "client/pagectl/flags.h"
#include "common/cli.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args = paged::ParseFlags(argc, argv, paged::pagectl::kUsage);
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\n", paged::pagectl::kUsage);
    return 2;
  }
  paged::pagectl::Flags f = paged::pagectl::FlagsFromCommandLine();
  f.args.assign(args.begin() + 2, args.end());
  return paged::pagectl::RunCommand(args[1], f, paged::pagectl::kUsage);
}
