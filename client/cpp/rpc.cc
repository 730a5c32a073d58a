#include "rpc.h"

#include <iterator>

namespace papr_guest {
namespace {

// grpc::StatusCode values 0..16, in order.
constexpr const char* kCodeNames[] = {
    "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED",
};

}  // namespace

std::string StatusText(const grpc::Status& status) {
  const int code = static_cast<int>(status.error_code());
  std::string text =
      code >= 0 && code < static_cast<int>(std::size(kCodeNames)) ? kCodeNames[code] : "code " + std::to_string(code);
  if (!status.error_message().empty()) text += ": " + status.error_message();
  return text;
}

}  // namespace papr_guest
