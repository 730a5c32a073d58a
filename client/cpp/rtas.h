// The guest's RTAS calls over papr-emu's RtasService, and the kernel's dlpar_* helpers
// built on them (arch/powerpc/platforms/pseries/dlpar.c).
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "papr/v1/rtas.grpc.pb.h"
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

class RtasGuest {
 public:
  RtasGuest(const std::shared_ptr<grpc::Channel>& channel, std::string platform);

  // The raw calls: RTAS status in-band; a gRPC error throws RpcFailure.
  SensorReading GetSensorState(uint32_t sensor, uint32_t index);
  int32_t SetIndicator(uint32_t indicator, uint32_t index, uint32_t state);
  // check-exception with the given class mask; the log, or nullopt when status is 1 (none).
  std::optional<std::string> CheckException(uint32_t event_mask);

  // dlpar_acquire_drc(): sense must be 2 (unusable); allocation usable; unisolate
  // (allocation back to unusable if that fails).
  void AcquireDrc(uint32_t index);
  // dlpar_release_drc(): sense must be 1 (present); isolate; allocation unusable
  // (unisolate again if that fails).
  void ReleaseDrc(uint32_t index);
  // dlpar_unisolate_drc(): sense must be 1; unisolate. The kernel ignores set-indicator's
  // status; this stub requires 0, because papr-emu documents that the call succeeds.
  void UnisolateDrc(uint32_t index);
  // dlpar_configure_connector(): configure-connector calls over one 4096-byte work area
  // until status 0; the fragment's top-level nodes.
  std::vector<std::unique_ptr<DtNode>> ConfigureConnector(uint32_t index);

 private:
  std::unique_ptr<papr::v1::RtasService::Stub> stub_;
  std::string platform_;
};

}  // namespace papr_guest
