// libFuzzer entry point: the safetensors header parser and the config.json
// parser must answer every input with a value or an error, never a crash, a
// hang or an out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "store/hf_checkpoint.h"
#include "store/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = paged::ParseSafetensors(data, size, "fuzz.safetensors");
  if (file.ok()) {
    // Every range the parser accepts must lie inside the input.
    for (const paged::SafetensorsTensor& t : file->tensors) {
      if (t.begin > t.end || t.end > size || t.begin < file->data_start) __builtin_trap();
    }
  }
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)paged::ParseHfConfig(text, "config.json");
  return 0;
}
