// RTAS event logs as check-exception returns them, parsed the way Linux does it
// (arch/powerpc/platforms/pseries: get_pseries_errorlog() and the hotplug section).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common.h"

namespace papr_guest {

// Hotplug section (PSERIES_HP_ELOG_*): resource types, actions, identifier types.
inline constexpr uint8_t kResourceCpu = 1;
inline constexpr uint8_t kResourceMemory = 2;
inline constexpr uint8_t kActionAdd = 1;
inline constexpr uint8_t kActionRemove = 2;
inline constexpr uint8_t kIdDrcName = 1;
inline constexpr uint8_t kIdDrcIndex = 2;
inline constexpr uint8_t kIdDrcCount = 3;
inline constexpr uint8_t kIdDrcCountIndexed = 4;

// check-exception event-class mask bits.
inline constexpr uint32_t kEventClassEpow = 0x40000000;
inline constexpr uint32_t kEventClassHotplug = 0x10000000;

// The HP section of a hotplug event log.
struct HotplugEvent {
  uint8_t resource = 0;
  uint8_t action = 0;
  uint8_t id_type = 0;
  uint32_t index = 0;  // kIdDrcIndex: the DRC index; kIdDrcCountIndexed: the first DRC index
  uint32_t count = 0;  // kIdDrcCount, kIdDrcCountIndexed
  std::string name;    // kIdDrcName
};

// The buffer is not a v6 IBM platform event log with a hotplug section.
class MalformedLog : public Failure {
 public:
  using Failure::Failure;
};

// The hotplug event in a log: checks the v6 extended header as get_pseries_errorlog()
// does (extended length, log format 14, company "IBM\0"), walks the sections from
// offset 24 by their length fields to "HP" and decodes its payload. Throws MalformedLog.
HotplugEvent ParseHotplugEvent(std::string_view log);

}  // namespace papr_guest
