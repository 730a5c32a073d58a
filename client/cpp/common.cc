#include "common.h"

#include <cstdio>

namespace papr_guest {

RtasError::RtasError(const std::string& call, uint32_t drc_index, int32_t status, const std::string& detail)
    : Failure(call + " on " + Hex(drc_index) + " returned " + std::to_string(status) + detail), status_(status) {}

std::string Hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "%#010x", static_cast<unsigned>(value));
  return text;
}

uint32_t LoadBe32(std::string_view bytes, size_t offset) {
  if (offset > bytes.size() || bytes.size() - offset < 4) {
    throw Failure("cell at offset " + std::to_string(offset) + " is outside " + std::to_string(bytes.size()) +
                  " bytes");
  }
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data()) + offset;
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

uint16_t LoadBe16(std::string_view bytes, size_t offset) {
  if (offset > bytes.size() || bytes.size() - offset < 2) {
    throw Failure("16-bit field at offset " + std::to_string(offset) + " is outside " + std::to_string(bytes.size()) +
                  " bytes");
  }
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data()) + offset;
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}

void StoreBe32(std::string& bytes, size_t offset, uint32_t value) {
  if (offset > bytes.size() || bytes.size() - offset < 4) {
    throw Failure("cell at offset " + std::to_string(offset) + " is outside " + std::to_string(bytes.size()) +
                  " bytes");
  }
  for (int shift = 24, i = 0; shift >= 0; shift -= 8, ++i) {
    bytes[offset + i] = static_cast<char>((value >> shift) & 0xff);
  }
}

}  // namespace papr_guest
