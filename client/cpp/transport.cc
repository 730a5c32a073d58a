#include "transport.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <utility>

#include "rpc.h"

namespace papr_guest {
namespace {

namespace pb = papr::v1;

// RtasCall's and RtasResult's oneof fields share names and numbers.
static_assert(static_cast<int>(pb::RtasCall::kConfigureConnectorWalk) ==
              static_cast<int>(pb::RtasResult::kConfigureConnectorWalk));
static_assert(static_cast<int>(pb::RtasCall::kSetIndicator) == static_cast<int>(pb::RtasResult::kSetIndicator));

// ConfigureConnectorWalk.max_calls 0 means this many.
constexpr uint32_t kDefaultWalkCalls = 64;

bool WalkContinues(int32_t status) { return status >= 1 && status <= 4; }

constexpr int32_t kBusy = -2;
constexpr int32_t kExtendedDelayFirst = 9900;
constexpr int32_t kExtendedDelayLast = 9905;
constexpr std::chrono::milliseconds kMinDelay{1};
constexpr std::chrono::milliseconds kMaxDelay{1000};

// Whether `result` says "call again". A raw call's status is its caller's to read, as with
// the kernel's rtas_call(), which retries nothing itself.
bool AnsweredAgain(const pb::RtasCall& call, const pb::RtasResult& result) {
  return call.call_case() != pb::RtasCall::kRaw && RetryDelay(ResultStatus(result)).has_value();
}

}  // namespace

std::optional<std::chrono::milliseconds> RetryDelay(int32_t status) {
  if (status == kBusy) return std::chrono::milliseconds{0};
  if (status < kExtendedDelayFirst || status > kExtendedDelayLast) return std::nullopt;
  std::chrono::milliseconds hinted{1};
  for (int32_t n = kExtendedDelayFirst; n < status; ++n) hinted *= 10;
  return std::clamp(hinted, kMinDelay, kMaxDelay);
}

int32_t ResultStatus(const pb::RtasResult& result) {
  switch (result.result_case()) {
    case pb::RtasResult::kSetIndicator:
      return result.set_indicator().status();
    case pb::RtasResult::kGetSensorState:
      return result.get_sensor_state().status();
    case pb::RtasResult::kConfigureConnector:
      return result.configure_connector().status();
    case pb::RtasResult::kSetPowerLevel:
      return result.set_power_level().status();
    case pb::RtasResult::kGetPowerLevel:
      return result.get_power_level().status();
    case pb::RtasResult::kCheckException:
      return result.check_exception().status();
    case pb::RtasResult::kEventScan:
      return result.event_scan().status();
    case pb::RtasResult::kQueryCpuStoppedState:
      return result.query_cpu_stopped_state().status();
    case pb::RtasResult::kStartCpu:
      return result.start_cpu().status();
    case pb::RtasResult::kStopSelf:
      return result.stop_self().status();
    case pb::RtasResult::kRaw:
      return result.raw().rets_size() > 0 ? result.raw().rets(0) : 0;
    case pb::RtasResult::kConfigureConnectorWalk: {
      const auto& calls = result.configure_connector_walk().calls();
      return calls.empty() ? 0 : calls.rbegin()->status();
    }
    case pb::RtasResult::RESULT_NOT_SET:
      break;
  }
  return 0;
}

std::vector<pb::RtasResult> RtasTransport::Run(std::vector<pb::RtasCall> calls, bool stop_at_nonzero) {
  std::vector<pb::RtasResult> results = Exchange(calls, stop_at_nonzero);
  std::vector<pb::RtasResult> done;
  size_t first = 0;  // the call of results[0]
  for (;;) {
    size_t again = 0;
    while (again < results.size() && !AnsweredAgain(calls[first + again], results[again])) ++again;
    for (size_t n = 0; n < again; ++n) done.push_back(std::move(results[n]));
    if (again == results.size()) return done;
    done.push_back(CallAgain(calls[first + again], std::move(results[again])));
    first += again + 1;
    if (!stop_at_nonzero) {  // the calls after it ran already
      results.erase(results.begin(), results.begin() + static_cast<std::ptrdiff_t>(again + 1));
      continue;
    }
    if (ResultStatus(done.back()) != 0 || first == calls.size()) return done;
    results = Exchange({calls.begin() + static_cast<std::ptrdiff_t>(first), calls.end()}, true);
  }
}

pb::RtasResult RtasTransport::CallAgain(pb::RtasCall call, pb::RtasResult result) {
  const bool walk = call.call_case() == pb::RtasCall::kConfigureConnectorWalk;
  // A walk's calls before the ones answered "call again", which its result leaves out.
  google::protobuf::RepeatedPtrField<pb::ConfigureConnectorResponse> steps;
  for (int retry = 0; retry < kMaxRetries && AnsweredAgain(call, result); ++retry) {
    const std::chrono::milliseconds delay = *RetryDelay(ResultStatus(result));
    if (delay.count() > 0) std::this_thread::sleep_for(delay);  // steady: never less than asked
    if (walk) {
      // The walk goes on from the work area the call answered "again" left, which it did not
      // change (the kernel copies it back after every call), with the calls it has left.
      auto& made = *result.mutable_configure_connector_walk()->mutable_calls();
      pb::ConfigureConnectorWalk& next = *call.mutable_configure_connector_walk();
      next.set_work_area(made.rbegin()->work_area());
      const uint32_t max_calls = next.max_calls() != 0 ? next.max_calls() : kDefaultWalkCalls;
      next.set_max_calls(std::max<uint32_t>(max_calls - static_cast<uint32_t>(made.size()) + 1, 1));
      for (int n = 0; n + 1 < made.size(); ++n) *steps.Add() = std::move(made[n]);
    }
    ++stats_.retries;
    std::vector<pb::RtasCall> one;
    one.push_back(call);
    result = std::move(Exchange(std::move(one), false).front());
  }
  if (walk && !steps.empty()) {
    auto& made = *result.mutable_configure_connector_walk()->mutable_calls();
    for (pb::ConfigureConnectorResponse& step : made) *steps.Add() = std::move(step);
    made.Swap(&steps);
  }
  return result;
}

std::vector<pb::RtasResult> RtasTransport::Exchange(std::vector<pb::RtasCall> calls, bool stop_at_nonzero) {
  if (calls.empty()) throw Failure("an RTAS batch of no calls");
  std::vector<int> kinds;
  for (const pb::RtasCall& call : calls) kinds.push_back(call.call_case());
  stats_.batched_calls += calls.size();
  ++stats_.batches;
  std::vector<pb::RtasResult> results = Send(calls, stop_at_nonzero);

  // What ExecuteBatch promises: a result per call, of its kind, in order, up to the
  // first non-zero status if asked to stop there.
  const std::string batch = "a " + std::string(Name()) + " batch of " + std::to_string(kinds.size()) + " calls";
  if (results.empty() || results.size() > kinds.size()) {
    throw Failure(batch + " came back with " + std::to_string(results.size()) + " results");
  }
  for (size_t n = 0; n < results.size(); ++n) {
    const pb::RtasResult& result = results[n];
    if (static_cast<int>(result.result_case()) != kinds[n]) {
      throw Failure(batch + ": result " + std::to_string(n) + " is of kind " + std::to_string(result.result_case()) +
                    ", the call of kind " + std::to_string(kinds[n]));
    }
    if (result.result_case() == pb::RtasResult::kConfigureConnectorWalk) {
      if (result.configure_connector_walk().calls().empty()) throw Failure(batch + ": a walk made no call");
      ++stats_.walks;
      stats_.rtas_calls += result.configure_connector_walk().calls_size();
    } else {
      ++stats_.rtas_calls;
    }
    const bool stops_here = stop_at_nonzero && ResultStatus(result) != 0;
    const bool last = n + 1 == results.size();
    if (last ? !stops_here && results.size() < kinds.size() : stops_here) {
      throw Failure(batch + (stop_at_nonzero ? " (to stop at a non-zero status)" : "") + " ended after " +
                    std::to_string(results.size()) + " results; result " + std::to_string(n) + " has status " +
                    std::to_string(ResultStatus(result)));
    }
  }
  return results;
}

std::string RtasTransport::Json() const {
  return std::string("{\"transport\":\"") + Name() + "\",\"rpcs\":" + std::to_string(stats_.rpcs) +
         ",\"batches\":" + std::to_string(stats_.batches) +
         ",\"batched_calls\":" + std::to_string(stats_.batched_calls) + ",\"walks\":" + std::to_string(stats_.walks) +
         ",\"rtas_calls\":" + std::to_string(stats_.rtas_calls) + ",\"retries\":" + std::to_string(stats_.retries) +
         "}";
}

// --- RtasSession ---

RtasSession::RtasSession(pb::RtasService::Stub& stub, std::string platform)
    : stub_(stub), platform_(std::move(platform)) {}

RtasSession::~RtasSession() {
  if (stream_ != nullptr) End(/*cancel=*/true);
}

void RtasSession::Open() {
  context_.set_deadline(std::chrono::system_clock::now() + kStreamDeadline);
  stream_ = stub_.Session(&context_);
  ++stats_.rpcs;
  reader_ = std::thread([this] { ReadLoop(); });
}

void RtasSession::ReadLoop() {
  // Read blocks; only the server, the deadline or TryCancel end it. Finish is left to the
  // caller's thread, which also writes.
  pb::SessionResponse response;
  while (stream_->Read(&response)) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(response));
    }
    changed_.notify_all();
    response = pb::SessionResponse();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    read_ended_ = true;
  }
  changed_.notify_all();
}

grpc::Status RtasSession::End(bool cancel) {
  if (!finished_) {
    if (cancel) context_.TryCancel();
    if (reader_.joinable()) reader_.join();
    status_ = stream_->Finish();
    finished_ = true;
  }
  return status_;
}

pb::SessionResponse RtasSession::Next() {
  std::unique_lock<std::mutex> lock(mutex_);
  const bool answered = changed_.wait_for(lock, kRpcDeadline, [this] { return !queue_.empty() || read_ended_; });
  if (!queue_.empty()) {
    pb::SessionResponse response = std::move(queue_.front());
    queue_.pop_front();
    return response;
  }
  lock.unlock();
  if (!answered) {
    End(/*cancel=*/true);
    throw Failure("Session: no response within " + std::to_string(kRpcDeadline.count()) + " s");
  }
  const grpc::Status status = End(/*cancel=*/false);
  if (!status.ok()) throw RpcFailure("Session", status);
  throw Failure("Session: the server ended the session without answering a request");
}

std::vector<pb::RtasResult> RtasSession::Send(std::vector<pb::RtasCall>& calls, bool stop_at_nonzero) {
  if (finished_) throw Failure("Session: already ended");
  pb::SessionRequest request;
  if (stream_ == nullptr) {
    Open();
    request.set_platform(platform_);  // the first request names the platform; later ones may not
  }
  request.set_stop_at_nonzero_status(stop_at_nonzero);
  request.mutable_calls()->Reserve(static_cast<int>(calls.size()));
  for (pb::RtasCall& call : calls) *request.add_calls() = std::move(call);
  // A failed write means the stream is over; Next() then reports how it ended.
  stream_->Write(request);
  pb::SessionResponse response = Next();
  std::vector<pb::RtasResult> results;
  results.reserve(response.results_size());
  for (pb::RtasResult& result : *response.mutable_results()) results.push_back(std::move(result));
  return results;
}

void RtasSession::Close() {
  if (stream_ == nullptr || finished_) return;
  stream_->WritesDone();
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!changed_.wait_for(lock, kRpcDeadline, [this] { return read_ended_; })) {
      lock.unlock();
      End(/*cancel=*/true);
      throw Failure("Session: not ended by the server within " + std::to_string(kRpcDeadline.count()) +
                    " s of the last request");
    }
  }
  const grpc::Status status = End(/*cancel=*/false);
  if (!status.ok()) throw RpcFailure("Session", status);
  if (!queue_.empty()) throw Failure("Session: a response to no request");
}

// --- UnaryRtas ---

std::vector<pb::RtasResult> UnaryRtas::Send(std::vector<pb::RtasCall>& calls, bool stop_at_nonzero) {
  std::vector<pb::RtasResult> results;
  for (pb::RtasCall& call : calls) {
    results.push_back(One(call));
    if (stop_at_nonzero && ResultStatus(results.back()) != 0) break;
  }
  return results;
}

pb::RtasResult UnaryRtas::One(pb::RtasCall& call) {
  pb::RtasResult result;
  switch (call.call_case()) {
    case pb::RtasCall::kSetIndicator: {
      pb::SetIndicatorRequest& request = *call.mutable_set_indicator();
      request.set_platform(platform_);
      ++stats_.rpcs;
      *result.mutable_set_indicator() =
          Unary<pb::SetIndicatorResponse>("SetIndicator", [&](auto* context, auto* response) {
            return stub_.SetIndicator(context, request, response);
          });
      return result;
    }
    case pb::RtasCall::kGetSensorState: {
      pb::GetSensorStateRequest& request = *call.mutable_get_sensor_state();
      request.set_platform(platform_);
      ++stats_.rpcs;
      *result.mutable_get_sensor_state() =
          Unary<pb::GetSensorStateResponse>("GetSensorState", [&](auto* context, auto* response) {
            return stub_.GetSensorState(context, request, response);
          });
      return result;
    }
    case pb::RtasCall::kCheckException: {
      pb::CheckExceptionRequest& request = *call.mutable_check_exception();
      request.set_platform(platform_);
      ++stats_.rpcs;
      *result.mutable_check_exception() =
          Unary<pb::CheckExceptionResponse>("CheckException", [&](auto* context, auto* response) {
            return stub_.CheckException(context, request, response);
          });
      return result;
    }
    case pb::RtasCall::kConfigureConnectorWalk: {
      // The guest's loop: each call gets the work area the previous one returned.
      const pb::ConfigureConnectorWalk& walk = call.configure_connector_walk();
      const uint32_t max_calls = walk.max_calls() != 0 ? walk.max_calls() : kDefaultWalkCalls;
      pb::ConfigureConnectorRequest request;
      request.set_platform(platform_);
      request.set_work_area(walk.work_area());
      request.set_memory_extent(walk.memory_extent());
      auto* calls = result.mutable_configure_connector_walk()->mutable_calls();
      do {
        ++stats_.rpcs;
        pb::ConfigureConnectorResponse& reply = *calls->Add();
        reply = Unary<pb::ConfigureConnectorResponse>("ConfigureConnector", [&](auto* context, auto* response) {
          return stub_.ConfigureConnector(context, request, response);
        });
        request.set_work_area(reply.work_area());
      } while (WalkContinues(calls->rbegin()->status()) && static_cast<uint32_t>(calls->size()) < max_calls);
      return result;
    }
    default:
      throw Failure("the unary transport does not make RtasCall kind " + std::to_string(call.call_case()));
  }
}

}  // namespace papr_guest
