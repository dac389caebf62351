// pagectl's commands, each returning the process exit code. main.cc only
// parses flags and picks one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "paged/client.h"

namespace paged::pagectl {

struct Flags {
  std::string segment, model, weight_format = "native";
  bool json = false;
  // plan
  std::string gpu_budget = "4GiB";
  int slots = 2;
  std::string resident = "auto";
  double link_gbs = 55.0;
  std::string host_compute = "auto";  // the hybrid step's policy (hybrid_plan.h)
  double host_gbs = 0;                // host executor GB/s at 1 row; 0: measure (--segment)
  double memory_gbs = 0;              // host memory for both paths together; 0: they add
  // make-model (out: also dump-tensor's output file)
  std::string preset, out, dtype = "f16";
  double router_skew = 0;  // make-model: uneven routing of a mixture of experts
  // dump-tensor
  std::string tensor, rows;
  int layer = -1;
  int layers = 0;
  uint64_t seed = 1;  // also generate's sampling seed
  // commands that talk to a server (generate, status, workers, ...)
  std::string server = "unix:///tmp/paged.sock";
  std::string token;  // resolved: --token, --token-file, $PAGED_TOKEN, the systemd credential
  client::TlsOptions tls;
  absl::Duration timeout = absl::ZeroDuration();  // 0: the command's default
  // generate
  std::string prompt;         // "-": read stdin
  std::string prompt_tokens;  // "1,2,3"
  int max_tokens = 128;
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  bool ignore_eos = false;
  // chat
  std::string system;  // the system message ("" none)
  // status
  bool wait_ready = false;  // wait until the service can generate, with progress
  // Positional arguments after the command (cancel ID, drain WORKER).
  std::vector<std::string> args;
};

// Runs `command` (make-model, generate, status, ...) and returns the exit
// code; an unknown command or a wrong number of arguments is a usage error (2).
int RunCommand(const std::string& command, const Flags& f, const char* usage);

int MakeModelCommand(const Flags& f);
int InspectCommand(const Flags& f);
int VerifyCommand(const Flags& f);
int DumpTensorCommand(const Flags& f);
int PlanCommand(const Flags& f);

// Through the C++ SDK (client/sdk) against --server, each with --json.
int GenerateCommand(const Flags& f);
int ChatCommand(const Flags& f);  // client/pagectl/chat.h
int StatusCommand(const Flags& f);
int WorkersCommand(const Flags& f);
int SequencesCommand(const Flags& f);
int CancelCommand(const Flags& f);
int DrainCommand(const Flags& f);
int ModelsCommand(const Flags& f);

}  // namespace paged::pagectl
