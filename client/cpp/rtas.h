// The guest's RTAS calls, made through an RtasTransport (an RtasService.Session, or
// unary RPCs), and the kernel's dlpar_* helpers built on them
// (arch/powerpc/platforms/pseries/dlpar.c), batched over many DRCs.
//
// Batching keeps the kernel's calls and their order per DRC, and every check the kernel
// makes before a call that changes state: the dr-entity-sense readings of a sequence's
// DRCs come first, in one batch (reading a sensor changes nothing, and a DRC's sense
// depends on that DRC only), and a batch of state changes stops at the first call
// whose status is not 0, as the kernel stops at the first error.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common.h"
#include "transport.h"
#include "workarea.h"

namespace papr_guest {

// Indicator and sensor types, and their values.
inline constexpr uint32_t kIsolationState = 9001;
inline constexpr uint32_t kAllocationState = 9003;
inline constexpr uint32_t kDrEntitySense = 9003;
inline constexpr uint32_t kIsolate = 0;
inline constexpr uint32_t kUnisolate = 1;
inline constexpr uint32_t kUnusable = 0;
inline constexpr uint32_t kUsable = 1;
inline constexpr uint32_t kSensePresent = 1;
inline constexpr uint32_t kSenseUnusable = 2;

// The kernel's check-exception buffer: rtas-error-log-max.
inline constexpr uint32_t kRtasErrorLogMax = 2048;

struct SensorReading {
  int32_t status;
  uint32_t state;
};

// What bringing up one DRC did: the kernel's dlpar_acquire_drc() (or dlpar_unisolate_drc())
// and then dlpar_configure_connector().
struct DrcBringUp {
  uint32_t index = 0;
  // The acquire (or unisolate) failed; the kernel's own undo was done and nothing else
  // ran on this DRC.
  std::optional<RtasError> acquire_error;
  // It was acquired, and configure-connector failed (or handed back what the kernel
  // cannot parse).
  std::optional<RtasError> configure_error;
  // It was acquired and configured: the fragment's top-level nodes.
  std::vector<std::unique_ptr<DtNode>> nodes;

  bool acquired() const { return !acquire_error; }
};

class RtasGuest {
 public:
  explicit RtasGuest(RtasTransport& transport) : transport_(transport) {}

  // The single calls: RTAS status in-band; a gRPC error throws RpcFailure.
  int32_t SetIndicator(uint32_t indicator, uint32_t index, uint32_t state);
  // check-exception with the given class mask; the log, or nullopt when status is 1 (none).
  std::optional<std::string> CheckException(uint32_t event_mask);

  // For each DRC in order: dlpar_acquire_drc() (sense must be 2, unusable; allocation
  // usable; unisolate, and allocation back to unusable if that fails), then
  // dlpar_configure_connector() (configure-connector walks over the 4096-byte work area
  // until status 0). Sends no further batch after the first DRC with an error: DRCs past
  // it are in the result only if its batch ran them (an error found by parsing, not by a
  // status, does not stop a batch). The caller checks each fragment as the kernel does
  // before moving on; DRCs in the result past the first it rejects were acquired all the
  // same, and are the caller's to release.
  std::vector<DrcBringUp> AcquireAndConfigure(const std::vector<uint32_t>& indexes);
  // The same with dlpar_unisolate_drc() (sense must be 1, present; unisolate) in place of
  // the acquire: how the kernel re-adds an LMB it had removed.
  std::vector<DrcBringUp> UnisolateAndConfigure(const std::vector<uint32_t>& indexes);
  // dlpar_release_drc() for each DRC in order: sense must be 1 (present); isolate;
  // allocation unusable (unisolate again if that fails). Throws RtasError at the first
  // failure, with the DRCs before it released.
  void ReleaseDrcs(const std::vector<uint32_t>& indexes);

 private:
  // get-sensor-state(dr-entity-sense) of each DRC, in batches.
  std::vector<SensorReading> Senses(const std::vector<uint32_t>& indexes);
  std::vector<DrcBringUp> BringUp(const std::vector<uint32_t>& indexes, bool allocate);
  // Applies a walk's calls to `builder`: the work area to resume from if the walk stopped
  // at its max_calls, nullopt once the fragment is complete. Throws RtasError.
  std::optional<std::string> ApplyWalk(uint32_t index, const papr::v1::ConfigureConnectorWalkResult& walk,
                                       FragmentBuilder& builder, int& calls);

  RtasTransport& transport_;
};

}  // namespace papr_guest
