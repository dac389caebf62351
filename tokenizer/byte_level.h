// GPT-2's byte-level alphabet, which byte-level BPE vocabularies (GPT-2,
// Llama 3, Qwen2, SmolLM) are written in: every byte value stands for one
// printable character. Bytes that are printable Latin-1 ('!'..'~',
// '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 (controls, space,
// DEL, NBSP, soft hyphen) for U+0100 + their rank, so ' ' is "Ġ" (U+0120)
// and '\n' is "Ċ" (U+010A).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace paged {

// UTF-8 of the character that byte `b` is written as.
std::string_view ByteLevelChar(uint8_t b);

// Appends the byte-level form of `bytes` (each byte as its character).
void AppendByteLevel(std::string_view bytes, std::string* out);

// Appends the bytes that byte-level `text` stands for and returns true; when
// a character of `text` is outside the alphabet (or `text` is not valid
// UTF-8) appends nothing and returns false.
bool AppendByteLevelBytes(std::string_view text, std::string* out);

}  // namespace paged
