#include "rtas.h"

#include <utility>

#include "rpc.h"

namespace papr_guest {
namespace {

// A connector's fragment is a few dozen items; a sequence that does not end is a bug.
constexpr int kMaxConfigureCalls = 100000;

}  // namespace

RtasGuest::RtasGuest(const std::shared_ptr<grpc::Channel>& channel, std::string platform)
    : stub_(papr::v1::RtasService::NewStub(channel)), platform_(std::move(platform)) {}

SensorReading RtasGuest::GetSensorState(uint32_t sensor, uint32_t index) {
  papr::v1::GetSensorStateRequest request;
  request.set_platform(platform_);
  request.set_sensor_type(sensor);
  request.set_sensor_index(index);
  const auto reply = Unary<papr::v1::GetSensorStateResponse>("GetSensorState", [&](auto* context, auto* response) {
    return stub_->GetSensorState(context, request, response);
  });
  return {reply.status(), reply.state()};
}

int32_t RtasGuest::SetIndicator(uint32_t indicator, uint32_t index, uint32_t state) {
  papr::v1::SetIndicatorRequest request;
  request.set_platform(platform_);
  request.set_indicator_type(indicator);
  request.set_indicator_index(index);
  request.set_new_state(state);
  return Unary<papr::v1::SetIndicatorResponse>(
             "SetIndicator",
             [&](auto* context, auto* response) { return stub_->SetIndicator(context, request, response); })
      .status();
}

std::optional<std::string> RtasGuest::CheckException(uint32_t event_mask) {
  papr::v1::CheckExceptionRequest request;
  request.set_platform(platform_);
  request.set_vector_offset(0x500);  // what Linux's ras.c passes; unused
  request.set_event_mask(event_mask);
  request.set_buffer_length(kRtasErrorLogMax);
  auto reply = Unary<papr::v1::CheckExceptionResponse>("CheckException", [&](auto* context, auto* response) {
    return stub_->CheckException(context, request, response);
  });
  switch (reply.status()) {
    case 0:
      return std::move(*reply.mutable_buffer());
    case 1:
      return std::nullopt;
    default:
      throw RtasError("check-exception", 0, reply.status());
  }
}

void RtasGuest::AcquireDrc(uint32_t index) {
  const SensorReading sense = GetSensorState(kDrEntitySense, index);
  if (sense.status != 0 || sense.state != kSenseUnusable) {
    throw RtasError("get-sensor-state(dr-entity-sense)", index, sense.status,
                    ", state " + std::to_string(sense.state) + " (expected 2, unusable)");
  }
  if (const int32_t status = SetIndicator(kAllocationState, index, kUsable); status != 0) {
    throw RtasError("set-indicator(allocation-state, usable)", index, status);
  }
  if (const int32_t status = SetIndicator(kIsolationState, index, kUnisolate); status != 0) {
    SetIndicator(kAllocationState, index, kUnusable);
    throw RtasError("set-indicator(isolation-state, unisolate)", index, status);
  }
}

void RtasGuest::ReleaseDrc(uint32_t index) {
  const SensorReading sense = GetSensorState(kDrEntitySense, index);
  if (sense.status != 0 || sense.state != kSensePresent) {
    throw RtasError("get-sensor-state(dr-entity-sense)", index, sense.status,
                    ", state " + std::to_string(sense.state) + " (expected 1, present)");
  }
  if (const int32_t status = SetIndicator(kIsolationState, index, kIsolate); status != 0) {
    throw RtasError("set-indicator(isolation-state, isolate)", index, status);
  }
  if (const int32_t status = SetIndicator(kAllocationState, index, kUnusable); status != 0) {
    SetIndicator(kIsolationState, index, kUnisolate);
    throw RtasError("set-indicator(allocation-state, unusable)", index, status);
  }
}

void RtasGuest::UnisolateDrc(uint32_t index) {
  const SensorReading sense = GetSensorState(kDrEntitySense, index);
  if (sense.status != 0 || sense.state != kSensePresent) {
    throw RtasError("get-sensor-state(dr-entity-sense)", index, sense.status,
                    ", state " + std::to_string(sense.state) + " (expected 1, present)");
  }
  if (const int32_t status = SetIndicator(kIsolationState, index, kUnisolate); status != 0) {
    throw RtasError("set-indicator(isolation-state, unisolate)", index, status);
  }
}

std::vector<std::unique_ptr<DtNode>> RtasGuest::ConfigureConnector(uint32_t index) {
  papr::v1::ConfigureConnectorRequest request;
  request.set_platform(platform_);
  request.set_work_area(NewWorkArea(index));
  FragmentBuilder builder;
  for (int call = 0; call < kMaxConfigureCalls; ++call) {
    auto reply = Unary<papr::v1::ConfigureConnectorResponse>("ConfigureConnector", [&](auto* context, auto* response) {
      return stub_->ConfigureConnector(context, request, response);
    });
    if (!builder.Apply(index, reply.status(), reply.work_area())) return builder.Take();
    // The next call gets the work area exactly as this one left it, as the kernel's
    // memcpy() to and from rtas_data_buf does.
    request.set_allocated_work_area(reply.release_work_area());
  }
  throw RtasError("ibm,configure-connector (no completion after " + std::to_string(kMaxConfigureCalls) + " calls)",
                  index, -1);
}

}  // namespace papr_guest
