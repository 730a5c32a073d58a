// papr-guest-cpp [--unary] [connection options] PLATFORM
//
// A guest stub against a papr-emu server ($PAPR_EMU_HOST or --server: host:port or
// unix:PATH; default 127.0.0.1:50051), in plaintext or over TLS (mTLS), with bearer tokens
// (connection.h: the options and environment variables). On the given platform (default
// geometry: first hot-pluggable LMB 0x80000004) it plays both sides of three DIMM
// hot-plug scenarios and checks what the platform does:
//   1. CAS with the hot-plug event source; hot-add a 768 MiB DIMM (count-indexed add).
//   2. hot-remove it (count-indexed remove; every LMB released; device_deleted).
//   3. plug it again, and refuse its removal as Linux 5.13+ does when LMB 2 of 3 cannot
//      be offlined (unisolate + configure-connector on LMB 1; unplug_rejected).
// Its RTAS calls go through one RtasService.Session, in batches where the kernel makes
// several in a row; with --unary, one unary RPC per RTAS call instead.
// A call answered busy or extended delay (a papr-emu fault rule) is called again, as Linux
// does (transport.h); the fault_fired events that say so are counted, not expected.
// stdout: one JSON line per handled event log, then (if every check held) one with what
// went over the wire: {"rtas":{"transport":..., batches, calls and retries},"grpc":{method:
// {"calls","sent","received"}, as counted by a client interceptor},"fault_events":N}. Exit
// 0 only if every check held; 1 with a message on stderr otherwise; 2 on a usage error.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "census.h"
#include "connection.h"
#include "dlpar.h"
#include "papr/v1/guest.grpc.pb.h"
#include "papr/v1/hotplug.grpc.pb.h"
#include "papr/v1/interrupt.grpc.pb.h"
#include "papr/v1/platform.grpc.pb.h"
#include "papr/v1/rtas.grpc.pb.h"
#include "rpc.h"
#include "transport.h"

namespace papr_guest {
namespace {

namespace pb = papr::v1;

constexpr const char* kDeviceId = "dimm-cpp";
constexpr uint64_t kDimmBytes = uint64_t{768} << 20;  // three LMBs
constexpr uint32_t kIrqHotplug = 0x1001;              // QEMU's hot-plug event source
// How long to watch for an event that must not come (a duplicate refusal, say).
constexpr std::chrono::milliseconds kQuietPeriod{300};

void Log(const std::string& message) { std::cerr << "papr-guest-cpp: " << message << std::endl; }

void Check(bool condition, const std::string& what) {
  if (!condition) throw Failure(what);
}

std::string Indexes(const std::vector<uint32_t>& indexes) {
  std::string text = "[";
  for (const uint32_t index : indexes) text += (text.size() > 1 ? " " : "") + Hex(index);
  return text + "]";
}

template <typename Repeated>
std::vector<uint32_t> ToVector(const Repeated& values) {
  return std::vector<uint32_t>(values.begin(), values.end());
}

class Scenario {
 public:
  Scenario(const std::shared_ptr<grpc::Channel>& channel, std::string platform, bool unary)
      : platform_(std::move(platform)),
        hotplug_(pb::HotplugService::NewStub(channel)),
        platforms_(pb::PlatformService::NewStub(channel)),
        guest_service_(pb::GuestService::NewStub(channel)),
        interrupt_service_(pb::InterruptService::NewStub(channel)),
        rtas_service_(pb::RtasService::NewStub(channel)),
        transport_(unary ? std::unique_ptr<RtasTransport>(std::make_unique<UnaryRtas>(*rtas_service_, platform_))
                         : std::make_unique<RtasSession>(*rtas_service_, platform_)),
        rtas_(*transport_),
        guest_(rtas_) {}

  const RtasTransport& transport() const { return *transport_; }
  // fault_fired events seen.
  uint64_t faults_fired() const { return faults_fired_; }

  void Run() {
    // A missing platform is NOT_FOUND here, rather than a stream that ends later.
    pb::GetPlatformRequest platform_request;
    platform_request.set_platform(platform_);
    Unary<pb::GetPlatformResponse>("GetPlatform", [&](auto* context, auto* response) {
      return platforms_->GetPlatform(context, platform_request, response);
    });
    // Subscribe before anything happens, so that no interrupt and no event is missed.
    pb::WatchInterruptsRequest interrupts_request;
    interrupts_request.set_platform(platform_);
    interrupts_ = std::make_unique<StreamWatcher<pb::WatchInterruptsResponse>>(
        "WatchInterrupts",
        [&](grpc::ClientContext* context) { return interrupt_service_->WatchInterrupts(context, interrupts_request); });
    pb::WatchEventsRequest events_request;
    events_request.set_platform(platform_);
    events_ = std::make_unique<StreamWatcher<pb::WatchEventsResponse>>(
        "WatchEvents", [&](grpc::ClientContext* context) { return hotplug_->WatchEvents(context, events_request); });
    const std::string after = events_->InitialMetadata("papr-subscribed-after");
    // A stream refused at once (PERMISSION_DENIED, say) ends with no metadata: its status is the news.
    if (after.empty()) events_->Next(kQuietPeriod);
    Check(!after.empty() && after.find_first_not_of("0123456789") == std::string::npos,
          "WatchEvents: papr-subscribed-after is '" + after + "', not a sequence number");
    last_sequence_ = std::stoull(after);

    NegotiateHotplugEvents();
    HotAdd();
    HotRemove();
    RefusedRemove();
    transport_->Close();  // a session ends with the server's OK
  }

 private:
  // ibm,client-architecture-support with option vector 5 byte 6 bit 0x04 (OV5_HP_EVT):
  // hotplug logs move to the hot-plug event source and DIMM adds become count-indexed.
  void NegotiateHotplugEvents() {
    std::string vector(24, '\0');
    vector[0] = static_cast<char>(vector.size() - 2);  // the length byte: bytes that follow, minus one
    vector[6] = 0x04;
    pb::ClientArchitectureSupportRequest request;
    request.set_platform(platform_);
    request.set_option_vector_5(vector);
    const auto reply =
        Unary<pb::ClientArchitectureSupportResponse>("ClientArchitectureSupport", [&](auto* context, auto* response) {
          return guest_service_->ClientArchitectureSupport(context, request, response);
        });
    Check(reply.options().negotiated() && reply.options().hotplug_events(),
          "ClientArchitectureSupport: the hot-plug event source was not negotiated");
  }

  // 1. device_add, then the guest adds every LMB.
  void HotAdd() {
    Log("1. hot-add a 768 MiB DIMM");
    lmbs_ = Plug();
    const Outcome outcome = NextOutcome();
    ExpectOutcome(outcome, kActionAdd, "done", lmbs_);
    for (const uint32_t index : lmbs_) {
      const auto connector = Connector(index);
      Check(connector.state() == pb::DRC_STATE_LOGICAL_CONFIGURED && connector.device_id() == kDeviceId,
            Hex(index) + ": not configured for " + kDeviceId + " after the add (state " +
                std::to_string(connector.state()) + ")");
    }
  }

  // 2. device_del, then the guest releases every LMB and the platform deletes the DIMM.
  void HotRemove() {
    Log("2. hot-remove it");
    Unplug();
    ExpectOutcome(NextOutcome(), kActionRemove, "done", lmbs_);
    const pb::Event deleted = NextEvent(pb::Event::kDeviceDeleted);
    Check(deleted.device_deleted().device_id() == kDeviceId &&
              ToVector(deleted.device_deleted().drc_indexes()) == lmbs_ &&
              deleted.device_deleted().released_by_drc_index() == lmbs_.back(),
          "device_deleted: " + deleted.ShortDebugString());
    const grpc::Status status = GetDevice(nullptr);
    Check(status.error_code() == grpc::StatusCode::NOT_FOUND,
          std::string("GetDevice after device_deleted: expected NOT_FOUND, got ") + StatusText(status));
  }

  // 3. Plug again; on the unplug, LMB 2 of 3 "cannot be offlined": the guest re-adds
  // LMB 1 (unisolate, then configure-connector) and the platform cancels the unplug.
  void RefusedRemove() {
    Log("3. plug it again and refuse its removal (LMB 2 of 3 cannot be offlined)");
    const std::vector<uint32_t> lmbs = Plug();
    Check(lmbs == lmbs_, "the DIMM came back on other LMBs: " + Indexes(lmbs));
    ExpectOutcome(NextOutcome(), kActionAdd, "done", lmbs_);

    guest_.lmbs_not_offlinable = {lmbs_[1]};
    Unplug();
    ExpectOutcome(NextOutcome(), kActionRemove, "refused", {lmbs_[0]});

    const pb::Event rejected = NextEvent(pb::Event::kUnplugRejected);
    Check(rejected.unplug_rejected().device_id() == kDeviceId &&
              rejected.unplug_rejected().device_type() == pb::DEVICE_TYPE_DIMM &&
              rejected.unplug_rejected().signal() == pb::REFUSAL_SIGNAL_UNISOLATE &&
              rejected.unplug_rejected().drc_index() == lmbs_[0],
          "unplug_rejected: " + rejected.ShortDebugString());
    // One refusal is one event (QEMU 7.2 reports a DIMM refused by unisolate twice).
    const auto extra = NextDeviceEvent(kQuietPeriod);
    Check(!extra, "unexpected event after the refusal: " + (extra ? extra->ShortDebugString() : ""));

    pb::Device device;
    const grpc::Status status = GetDevice(&device);
    Check(status.ok(), "GetDevice after the refusal: " + StatusText(status));
    Check(!device.unplug_pending() && ToVector(device.drc_indexes()) == lmbs_,
          "after the refusal the DIMM should be whole with no unplug pending: " + device.ShortDebugString());
    for (const uint32_t index : lmbs_) {
      const auto connector = Connector(index);
      Check(connector.state() == pb::DRC_STATE_LOGICAL_CONFIGURED && connector.device_id() == kDeviceId &&
                !connector.unplug_pending(),
            "after the refusal: " + connector.ShortDebugString());
    }
    Check(guest_.assigned_lmbs() == std::set<uint32_t>(lmbs_.begin(), lmbs_.end()),
          "after the refusal the guest should hold every LMB");
  }

  // PlugDevice (768 MiB DIMM); its LMBs, after checking the device_added event.
  std::vector<uint32_t> Plug() {
    pb::PlugDeviceRequest request;
    request.set_platform(platform_);
    request.set_id(kDeviceId);
    request.mutable_spec()->mutable_dimm()->set_size_bytes(kDimmBytes);
    const auto reply = Unary<pb::PlugDeviceResponse>(
        "PlugDevice", [&](auto* context, auto* response) { return hotplug_->PlugDevice(context, request, response); });
    const std::vector<uint32_t> lmbs = ToVector(reply.device().drc_indexes());
    Check(lmbs.size() == 3, "PlugDevice: expected 3 LMBs, got " + Indexes(lmbs));
    const pb::Event added = NextEvent(pb::Event::kDeviceAdded);
    Check(added.device_added().device().id() == kDeviceId &&
              ToVector(added.device_added().device().drc_indexes()) == lmbs,
          "device_added: " + added.ShortDebugString());
    return lmbs;
  }

  // UnplugDevice; the unplug must wait for the guest (its LMBs are acquired).
  void Unplug() {
    pb::UnplugDeviceRequest request;
    request.set_platform(platform_);
    request.set_id(kDeviceId);
    const auto reply = Unary<pb::UnplugDeviceResponse>("UnplugDevice", [&](auto* context, auto* response) {
      return hotplug_->UnplugDevice(context, request, response);
    });
    Check(!reply.deleted() && reply.device().unplug_pending(),
          "UnplugDevice: expected an unplug pending on the guest, got " + reply.ShortDebugString());
    const pb::Event requested = NextEvent(pb::Event::kUnplugRequested);
    Check(requested.unplug_requested().device_id() == kDeviceId &&
              ToVector(requested.unplug_requested().drc_indexes()) == lmbs_,
          "unplug_requested: " + requested.ShortDebugString());
  }

  // Waits for the hot-plug interrupt, then handles every queued log, as the kernel's
  // interrupt handler does; exactly one log is expected. Its JSON line goes to stdout.
  Outcome NextOutcome() {
    std::vector<Outcome> outcomes;
    while (outcomes.empty()) {
      const auto pulse = interrupts_->Next(kRpcDeadline);
      Check(pulse.has_value(), "no hot-plug interrupt within " + std::to_string(kRpcDeadline.count()) + " s");
      Check(pulse->event_class() == kEventClassHotplug && pulse->irq() == kIrqHotplug,
            "interrupt on the wrong source after CAS: " + pulse->ShortDebugString());
      // A pulse whose log was already taken (pulses coalesce) finds nothing: wait again.
      outcomes = guest_.HandlePending();
    }
    for (const Outcome& outcome : outcomes) {
      std::cout << outcome.Json() << std::endl;
      Log("event: resource " + std::to_string(outcome.event.resource) + ", action " +
          std::to_string(outcome.event.action) + ", id type " + std::to_string(outcome.event.id_type) + " -> " +
          outcome.result + " (" + outcome.detail + ")");
    }
    Check(outcomes.size() == 1, "expected one event log, got " + std::to_string(outcomes.size()));
    return outcomes.front();
  }

  void ExpectOutcome(const Outcome& outcome, uint8_t action, const std::string& result,
                     const std::vector<uint32_t>& drc_indexes) {
    const std::string what = std::string(action == kActionAdd ? "add" : "remove") + " event: ";
    Check(outcome.event.resource == kResourceMemory && outcome.event.action == action,
          what + "resource " + std::to_string(outcome.event.resource) + ", action " +
              std::to_string(outcome.event.action) + " (" + outcome.result + ": " + outcome.detail + ")");
    Check(outcome.event.id_type == kIdDrcCountIndexed && outcome.event.count == lmbs_.size() &&
              outcome.event.index == lmbs_.front(),
          what + "expected count-indexed " + std::to_string(lmbs_.size()) + " from " + Hex(lmbs_.front()) +
              ", got id type " + std::to_string(outcome.event.id_type) + ", count " +
              std::to_string(outcome.event.count) + ", index " + Hex(outcome.event.index));
    Check(outcome.result == result && outcome.drc_indexes == drc_indexes,
          what + "expected " + result + " on " + Indexes(drc_indexes) + ", got " + outcome.result + " on " +
              Indexes(outcome.drc_indexes) + ": " + outcome.detail);
  }

  // The next management event, which must be of `kind`.
  pb::Event NextEvent(pb::Event::KindCase kind) {
    const auto event = NextDeviceEvent(kRpcDeadline);
    Check(event.has_value(), "no management event within " + std::to_string(kRpcDeadline.count()) +
                                 " s (expected kind " + std::to_string(kind) + ")");
    Check(event->kind_case() == kind,
          "expected event kind " + std::to_string(kind) + ", got " + event->ShortDebugString());
    return *event;
  }

  // The next management event but fault_fired (a fault rule's news, not the device's: the
  // RTAS layer has called again), or nullopt if none comes within `timeout`. Every event
  // must follow the last one seen.
  std::optional<pb::Event> NextDeviceEvent(std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      const auto response = events_->Next(std::max(left, std::chrono::milliseconds{0}));
      if (!response) return std::nullopt;
      const pb::Event& event = response->event();
      Check(event.sequence() == last_sequence_ + 1,
            "event sequence " + std::to_string(event.sequence()) + " after " + std::to_string(last_sequence_));
      last_sequence_ = event.sequence();
      if (event.kind_case() != pb::Event::kFaultFired) return event;
      ++faults_fired_;
    }
  }

  pb::Connector Connector(uint32_t index) {
    pb::GetConnectorRequest request;
    request.set_platform(platform_);
    request.set_drc_index(index);
    return Unary<pb::GetConnectorResponse>(
               "GetConnector",
               [&](auto* context, auto* response) { return platforms_->GetConnector(context, request, response); })
        .connector();
  }

  // GetDevice's status (NOT_FOUND is an answer here, not a failure); the device if asked.
  grpc::Status GetDevice(pb::Device* device) {
    pb::GetDeviceRequest request;
    request.set_platform(platform_);
    request.set_id(kDeviceId);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kRpcDeadline);
    pb::GetDeviceResponse response;
    const grpc::Status status = hotplug_->GetDevice(&context, request, &response);
    if (status.ok() && device != nullptr) *device = response.device();
    return status;
  }

  std::string platform_;
  std::unique_ptr<pb::HotplugService::Stub> hotplug_;
  std::unique_ptr<pb::PlatformService::Stub> platforms_;
  std::unique_ptr<pb::GuestService::Stub> guest_service_;
  std::unique_ptr<pb::InterruptService::Stub> interrupt_service_;
  std::unique_ptr<pb::RtasService::Stub> rtas_service_;
  std::unique_ptr<RtasTransport> transport_;  // every RTAS call of the run
  RtasGuest rtas_;
  MemoryGuest guest_;
  std::unique_ptr<StreamWatcher<pb::WatchInterruptsResponse>> interrupts_;
  std::unique_ptr<StreamWatcher<pb::WatchEventsResponse>> events_;
  uint64_t last_sequence_ = 0;
  uint64_t faults_fired_ = 0;
  std::vector<uint32_t> lmbs_;  // the DIMM's LMBs, ascending
};

}  // namespace
}  // namespace papr_guest

namespace {

const char* const kUsage =
    "usage: papr-guest-cpp [--unary] [connection options] PLATFORM\n"
    "  --unary                    one unary RPC per RTAS call instead of one RtasService.Session\n";

// The options (--flag VALUE or --flag=VALUE) before the platform; UsageError if they do not parse.
std::string ParseArguments(const std::vector<std::string>& args, bool& unary,
                           papr_guest::ConnectionOptions& connection) {
  std::string platform;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.empty() || arg[0] != '-') {
      if (!platform.empty()) throw papr_guest::UsageError("one platform only: '" + arg + "' after '" + platform + "'");
      platform = arg;
      continue;
    }
    if (arg == "--unary") {
      unary = true;
      continue;
    }
    if (arg == "--tls") {
      connection.tls = true;
      continue;
    }
    const size_t equals = arg.find('=');
    const std::string flag = arg.substr(0, equals);
    std::string value;
    if (equals != std::string::npos) {
      value = arg.substr(equals + 1);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      throw papr_guest::UsageError(flag + " needs a value");
    }
    if (!connection.Set(flag, value)) throw papr_guest::UsageError("unknown option " + flag);
  }
  if (platform.empty()) throw papr_guest::UsageError("no platform given");
  connection.Finish();
  return platform;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  bool unary = false;
  papr_guest::ConnectionOptions connection;
  std::string platform;
  try {
    platform = ParseArguments(args, unary, connection);
  } catch (const papr_guest::UsageError& error) {
    std::cerr << "papr-guest-cpp: " << error.what() << "\n" << kUsage << papr_guest::kConnectionUsage;
    return 2;
  }
  papr_guest::RpcCensus census;  // outlives the channel
  try {
    papr_guest::Log("connecting to " + connection.target + ": " + connection.Describe());
    const auto channel = papr_guest::Connect(connection, census);
    papr_guest::WaitUntilConnected(channel, connection);
    papr_guest::Scenario scenario(channel, platform, unary);
    scenario.Run();
    std::cout << "{\"rtas\":" << scenario.transport().Json() << ",\"grpc\":" << census.Json()
              << ",\"fault_events\":" << scenario.faults_fired() << "}" << std::endl;
  } catch (const papr_guest::UsageError& error) {  // a file named in the options that cannot be read
    std::cerr << "papr-guest-cpp: " << error.what() << std::endl;
    return 2;
  } catch (const std::exception& error) {
    std::cerr << "papr-guest-cpp: FAIL: " << error.what() << std::endl;
    return 1;
  }
  papr_guest::Log("all checks passed");
  return 0;
}
