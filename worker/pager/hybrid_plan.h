// The hybrid step's split (docs/design.md, "Two paths to the weights"): how
// much of each paged matrix the host computes in place while the device
// computes the rest from rows copied over the link, chosen per step from
// the step's token rows and from bandwidths measured at a worker's start.
// Pure functions of their inputs: tested from a table, shown by `pagectl
// plan` and by the worker at start.
//
// Per paged layer of B weight bytes, with a host share s of every matrix:
//   link time  (1 - s) B / link_gbps      (the device's rows, copied ahead)
//   host time       s  B / host_gbps(n)   (read in place, n token rows)
// Layers run in order and copies run ahead, so a step's paged layers take
// max(link, host) each: both finish together at s = host / (host + link),
// where the step reads weights at link + host GB/s. At small n the host is
// memory-bound (host_gbps near the DRAM bandwidth); as n grows it becomes
// compute-bound and s falls, until the share is not worth the step's extra
// synchronizations and the step pages everything (s = 0).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace paged {

// What the split is made from, measured at a worker's start.
struct HybridProfile {
  double link_gbps = 0;  // host -> device, one layer copy (Pager::link_gbps)
  // The host executor on one layer's matrices: weight GB read per second at
  // n token rows, for increasing n. Between two points the time per byte is
  // interpolated in n; beyond the last it grows in proportion to n (compute
  // bound), before the first it is the first's.
  std::vector<std::pair<int, double>> host_gbps;
  // What the host's memory gives both paths together, GB/s: the link's DMA
  // and the host's products read the same DRAM (docs/hybrid.md: 138 on the
  // GPU machine measured, against 55 + 108 alone). 0: unknown, the two add.
  // Given by the operator (pagectl plan --memory-gbs), not measured at start.
  double memory_gbps = 0;
};

// --host-compute: auto (the balance above, then tuned on the steps that
// run: ShareTuner) | planned (the balance alone) | off | a fixed share in
// [0, 1].
struct HybridPolicy {
  enum class Mode { kAuto, kOff, kFixed };
  Mode mode = Mode::kAuto;
  double fixed_share = 0;
  bool tune = true;  // kAuto: correct the planned share by measured steps
};
absl::StatusOr<HybridPolicy> ParseHybridPolicy(const std::string& flag);

// Below this share the host's part is not worth a step's synchronizations
// (each product waits for its input to come down and its host rows to go
// up, so a split step reached only about half of its bound on the GPU
// machine). Measured there (docs/hybrid.md), batch-1 decode split with
// 46-65% of the rows on the host ran 1.0-2.2x faster than all paged (f16,
// int8, int4), Q4_K_M with 42% ran 23% slower: the threshold lies between.
inline constexpr double kMinHostShare = 0.45;
// Above this many token rows auto gives the host nothing: measured on the
// GPU machine (docs/hybrid.md), steps of 32 and 64 rows ran slower split than
// paged although the balance above predicted a gain (the host's share is on
// the step's critical path with its synchronizations, and its kernels leave
// the memory-bound regime past a few rows).
inline constexpr int kMaxHostRows = 8;

// The host's effective GB/s at n token rows (0 when nothing was measured).
double HostGbps(const HybridProfile& p, int n);

// The share of each paged matrix's rows the host computes in a step of n
// token rows: 0 (all paged) .. 1 (all on the host).
double HostShare(const HybridProfile& p, const HybridPolicy& policy, int n);

// Seconds a step of n token rows spends on `paged_bytes` of paged weights
// with host share s: max(link, host) as above, and with both paths at work
// no less than the bytes over memory_gbps where that is known. The share
// itself stays the balance: the memory's bound is the same for every split.
double PagedSeconds(const HybridProfile& p, double s, int n, double paged_bytes);

// The planned share comes from bandwidths each measured alone at start. In
// a step they are not alone: the host's reads share the memory with the
// link's DMA, each product waits for its input to come down and its rows to
// go up, and copies can stall behind other traffic (docs/hybrid.md): the
// share at which both paths really finish together may differ from the
// planned one, by machine and load. The tuner finds it on the steps
// themselves: per step
// size (token rows), it runs `samples` steps at its current share and
// `samples` at a probe `delta` above or below, compares the median step
// times (the first step of each run is dropped: its first layers were
// copied for the share before), moves to the probe when it is at least
// `min_gain` faster, else tries the other side, then halves delta; below
// `min_delta` it has settled, and it probes again every `recheck_steps`
// steps (the load may change). A pure state machine: the caller times the
// steps.
class ShareTuner {
 public:
  struct Options {
    double delta = 0.08;
    double min_delta = 0.02;
    int samples = 3;
    double min_gain = 0.01;
    int recheck_steps = 512;
    double lo = 0.05, hi = 0.95;  // the shares it may try
  };
  ShareTuner() : ShareTuner(Options{}) {}
  explicit ShareTuner(Options o) : o_(o) {}

  // The share for the next step of n token rows; `planned`: HostShare's.
  // A planned 0 (the host gets nothing at this size) is not tuned.
  double Next(int n, double planned);
  // The seconds the step begun by the last Next took.
  void Observe(double seconds);
  // The share the tuner holds for n (its best so far); -1: not tuned.
  double Current(int n) const;
  // Whether it has settled for n (delta below min_delta).
  bool Settled(int n) const;

 private:
  struct State {
    double center = 0, delta = 0;
    int dir = 1, tried = 0;  // sides tried at this delta
    bool probing = false;    // running the probe, else the center
    int step = 0;            // steps of the current run
    std::vector<double> center_times, probe_times;
    int settled_steps = -1;  // >= 0: settled, steps since
  };
  double Probe(const State& s) const;
  // The state of steps of n rows, or null.
  const State* Find(int n) const;
  State* Find(int n) { return const_cast<State*>(std::as_const(*this).Find(n)); }
  Options o_;
  std::vector<std::pair<int, State>> states_;
  State* last_ = nullptr;
};

// A few lines for people: the split and the predicted paged-weight time at
// n = 1, 8, 64 and 512 token rows.
std::string DescribeHybrid(const HybridProfile& p, const HybridPolicy& policy, double paged_bytes);

}  // namespace paged
