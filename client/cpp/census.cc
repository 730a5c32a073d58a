#include "census.h"

#include <utility>
#include <vector>

namespace papr_guest {
namespace {

namespace gx = grpc::experimental;

class CountingInterceptor : public gx::Interceptor {
 public:
  CountingInterceptor(RpcCensus& census, std::string method) : census_(census), method_(std::move(method)) {
    census_.Count(method_, &RpcCensus::Counts::calls);
  }

  void Intercept(gx::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(gx::InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      census_.Count(method_, &RpcCensus::Counts::sent);
    }
    // POST_RECV_MESSAGE also marks a read that found the stream's end: no message then.
    if (methods->QueryInterceptionHookPoint(gx::InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() != nullptr) {
      census_.Count(method_, &RpcCensus::Counts::received);
    }
    methods->Proceed();
  }

 private:
  RpcCensus& census_;
  std::string method_;
};

class CountingFactory : public gx::ClientInterceptorFactoryInterface {
 public:
  explicit CountingFactory(RpcCensus& census) : census_(census) {}
  gx::Interceptor* CreateClientInterceptor(gx::ClientRpcInfo* info) override {
    return new CountingInterceptor(census_, info->method() != nullptr ? info->method() : "");
  }

 private:
  RpcCensus& census_;
};

}  // namespace

std::shared_ptr<grpc::Channel> RpcCensus::Channel(
    const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& credentials,
    const grpc::ChannelArguments& arguments,
    std::vector<std::unique_ptr<gx::ClientInterceptorFactoryInterface>> interceptors) {
  std::vector<std::unique_ptr<gx::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<CountingFactory>(*this));
  for (auto& factory : interceptors) factories.push_back(std::move(factory));
  return gx::CreateCustomChannelWithInterceptors(target, credentials, arguments, std::move(factories));
}

void RpcCensus::Count(const std::string& method, uint64_t Counts::*field) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++(counts_[method].*field);
}

std::string RpcCensus::Json() const {
  std::lock_guard<std::mutex> lock(mutex_);
  // Method names are "/package.Service/Method": nothing to escape.
  std::string json = "{";
  for (const auto& [method, counts] : counts_) {
    json += (json.size() > 1 ? ",\"" : "\"") + method + "\":{\"calls\":" + std::to_string(counts.calls) +
            ",\"sent\":" + std::to_string(counts.sent) + ",\"received\":" + std::to_string(counts.received) + "}";
  }
  return json + "}";
}

}  // namespace papr_guest
