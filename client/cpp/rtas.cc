#include "rtas.h"

#include <algorithm>
#include <utility>

namespace papr_guest {
namespace {

namespace pb = papr::v1;

// A connector's fragment is a few dozen items; a sequence that does not end is a bug.
constexpr int kMaxConfigureCalls = 100000;
// An LMB's fragment is 5 to 7 calls. A walk's max_calls is what its results may take in
// a response (max_calls work areas of 4 KiB); a longer fragment resumes in the next batch.
constexpr uint32_t kWalkMaxCalls = 16;
// DRCs per batch that brings them up: results of at most 32 x 16 x 4 KiB = 2 MiB, half
// the server's default message limit (4 MiB).
constexpr size_t kBringUpsPerBatch = 32;
// Sense readings and releases per batch (the server's default --max-batch-calls is 16384).
constexpr size_t kSensesPerBatch = 4096;
constexpr size_t kReleasesPerBatch = 4096;

pb::RtasCall SenseCall(uint32_t index) {
  pb::RtasCall call;
  auto& request = *call.mutable_get_sensor_state();  // platform left empty: the session's
  request.set_sensor_type(kDrEntitySense);
  request.set_sensor_index(index);
  return call;
}

pb::RtasCall IndicatorCall(uint32_t indicator, uint32_t index, uint32_t state) {
  pb::RtasCall call;
  auto& request = *call.mutable_set_indicator();
  request.set_indicator_type(indicator);
  request.set_indicator_index(index);
  request.set_new_state(state);
  return call;
}

pb::RtasCall WalkCall(std::string work_area) {
  pb::RtasCall call;
  auto& walk = *call.mutable_configure_connector_walk();
  walk.set_work_area(std::move(work_area));
  walk.set_max_calls(kWalkMaxCalls);
  return call;
}

std::vector<pb::RtasCall> One(pb::RtasCall call) {
  std::vector<pb::RtasCall> calls;
  calls.push_back(std::move(call));
  return calls;
}

// The kernel's complaint about a dr-entity-sense reading, if it has one.
std::optional<RtasError> SenseError(uint32_t index, const SensorReading& sense, uint32_t expected) {
  if (sense.status == 0 && sense.state == expected) return std::nullopt;
  return RtasError("get-sensor-state(dr-entity-sense)", index, sense.status,
                   ", state " + std::to_string(sense.state) + " (expected " + std::to_string(expected) +
                       (expected == kSenseUnusable ? ", unusable)" : ", present)"));
}

}  // namespace

int32_t RtasGuest::SetIndicator(uint32_t indicator, uint32_t index, uint32_t state) {
  return transport_.Run(One(IndicatorCall(indicator, index, state)), false).front().set_indicator().status();
}

std::optional<std::string> RtasGuest::CheckException(uint32_t event_mask) {
  pb::RtasCall call;
  auto& request = *call.mutable_check_exception();
  request.set_vector_offset(0x500);  // what Linux's ras.c passes; unused
  request.set_event_mask(event_mask);
  request.set_buffer_length(kRtasErrorLogMax);
  auto results = transport_.Run(One(std::move(call)), false);
  pb::CheckExceptionResponse& reply = *results.front().mutable_check_exception();
  switch (reply.status()) {
    case 0:
      return std::move(*reply.mutable_buffer());
    case 1:
      return std::nullopt;
    default:
      throw RtasError("check-exception", 0, reply.status());
  }
}

std::vector<SensorReading> RtasGuest::Senses(const std::vector<uint32_t>& indexes) {
  std::vector<SensorReading> readings;
  for (size_t start = 0; start < indexes.size(); start += kSensesPerBatch) {
    std::vector<pb::RtasCall> calls;
    for (size_t n = start; n < std::min(indexes.size(), start + kSensesPerBatch); ++n) {
      calls.push_back(SenseCall(indexes[n]));
    }
    for (const pb::RtasResult& result : transport_.Run(std::move(calls), false)) {
      readings.push_back({result.get_sensor_state().status(), result.get_sensor_state().state()});
    }
  }
  return readings;
}

std::optional<std::string> RtasGuest::ApplyWalk(uint32_t index, const pb::ConfigureConnectorWalkResult& walk,
                                                FragmentBuilder& builder, int& calls) {
  for (int n = 0; n < walk.calls_size(); ++n) {
    if (++calls > kMaxConfigureCalls) {
      throw RtasError("ibm,configure-connector (no completion after " + std::to_string(kMaxConfigureCalls) + " calls)",
                      index, -1);
    }
    const pb::ConfigureConnectorResponse& reply = walk.calls(n);
    if (!builder.Apply(index, reply.status(), reply.work_area())) {
      if (n + 1 != walk.calls_size()) {
        throw RtasError("ibm,configure-connector (the walk went on after completion)", index, reply.status());
      }
      return std::nullopt;
    }
  }
  // Stopped at max_calls: the next walk starts from the work area exactly as the last call
  // left it, as the kernel's memcpy() to and from rtas_data_buf does.
  return walk.calls(walk.calls_size() - 1).work_area();
}

std::vector<DrcBringUp> RtasGuest::AcquireAndConfigure(const std::vector<uint32_t>& indexes) {
  return BringUp(indexes, /*allocate=*/true);
}

std::vector<DrcBringUp> RtasGuest::UnisolateAndConfigure(const std::vector<uint32_t>& indexes) {
  return BringUp(indexes, /*allocate=*/false);
}

std::vector<DrcBringUp> RtasGuest::BringUp(const std::vector<uint32_t>& indexes, bool allocate) {
  // The kernel reads each DRC's sense right before changing its state and gives up at the
  // first wrong one: read them all first, and change only the DRCs before that one.
  const std::vector<SensorReading> senses = Senses(indexes);
  const uint32_t expected = allocate ? kSenseUnusable : kSensePresent;
  size_t sensed = 0;
  std::optional<RtasError> sense_error;
  while (sensed < indexes.size() && !(sense_error = SenseError(indexes[sensed], senses[sensed], expected))) ++sensed;

  // [allocation usable,] unisolate, walk: per DRC, the calls of one kernel sequence.
  const size_t stride = allocate ? 3 : 2;
  std::vector<DrcBringUp> done;
  bool failed = false;
  for (size_t next = 0; next < sensed && !failed;) {
    const size_t end = std::min(sensed, next + kBringUpsPerBatch);
    std::vector<pb::RtasCall> calls;
    for (size_t n = next; n < end; ++n) {
      if (allocate) calls.push_back(IndicatorCall(kAllocationState, indexes[n], kUsable));
      calls.push_back(IndicatorCall(kIsolationState, indexes[n], kUnisolate));
      calls.push_back(WalkCall(NewWorkArea(indexes[n])));
    }
    const std::vector<pb::RtasResult> results = transport_.Run(std::move(calls), /*stop_at_nonzero=*/true);
    // A batch stops after a non-zero status, so every call of a DRC before it ran.
    for (size_t r = 0; r < results.size(); r += stride) {
      DrcBringUp& step = done.emplace_back();
      step.index = indexes[next++];
      size_t at = r;
      if (allocate) {
        if (const int32_t status = results[at++].set_indicator().status(); status != 0) {
          step.acquire_error = RtasError("set-indicator(allocation-state, usable)", step.index, status);
          failed = true;
          break;
        }
      }
      if (const int32_t status = results[at++].set_indicator().status(); status != 0) {
        if (allocate) SetIndicator(kAllocationState, step.index, kUnusable);  // the kernel's undo; status ignored
        step.acquire_error = RtasError("set-indicator(isolation-state, unisolate)", step.index, status);
        failed = true;
        break;
      }
      try {
        FragmentBuilder builder;
        int walked = 0;
        std::optional<std::string> resume =
            ApplyWalk(step.index, results[at].configure_connector_walk(), builder, walked);
        while (resume && !failed) {  // the batch stopped on this walk's max_calls: finish it alone
          auto more = transport_.Run(One(WalkCall(std::move(*resume))), false);
          resume = ApplyWalk(step.index, more.front().configure_connector_walk(), builder, walked);
        }
        step.nodes = builder.Take();
      } catch (const RtasError& error) {
        step.configure_error = error;
        failed = true;  // no further batch; what this one ran is reported
      }
    }
  }
  if (!failed && sense_error) {
    DrcBringUp& step = done.emplace_back();
    step.index = indexes[sensed];
    step.acquire_error = std::move(sense_error);
  }
  return done;
}

void RtasGuest::ReleaseDrcs(const std::vector<uint32_t>& indexes) {
  const std::vector<SensorReading> senses = Senses(indexes);
  size_t sensed = 0;
  std::optional<RtasError> sense_error;
  while (sensed < indexes.size() && !(sense_error = SenseError(indexes[sensed], senses[sensed], kSensePresent))) {
    ++sensed;
  }
  for (size_t next = 0; next < sensed;) {
    const size_t end = std::min(sensed, next + kReleasesPerBatch);
    std::vector<pb::RtasCall> calls;
    for (size_t n = next; n < end; ++n) {
      calls.push_back(IndicatorCall(kIsolationState, indexes[n], kIsolate));
      calls.push_back(IndicatorCall(kAllocationState, indexes[n], kUnusable));
    }
    const std::vector<pb::RtasResult> results = transport_.Run(std::move(calls), /*stop_at_nonzero=*/true);
    for (size_t r = 0; r < results.size(); r += 2) {
      const uint32_t index = indexes[next++];
      if (const int32_t status = results[r].set_indicator().status(); status != 0) {
        throw RtasError("set-indicator(isolation-state, isolate)", index, status);
      }
      if (const int32_t status = results[r + 1].set_indicator().status(); status != 0) {
        SetIndicator(kIsolationState, index, kUnisolate);  // the kernel's undo; status ignored
        throw RtasError("set-indicator(allocation-state, unusable)", index, status);
      }
    }
  }
  if (sense_error) throw *sense_error;
}

}  // namespace papr_guest
