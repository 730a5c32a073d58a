#include "errorlog.h"

namespace papr_guest {
namespace {

// struct rtas_error_log: 8 bytes, then the extended log (struct rtas_ext_event_log_v6,
// 16 bytes) whose vendor_log area holds the sections.
constexpr size_t kFixedHeader = 8;
constexpr uint32_t kExtendedHeader = 16;
constexpr size_t kLogFormatByte = 10;         // ext byte 2, low nibble
constexpr uint8_t kLogFormatEventLog = 14;    // RTAS_V6EXT_LOG_FORMAT_EVENT_LOG
constexpr size_t kCompanyIdOffset = 20;       // ext bytes 12..15
constexpr size_t kFirstSection = 24;          // ext vendor_log
constexpr size_t kSectionHeader = 8;          // struct pseries_errorlog: id, length, version, subtype, creator
constexpr size_t kMinHotplugPayload = 4 + 8;  // resource, action, id type, reserved, then two cells

}  // namespace

HotplugEvent ParseHotplugEvent(std::string_view log) {
  if (log.size() < kFirstSection) {
    throw MalformedLog(std::to_string(log.size()) + " bytes: shorter than a v6 extended header");
  }
  const uint32_t version = LoadBe32(log, 0) >> 24;
  const uint32_t extended_length = LoadBe32(log, 4);
  if (version != 6 || extended_length < kExtendedHeader) {
    throw MalformedLog("version " + std::to_string(version) + ", extended length " + std::to_string(extended_length) +
                       ": not a v6 extended log");
  }
  if ((static_cast<uint8_t>(log[kLogFormatByte]) & 0x0F) != kLogFormatEventLog ||
      log.substr(kCompanyIdOffset, 4) != std::string_view("IBM\0", 4)) {
    throw MalformedLog("not an IBM platform event log");
  }
  // The kernel trusts the extended length; a stub must not read past what it was given.
  if (log.size() < kFixedHeader + extended_length) {
    throw MalformedLog("extended length " + std::to_string(extended_length) + " but only " +
                       std::to_string(log.size()) + " bytes returned (buffer too small?)");
  }
  const size_t end = kFixedHeader + extended_length;
  for (size_t offset = kFirstSection; offset + 4 <= end;) {
    const std::string_view id = log.substr(offset, 2);
    const uint16_t length = LoadBe16(log, offset + 2);
    // A zero length would make the kernel's walk loop forever; treat it as corruption.
    if (length < 4 || offset + length > end) {
      throw MalformedLog("section at offset " + std::to_string(offset) + " has length " + std::to_string(length));
    }
    if (id == "HP") {
      if (length < kSectionHeader + kMinHotplugPayload) {
        throw MalformedLog("HP section too short: " + std::to_string(length) + " bytes");
      }
      const std::string_view payload = log.substr(offset + kSectionHeader, length - kSectionHeader);
      HotplugEvent event;
      event.resource = static_cast<uint8_t>(payload[0]);
      event.action = static_cast<uint8_t>(payload[1]);
      event.id_type = static_cast<uint8_t>(payload[2]);
      switch (event.id_type) {
        case kIdDrcName: {
          const std::string_view body = payload.substr(4);
          event.name = std::string(body.substr(0, body.find('\0')));
          break;
        }
        case kIdDrcIndex:
          event.index = LoadBe32(payload, 4);
          break;
        case kIdDrcCount:
          event.count = LoadBe32(payload, 4);
          break;
        case kIdDrcCountIndexed:  // struct { __be32 count; __be32 index; } ic
          event.count = LoadBe32(payload, 4);
          event.index = LoadBe32(payload, 8);
          break;
        default:
          throw MalformedLog("HP section with id type " + std::to_string(event.id_type));
      }
      return event;
    }
    offset += length;
  }
  throw MalformedLog("no HP section");
}

}  // namespace papr_guest
