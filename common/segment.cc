#include "common/segment.h"

#include <algorithm>
#include <atomic>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace paged {

namespace bip = boost::interprocess;

absl::Status CheckSegmentName(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 200 && name[0] != '.';
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-');
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("bad segment name '", std::string(name),
                   "': use 1-200 characters of [A-Za-z0-9._-], not starting with '.'"));
}

uint64_t ComputeHeaderChecksum(const SegmentHeader& h) {
  // FNV-1a over the header up to header_checksum, the state word read as 0
  // (hashed in three pieces: no copy of the large header).
  const auto* p = reinterpret_cast<const uint8_t*>(&h);
  constexpr size_t kState = offsetof(SegmentHeader, state);
  constexpr size_t kEnd = offsetof(SegmentHeader, header_checksum);
  const uint32_t zero = 0;
  uint64_t sum = Fnv1a64(p, kState);
  sum = Fnv1a64(&zero, sizeof(zero), sum);
  return Fnv1a64(p + kState + sizeof(zero), kEnd - kState - sizeof(zero), sum);
}

uint32_t LoadState(const SegmentHeader& h) {
  return std::atomic_ref<const uint32_t>(h.state).load(std::memory_order_acquire);
}

void StoreState(SegmentHeader& h, SegmentState s) {
  std::atomic_ref<uint32_t>(h.state).store(static_cast<uint32_t>(s), std::memory_order_release);
}

namespace {

absl::Status CheckTensor(const TensorEntry& t, uint64_t region_begin, uint64_t region_end,
                         std::string_view where) {
  auto bad = [&](std::string_view why) {
    return absl::DataLossError(absl::StrCat("segment header: ", std::string(where), " tensor '",
                                            std::string(t.name, strnlen(t.name, sizeof(t.name))),
                                            "': ", std::string(why)));
  };
  if (strnlen(t.name, sizeof(t.name)) == sizeof(t.name)) return bad("name not terminated");
  if (!IsDTypeId(t.dtype)) return bad("unknown dtype");
  if (t.rows <= 0 || t.cols <= 0 || t.rows > (int64_t{1} << 32) || t.cols > (int64_t{1} << 32))
    return bad("bad shape");
  const DType dt = t.Type();
  if (!RowFits(dt, t.cols))
    return bad(absl::StrCat(std::string(DTypeName(dt)), " rows of ", t.cols,
                            " values are not whole blocks of ", BlockValues(dt)));
  if (t.bytes != PayloadBytes(dt, uint64_t(t.rows), uint64_t(t.cols)))
    return bad("size does not match shape");
  auto inside = [&](uint64_t off, uint64_t n) {
    return off >= region_begin && off <= region_end && n <= region_end - off;
  };
  if (!inside(t.offset, t.bytes)) return bad("data outside its region");
  if (IsQuantized(dt)) {
    if (t.group == 0 || t.group > 4096) return bad("bad quantization group");
    const uint64_t groups = (uint64_t(t.cols) + t.group - 1) / t.group;
    if (t.scale_bytes != uint64_t(t.rows) * groups * 2)
      return bad("scale size does not match shape");
    if (!inside(t.scale_offset, t.scale_bytes)) return bad("scales outside its region");
  } else if (t.scale_bytes != 0) {
    return bad("scales on an unquantized tensor");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateHeader(const SegmentHeader& h, uint64_t segment_bytes) {
  auto bad = [](std::string_view why) {
    return absl::DataLossError(absl::StrCat("segment header: ", std::string(why)));
  };
  if (segment_bytes < sizeof(SegmentHeader)) return bad("segment smaller than a header");
  if (std::memcmp(h.magic, kSegmentMagic, sizeof(kSegmentMagic)) != 0)
    return bad("bad magic (not a paged segment)");
  if (h.layout_version != kLayoutVersion)
    return bad(
        absl::StrCat("layout version ", h.layout_version, ", this build reads ", kLayoutVersion));
  if (h.header_bytes != sizeof(SegmentHeader)) return bad("header size differs from this build's");
  if (h.header_checksum != ComputeHeaderChecksum(h)) return bad("checksum mismatch");
  if (h.total_bytes != segment_bytes)
    return bad(
        absl::StrCat("records ", h.total_bytes, " bytes but the segment has ", segment_bytes));
  RETURN_IF_ERROR(Annotate(ValidateConfig(h.model), "segment header"));
  auto region_ok = [&](uint64_t off, uint64_t n) {
    return off <= segment_bytes && n <= segment_bytes - off;
  };
  // Everything but the KV pool lies before it: workers map that part read-only.
  if (h.kv_offset % kSegmentAlign != 0 || !region_ok(h.kv_offset, h.kv_bytes))
    return bad("KV pool out of bounds");
  auto weights_ok = [&](uint64_t off, uint64_t n) {
    return off <= h.kv_offset && n <= h.kv_offset - off;
  };
  if (!weights_ok(h.globals_offset, h.globals_bytes)) return bad("globals region out of bounds");
  if (h.model.n_layers > kMaxSegmentLayers)
    return bad(absl::StrCat(h.model.n_layers, " layers, more than the header's ", kMaxSegmentLayers,
                            " layer tables"));
  if (h.layer_block_bytes == 0 || h.layer_used_bytes > h.layer_block_bytes ||
      h.layer_block_bytes % kSegmentAlign != 0 || h.layers_offset % kSegmentAlign != 0)
    return bad("bad layer block geometry");
  if (h.layer_block_bytes > segment_bytes / uint64_t(h.model.n_layers) ||
      !weights_ok(h.layers_offset, h.layer_block_bytes * uint64_t(h.model.n_layers)))
    return bad("layer blocks out of bounds");
  if (!weights_ok(h.tokenizer_offset, h.tokenizer_bytes))
    return bad("tokenizer region out of bounds");
  if (h.block_tokens == 0 || h.block_tokens > 4096) return bad("bad KV block size");
  if (h.kv_dtype > static_cast<uint32_t>(DType::kBF16)) return bad("bad KV dtype");
  const uint64_t elt = h.kv_dtype == static_cast<uint32_t>(DType::kF32) ? 4 : 2;
  if (h.kv_block_bytes != 2ull * h.block_tokens * uint64_t(h.model.kv_dim()) * elt)
    return bad("KV block size does not match the model");
  if (h.kv_n_blocks > h.kv_bytes / h.kv_block_bytes / uint64_t(h.model.n_layers))
    return bad("KV pool too small for its blocks");
  if (h.n_global_tensors > kMaxGlobalTensors) return bad("too many tensors");
  for (uint32_t i = 0; i < h.n_global_tensors; ++i) {
    RETURN_IF_ERROR(CheckTensor(h.global_tensors[i], h.globals_offset,
                                h.globals_offset + h.globals_bytes, "global"));
  }
  // Every layer's own table, each offset against the layer's used bytes,
  // which no layer has more of than the slot size layer_used_bytes.
  uint64_t largest = 0;
  for (int l = 0; l < h.model.n_layers; ++l) {
    const LayerTable& t = h.layers[l];
    if (t.n_tensors == 0) return bad(absl::StrCat("layer ", l, " has no tensors"));
    if (t.n_tensors > kMaxLayerTensors)
      return bad(absl::StrCat("layer ", l, ": too many tensors (", t.n_tensors, ")"));
    if (t.used_bytes > h.layer_used_bytes)
      return bad(absl::StrCat("layer ", l, " uses ", t.used_bytes, " bytes, more than the ",
                              h.layer_used_bytes, " of the largest layer"));
    largest = std::max(largest, t.used_bytes);
    const std::string where = absl::StrCat("layer ", l);
    for (uint32_t i = 0; i < t.n_tensors; ++i)
      RETURN_IF_ERROR(CheckTensor(t.tensors[i], 0, t.used_bytes, where));
    // A sparse layer's experts: inside the block, after its dense part.
    const ExpertTable& x = t.experts;
    if ((x.n_experts > 0) != h.model.IsMoeLayer(l) ||
        (x.n_experts > 0 && int64_t(x.n_experts) != h.model.n_experts))
      return bad(absl::StrCat("layer ", l, ": ", x.n_experts, " experts, the config says ",
                              h.model.IsMoeLayer(l) ? h.model.n_experts : 0));
    if (x.n_experts > 0) {
      if (x.n_tensors != uint32_t(kExpertTensors) || x.offset % kTensorAlign != 0 ||
          x.stride % kTensorAlign != 0 || x.offset < x.dense_bytes ||
          x.dense_bytes > t.used_bytes || x.expert_bytes > x.stride ||
          x.stride > t.used_bytes / x.n_experts || x.offset > t.used_bytes ||
          uint64_t(x.n_experts) * x.stride > t.used_bytes - x.offset)
        return bad(absl::StrCat("layer ", l, ": bad expert geometry"));
      const std::string in = absl::StrCat(where, " expert");
      for (int i = 0; i < kExpertTensors; ++i)
        RETURN_IF_ERROR(CheckTensor(x.tensors[i], 0, x.expert_bytes, in));
    }
  }
  if (largest != h.layer_used_bytes) return bad("layer_used_bytes is not the largest layer's");
  if (h.FindGlobal("tok_embd") == nullptr || h.FindGlobal("output_norm") == nullptr ||
      (!h.model.tied_embeddings && h.FindGlobal("output") == nullptr))
    return bad("missing a global tensor");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SegmentMapping>> SegmentMapping::Open(const std::string& name,
                                                                     Access access) {
  RETURN_IF_ERROR(CheckSegmentName(name));
  std::unique_ptr<SegmentMapping> m(new SegmentMapping());
  m->name_ = name;
  try {
    const bool writable_kv = access == Access::kWorker;
    bip::shared_memory_object shm(bip::open_only, name.c_str(),
                                  writable_kv ? bip::read_write : bip::read_only);
    bip::offset_t size = 0;
    if (!shm.get_size(size) || size < bip::offset_t(sizeof(SegmentHeader)))
      return absl::DataLossError(absl::StrCat("segment ", name, ": too small to hold a header"));
    m->size_ = uint64_t(size);
    // Map the header alone first: the regions' bounds come from it.
    auto copy = std::make_unique<SegmentHeader>();
    SegmentHeader& h = *copy;
    {
      bip::mapped_region hr(shm, bip::read_only, 0, sizeof(SegmentHeader));
      std::memcpy(&h, hr.get_address(), sizeof(h));
      h.state = LoadState(*static_cast<const SegmentHeader*>(hr.get_address()));
    }
    if (h.state != static_cast<uint32_t>(SegmentState::kReady))
      return absl::FailedPreconditionError(
          absl::StrCat("segment ", name, " is ", std::string(SegmentStateName(h.state)),
                       ", not READY (is paged-store still loading?)"));
    RETURN_IF_ERROR(Annotate(ValidateHeader(h, m->size_), absl::StrCat("segment ", name)));
    m->weights_region_ = std::make_unique<bip::mapped_region>(shm, bip::read_only, 0, h.kv_offset);
    m->weights_ = static_cast<const uint8_t*>(m->weights_region_->get_address());
    if (h.kv_bytes > 0) {
      m->kv_region_ = std::make_unique<bip::mapped_region>(
          shm, writable_kv ? bip::read_write : bip::read_only, h.kv_offset, h.kv_bytes);
      m->kv_ = static_cast<uint8_t*>(m->kv_region_->get_address());
    }
    m->header_ = reinterpret_cast<const SegmentHeader*>(m->weights_);
    // The store may have rebuilt the segment between the two maps.
    if (m->header_->generation != h.generation || m->header_->header_checksum != h.header_checksum)
      return absl::AbortedError(absl::StrCat("segment ", name, " changed while mapping it; retry"));
  } catch (const bip::interprocess_exception& e) {
    if (e.get_error_code() == bip::not_found_error)
      return absl::NotFoundError(
          absl::StrCat("segment ", name, " does not exist (is paged-store running?)"));
    if (e.get_error_code() == bip::security_error)
      return absl::PermissionDeniedError(absl::StrCat("segment ", name, ": permission denied"));
    return absl::UnavailableError(absl::StrCat("segment ", name, ": ", e.what()));
  }
  return m;
}

SegmentMapping::~SegmentMapping() = default;

absl::StatusOr<std::unique_ptr<SegmentHeader>> PeekSegmentHeader(const std::string& name,
                                                                 uint64_t* size) {
  RETURN_IF_ERROR(CheckSegmentName(name));
  try {
    bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_only);
    bip::offset_t n = 0;
    if (!shm.get_size(n) || n < bip::offset_t(sizeof(SegmentHeader)))
      return absl::DataLossError(absl::StrCat("segment ", name, ": too small to hold a header"));
    *size = uint64_t(n);
    bip::mapped_region hr(shm, bip::read_only, 0, sizeof(SegmentHeader));
    auto h = std::make_unique<SegmentHeader>();
    std::memcpy(h.get(), hr.get_address(), sizeof(SegmentHeader));
    h->state = LoadState(*static_cast<const SegmentHeader*>(hr.get_address()));
    return h;
  } catch (const bip::interprocess_exception& e) {
    if (e.get_error_code() == bip::not_found_error)
      return absl::NotFoundError(
          absl::StrCat("segment ", name, " does not exist (is paged-store running?)"));
    return absl::UnavailableError(absl::StrCat("segment ", name, ": ", e.what()));
  }
}

absl::StatusOr<TokenizerBundle> SegmentMapping::ReadTokenizerBundle() const {
  if (header_->tokenizer_bytes == 0) return TokenizerBundle{};
  absl::StatusOr<TokenizerBundle> b = ParseTokenizerBundle(
      std::string_view(reinterpret_cast<const char*>(weights_ + header_->tokenizer_offset),
                       header_->tokenizer_bytes));
  if (!b.ok()) return Annotate(b.status(), absl::StrCat("segment ", name_));
  if (static_cast<uint32_t>(b->kind) != header_->tokenizer_kind)
    return absl::DataLossError(absl::StrCat("segment ", name_, ": the header's tokenizer kind ",
                                            header_->tokenizer_kind, " differs from its blob's ",
                                            static_cast<uint32_t>(b->kind)));
  return b;
}

absl::StatusOr<Vocab> SegmentMapping::ReadVocab() const {
  if (header_->tokenizer_kind != static_cast<uint32_t>(TokenizerKind::kSentencePieceGguf))
    return absl::NotFoundError(
        absl::StrCat("segment ", name_, " carries no SentencePiece vocabulary"));
  ASSIGN_OR_RETURN(TokenizerBundle b, ReadTokenizerBundle());
  return ParseVocab(b.payload);
}

void RemoveSegment(const std::string& name) { bip::shared_memory_object::remove(name.c_str()); }

}  // namespace paged
