#include "dlpar.h"

#include <iostream>
#include <memory>
#include <optional>

namespace papr_guest {
namespace {

constexpr uint64_t kLmbSize = uint64_t{256} << 20;

uint64_t LoadBe64(const std::string& bytes, size_t offset) {
  return uint64_t{LoadBe32(bytes, offset)} << 32 | LoadBe32(bytes, offset + 4);
}

std::string Join(const std::vector<uint32_t>& indexes) {
  std::string text;
  for (const uint32_t index : indexes) text += (text.empty() ? "" : " ") + Hex(index);
  return text;
}

}  // namespace

std::string Outcome::Json() const {
  // Only numbers and fixed words: nothing to escape.
  std::string json = "{\"resource\":" + std::to_string(event.resource) + ",\"action\":" + std::to_string(event.action) +
                     ",\"result\":\"" + result + "\",\"drc_indexes\":[";
  for (size_t i = 0; i < drc_indexes.size(); ++i) json += (i ? "," : "") + std::to_string(drc_indexes[i]);
  return json + "]}";
}

std::vector<Outcome> MemoryGuest::HandlePending() {
  std::vector<Outcome> handled;
  while (auto log = rtas_.CheckException(kEventClassHotplug)) handled.push_back(HandleLog(*log));
  return handled;
}

Outcome MemoryGuest::HandleLog(const std::string& log) {
  HotplugEvent event;
  try {
    event = ParseHotplugEvent(log);
  } catch (const MalformedLog& error) {
    return {HotplugEvent{}, "ignored", error.what(), {}};
  }
  if (event.resource != kResourceMemory) return {event, "ignored", "not a memory event", {}};
  try {
    if (event.action == kActionAdd) return MemoryAdd(event);
    if (event.action == kActionRemove) return MemoryRemove(event);
  } catch (const RtasError& error) {
    return {event, "failed", error.what(), {}};
  }
  return {event, "ignored", "memory action " + std::to_string(event.action), {}};
}

// dlpar_memory_add_by_ic(): acquire and add every LMB of the range not yet assigned;
// stop at the first failure and roll back what was added. The acquires and
// configure-connector walks go in batches (RtasGuest::AcquireAndConfigure); the node
// checks of dlpar_add_lmb() follow, LMB by LMB.
Outcome MemoryGuest::MemoryAdd(const HotplugEvent& event) {
  if (event.id_type != kIdDrcCountIndexed) {
    return {event, "ignored", "memory add by id type " + std::to_string(event.id_type), {}};
  }
  std::vector<uint32_t> wanted;
  for (uint32_t n = 0; n < event.count; ++n) {
    if (!assigned_.count(event.index + n)) wanted.push_back(event.index + n);
  }
  std::vector<uint32_t> added;
  std::vector<uint32_t> release;  // acquired, then failed or rolled back
  std::optional<std::string> failure;
  for (const DrcBringUp& step : rtas_.AcquireAndConfigure(wanted)) {
    if (failure) {
      // The kernel would have stopped before this LMB; its batch acquired it all the same.
      if (step.acquired()) release.push_back(step.index);
      continue;
    }
    if (step.acquire_error) {
      failure = step.acquire_error->what();
      continue;
    }
    try {
      if (step.configure_error) throw *step.configure_error;
      AddLmb(step.index, step.nodes);
      added.push_back(step.index);
    } catch (const RtasError& error) {
      failure = error.what();
      release.push_back(step.index);
    }
  }
  if (added.size() < wanted.size()) {
    for (const uint32_t index : added) RemoveLmb(index);  // roll back
    release.insert(release.end(), added.begin(), added.end());
    rtas_.ReleaseDrcs(release);
    return {event, "failed",
            "added " + std::to_string(added.size()) + " of " + std::to_string(wanted.size()) +
                " LMBs: " + failure.value_or("no result"),
            added};
  }
  return {event, "done", std::to_string(added.size()) + " LMBs: " + Join(added), added};
}

// dlpar_memory_remove_by_ic(): offline and remove the assigned LMBs of the range in
// order. If one cannot be offlined, re-add the ones already removed, saying so with
// unisolate first (5.13+: the platform takes it as the refusal), and fail; otherwise
// release every removed LMB (in batches).
Outcome MemoryGuest::MemoryRemove(const HotplugEvent& event) {
  if (event.id_type != kIdDrcCountIndexed) {
    return {event, "ignored", "memory remove by id type " + std::to_string(event.id_type), {}};
  }
  std::vector<uint32_t> removed;
  for (uint32_t n = 0; n < event.count; ++n) {
    const uint32_t index = event.index + n;
    if (!assigned_.count(index)) continue;
    if (!RemoveLmb(index)) {
      ReaddLmbs(removed);
      // If the very first LMB could not be offlined nothing is re-added and the platform
      // hears nothing: the unplug stays pending, as with Linux.
      return {event, "refused", "LMB " + Hex(index) + " cannot be offlined", removed};
    }
    removed.push_back(index);
  }
  rtas_.ReleaseDrcs(removed);
  return {event, "done", std::to_string(removed.size()) + " LMBs: " + Join(removed), removed};
}

void MemoryGuest::ReaddLmbs(const std::vector<uint32_t>& indexes) {
  for (const DrcBringUp& step : rtas_.UnisolateAndConfigure(indexes)) {
    if (step.acquire_error) throw *step.acquire_error;
    if (step.configure_error) throw *step.configure_error;
    AddLmb(step.index, step.nodes);
  }
}

void MemoryGuest::AddLmb(uint32_t index, const std::vector<std::unique_ptr<DtNode>>& nodes) {
  if (nodes.size() != 1) {
    throw RtasError("ibm,configure-connector", index, 0, ": " + std::to_string(nodes.size()) + " top-level nodes");
  }
  const DtNode& node = *nodes.front();
  const std::string* associativity = node.Property("ibm,associativity");
  if (associativity == nullptr || associativity->empty()) {
    throw RtasError("ibm,configure-connector", index, 0, ": node " + node.name + " has no ibm,associativity");
  }
  // reg: one (address, size) pair, two cells each; an LMB's index is address / 256 MiB.
  const std::string* reg = node.Property("reg");
  const uint64_t address = uint64_t{index & 0x0FFFFFFF} * kLmbSize;
  if (reg == nullptr || reg->size() != 16 || LoadBe64(*reg, 0) != address || LoadBe64(*reg, 8) != kLmbSize) {
    throw RtasError("ibm,configure-connector", index, 0,
                    ": node " + node.name + " has no reg of 256 MiB at " + std::to_string(address));
  }
  if (node.name.rfind("memory@", 0) != 0) {
    throw RtasError("ibm,configure-connector", index, 0, ": node " + node.name + " is not a memory node");
  }
  std::cerr << "papr-guest-cpp: " << Hex(index) << ": " << node.name << ", " << node.properties.size()
            << " properties\n";
  assigned_.insert(index);
}

bool MemoryGuest::RemoveLmb(uint32_t index) {
  if (lmbs_not_offlinable.count(index)) return false;
  assigned_.erase(index);
  return true;
}

}  // namespace papr_guest
