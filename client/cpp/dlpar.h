// The guest's reaction to hotplug event logs: Linux's memory DLPAR
// (arch/powerpc/platforms/pseries/hotplug-memory.c, kernels 5.13+), the same
// behaviour as papr_emu_client.ReferenceGuest for memory.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "errorlog.h"
#include "rtas.h"

namespace papr_guest {

// What the guest did with one event (ReferenceGuest's Outcome).
struct Outcome {
  HotplugEvent event;
  std::string result;  // "done", "refused", "failed" or "ignored"
  std::string detail;
  std::vector<uint32_t> drc_indexes;

  // {"resource":R,"action":A,"result":"...","drc_indexes":[...]}
  std::string Json() const;
};

class MemoryGuest {
 public:
  explicit MemoryGuest(RtasGuest& rtas) : rtas_(rtas) {}

  // LMBs that "cannot be offlined": removing one makes the guest refuse the unplug.
  std::set<uint32_t> lmbs_not_offlinable;

  // check-exception (hotplug class) until it returns 1, handling each log in order.
  std::vector<Outcome> HandlePending();
  Outcome HandleLog(const std::string& log);

  // LMBs the guest has added (DRCONF_MEM_ASSIGNED).
  const std::set<uint32_t>& assigned_lmbs() const { return assigned_; }

 private:
  Outcome MemoryAdd(const HotplugEvent& event);
  Outcome MemoryRemove(const HotplugEvent& event);
  // dlpar_add_lmb() once configure-connector has handed out the LMB's fragment: the
  // kernel checks its node (it wants its ibm,associativity), then onlines the memory.
  void AddLmb(uint32_t index, const std::vector<std::unique_ptr<DtNode>>& nodes);
  // dlpar_add_lmb() for each LMB the kernel re-adds after a refused removal: unisolate,
  // configure-connector, the node's checks. Throws RtasError at the first failure.
  void ReaddLmbs(const std::vector<uint32_t>& indexes);
  // dlpar_remove_lmb(): offline and remove; no RTAS calls. False if it cannot be offlined.
  bool RemoveLmb(uint32_t index);

  RtasGuest& rtas_;
  std::set<uint32_t> assigned_;
};

}  // namespace papr_guest
