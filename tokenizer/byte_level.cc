#include "tokenizer/byte_level.h"

#include <array>

namespace paged {
namespace {

bool StandsForItself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Tables {
  std::array<std::string, 256> utf8;      // byte -> UTF-8 of its character
  std::array<int16_t, 324> byte_of_cp{};  // code point (< 324) -> byte, or -1
};

std::string EncodeCodePoint(uint32_t cp) {  // cp < 0x800
  std::string s;
  if (cp < 0x80) {
    s.push_back(char(cp));
  } else {
    s.push_back(char(0xC0 | (cp >> 6)));
    s.push_back(char(0x80 | (cp & 0x3F)));
  }
  return s;
}

const Tables& GetTables() {
  static const Tables t = [] {
    Tables t;
    t.byte_of_cp.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cp = StandsForItself(b) ? uint32_t(b) : next++;
      t.utf8[b] = EncodeCodePoint(cp);
      t.byte_of_cp[cp] = int16_t(b);
    }
    return t;
  }();
  return t;
}

}  // namespace

std::string_view ByteLevelChar(uint8_t b) { return GetTables().utf8[b]; }

void AppendByteLevel(std::string_view bytes, std::string* out) {
  const Tables& t = GetTables();
  out->reserve(out->size() + bytes.size() * 2);
  for (char c : bytes) out->append(t.utf8[static_cast<unsigned char>(c)]);
}

bool AppendByteLevelBytes(std::string_view text, std::string* out) {
  const Tables& t = GetTables();
  const size_t start = out->size();
  for (size_t i = 0; i < text.size();) {
    const auto c0 = static_cast<unsigned char>(text[i]);
    uint32_t cp = 0;
    if (c0 < 0x80) {
      cp = c0;
      i += 1;
    } else if ((c0 & 0xE0) == 0xC0 && i + 1 < text.size() &&
               (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80) {
      cp = (uint32_t(c0 & 0x1F) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3F);
      i += 2;
    } else {
      out->resize(start);
      return false;  // every character of the alphabet is below U+0800
    }
    if (cp >= t.byte_of_cp.size() || t.byte_of_cp[cp] < 0) {
      out->resize(start);
      return false;
    }
    out->push_back(char(t.byte_of_cp[cp]));
  }
  return true;
}

}  // namespace paged
