// Shared by the stub's parts: the failure type and big-endian cell access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace papr_guest {

// A check that did not hold. main() prints the message and exits non-zero.
class Failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An RTAS call of a DLPAR sequence returned what the kernel treats as an error, or
// handed back a work area the kernel could not have parsed. The DLPAR handler fails
// (outcome "failed"), as the kernel's does; the scenario then fails on the outcome.
class RtasError : public Failure {
 public:
  // "<call> on <drc_index> returned <status><detail>"
  RtasError(const std::string& call, uint32_t drc_index, int32_t status, const std::string& detail = "");
  int32_t status() const { return status_; }

 private:
  int32_t status_;
};

// "0x80000004"
std::string Hex(uint32_t value);

// The big-endian 32-bit cell at `offset`; throws Failure if it does not fit in `bytes`.
uint32_t LoadBe32(std::string_view bytes, size_t offset);
uint16_t LoadBe16(std::string_view bytes, size_t offset);
void StoreBe32(std::string& bytes, size_t offset, uint32_t value);

}  // namespace papr_guest
