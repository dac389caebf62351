// libFuzzer entry point: the GGUF parser and the model-building step after it
// must answer every input with a value or an error, never a crash, a hang,
// an out-of-bounds read or a huge allocation.
#include <cstddef>
#include <cstdint>

#include "store/gguf.h"
#include "store/gguf_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = paged::ParseGguf(data, size, "fuzz.gguf");
  if (!file.ok()) return 0;
  // Every range the parser accepts lies inside the input, after the metadata.
  for (const paged::GgufTensorInfo& t : file->tensors) {
    if (t.begin > t.end || t.end > size || t.begin < file->data_start) __builtin_trap();
  }
  auto src = paged::GgufToModelSource(*file, data, size);
  if (src.ok()) {
    for (const paged::SourceTensor& t : (*src)->tensors) {
      if (t.data < data || t.data + t.bytes > data + size) __builtin_trap();
    }
  }
  return 0;
}
