// pagectl's commands, each returning the process exit code. main.cc only
// parses flags and picks one.
#pragma once

#include <cstdint>
#include <string>

namespace paged::pagectl {

struct Flags {
  std::string segment, model, weight_format = "native";
  bool json = false;
  // plan
  std::string gpu_budget = "4GiB";
  int slots = 2;
  std::string resident = "auto";
  double link_gbs = 55.0;
  // make-model
  std::string preset, out, dtype = "f16";
  int layers = 0;
  uint64_t seed = 1;
};

int MakeModelCommand(const Flags& f);
int InspectCommand(const Flags& f);
int VerifyCommand(const Flags& f);
int PlanCommand(const Flags& f);

}  // namespace paged::pagectl
