// Mapping an existing paged segment (POSIX shared memory made by
// paged-store) and validating its header, for workers, tools and the store's
// own re-attach. Every offset in the header is checked against the segment
// size before anything dereferences it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/segment_layout.h"
#include "common/tokenizer_bundle.h"
#include "common/vocab.h"

namespace boost::interprocess {
class mapped_region;
}

namespace paged {

// Segment names are what shm_open takes without the slash: 1-200 characters
// of [A-Za-z0-9._-], not starting with '.'.
absl::Status CheckSegmentName(std::string_view name);

// Structural checks of a header against the size of its segment: magic,
// version, checksum, region and tensor bounds, config. Does not look at state.
absl::Status ValidateHeader(const SegmentHeader& h, uint64_t segment_bytes);

// The checksum the writer stores: the header with `state` and
// `header_checksum` taken as zero (state changes after the checksum is set).
uint64_t ComputeHeaderChecksum(const SegmentHeader& h);

// Removes segment `name` (its shared memory object); no error if absent.
void RemoveSegment(const std::string& name);

// Reads / publishes the state word with acquire / release ordering.
uint32_t LoadState(const SegmentHeader& h);
void StoreState(SegmentHeader& h, SegmentState s);

// Reads segment `name`'s header whatever its state (for inspection); `size`
// gets the segment's size. The header is not validated (clamp its counts).
absl::StatusOr<std::unique_ptr<SegmentHeader>> PeekSegmentHeader(const std::string& name,
                                                                 uint64_t* size);

class SegmentMapping {
 public:
  enum class Access {
    kReadOnly,  // everything read-only (tools, checks)
    kWorker,    // weights and header read-only, KV pool read-write
  };

  // Opens segment `name`; fails with FAILED_PRECONDITION when it is not
  // READY (still loading), NOT_FOUND when it does not exist, DATA_LOSS when
  // its header does not validate.
  static absl::StatusOr<std::unique_ptr<SegmentMapping>> Open(const std::string& name,
                                                              Access access);
  ~SegmentMapping();

  const SegmentHeader& header() const { return *header_; }
  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }
  // The read-only part: header, globals, layer blocks, tokenizer.
  const uint8_t* weights_base() const { return weights_; }
  uint64_t weights_bytes() const { return header_->kv_offset; }
  // The KV pool (kv_bytes); writable only with Access::kWorker.
  uint8_t* kv_base() const { return kv_; }

  const uint8_t* LayerBlock(int layer) const { return weights_ + header_->LayerOffset(layer); }
  const uint8_t* GlobalData(const TensorEntry& t) const { return weights_ + t.offset; }
  // The tokenizer region (common/tokenizer_bundle.h); an empty bundle when
  // the segment has none. DATA_LOSS when it does not parse.
  absl::StatusOr<TokenizerBundle> ReadTokenizerBundle() const;
  // The SentencePiece vocabulary of a kSentencePieceGguf segment; NOT_FOUND
  // for other kinds. (Tokenizers of any kind: LoadSegmentTokenizer in
  // tokenizer/segment_tokenizer.h.)
  absl::StatusOr<Vocab> ReadVocab() const;

 private:
  SegmentMapping() = default;
  std::string name_;
  uint64_t size_ = 0;
  std::unique_ptr<boost::interprocess::mapped_region> weights_region_;
  std::unique_ptr<boost::interprocess::mapped_region> kv_region_;
  const SegmentHeader* header_ = nullptr;
  const uint8_t* weights_ = nullptr;
  uint8_t* kv_ = nullptr;
};

}  // namespace paged
