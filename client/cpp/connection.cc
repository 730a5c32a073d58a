#include "connection.h"

#include <grpcpp/support/client_interceptor.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "papr/v1/platform.grpc.pb.h"
#include "rpc.h"

namespace papr_guest {
namespace {

namespace gx = grpc::experimental;

constexpr const char* kDefaultTarget = "127.0.0.1:50051";
constexpr const char* kHotplugService = "/papr.v1.HotplugService/";

std::string ReadFile(const std::string& path, const std::string& what) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream contents;
  if (!file || !(contents << file.rdbuf())) throw UsageError(what + " " + path + ": cannot read it");
  return contents.str();
}

std::string Trim(const std::string& text) {
  const auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  size_t begin = 0, end = text.size();
  while (begin < end && space(text[begin])) ++begin;
  while (end > begin && space(text[end - 1])) --end;
  return text.substr(begin, end - begin);
}

// A token as read from a file or a variable: surrounding white space dropped; it must be
// one printable word (it goes into a metadata value). The message never shows it.
std::string Token(const std::string& raw, const std::string& what) {
  std::string token = Trim(raw);
  if (token.empty()) throw UsageError(what + ": the token is empty");
  for (const unsigned char c : token) {
    if (c <= 0x20 || c >= 0x7f) throw UsageError(what + ": the token has a character a token cannot have");
  }
  return token;
}

const char* Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

// A unix socket or a loopback host: nobody else sees what goes over it.
bool IsLocal(const std::string& target) {
  if (target.rfind("unix:", 0) == 0 || target.rfind("unix-abstract:", 0) == 0) return true;
  std::string host = target;
  if (host.rfind("dns:", 0) == 0) host = host.substr(host.find_last_of('/') + 1);
  if (!host.empty() && host.front() == '[') {
    host = host.substr(1, host.find(']') - 1);
  } else if (host.find(':') != host.rfind(':')) {
    // a bare IPv6 address without a port
  } else if (const size_t colon = host.rfind(':'); colon != std::string::npos) {
    host = host.substr(0, colon);
  }
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// Adds `authorization: Bearer <token>` to the RPC's initial metadata.
class BearerInterceptor : public gx::Interceptor {
 public:
  explicit BearerInterceptor(const std::string& token) : token_(token) {}

  void Intercept(gx::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(gx::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", "Bearer " + token_);
    }
    methods->Proceed();
  }

 private:
  const std::string& token_;  // owned by the factory, which outlives the channel's calls
};

// Picks the token each RPC may use: the manager token for HotplugService, the guest token
// for the rest. An RPC with no token to send gets no interceptor.
class BearerFactory : public gx::ClientInterceptorFactoryInterface {
 public:
  BearerFactory(std::string guest_token, std::string manager_token)
      : guest_token_(std::move(guest_token)), manager_token_(std::move(manager_token)) {}

  gx::Interceptor* CreateClientInterceptor(gx::ClientRpcInfo* info) override {
    const std::string method = info->method() != nullptr ? info->method() : "";
    const bool hotplug = method.rfind(kHotplugService, 0) == 0;
    const std::string& token = hotplug && !manager_token_.empty() ? manager_token_ : guest_token_;
    return token.empty() ? nullptr : new BearerInterceptor(token);
  }

 private:
  const std::string guest_token_;
  const std::string manager_token_;
};

}  // namespace

const char* const kConnectionUsage =
    "  --server TARGET            host:port or unix:PATH ($PAPR_EMU_HOST; default 127.0.0.1:50051)\n"
    "  --ca FILE                  TLS, trusting this CA (PEM) for the server's certificate ($PAPR_EMU_CA)\n"
    "  --tls                      TLS, trusting the system's CAs\n"
    "  --cert FILE --key FILE     mTLS: the client certificate and its key, PEM ($PAPR_EMU_CERT, $PAPR_EMU_KEY)\n"
    "  --server-name NAME         the name the server's certificate must carry ($PAPR_EMU_SERVER_NAME)\n"
    "  --token-file FILE          guest token, sent as 'authorization: Bearer' on every RPC but HotplugService's\n"
    "                             (the token itself in $PAPR_EMU_TOKEN)\n"
    "  --manager-token-file FILE  manager token for HotplugService's RPCs; default: the guest token\n"
    "                             (the token itself in $PAPR_EMU_MANAGER_TOKEN)\n";

bool ConnectionOptions::Set(const std::string& flag, const std::string& value) {
  if (value.empty()) throw UsageError(flag + ": empty value");
  if (flag == "--server") {
    target = value, target_set_ = true;
  } else if (flag == "--ca") {
    ca_file = value, ca_set_ = true;
  } else if (flag == "--cert") {
    cert_file = value, cert_set_ = true;
  } else if (flag == "--key") {
    key_file = value, key_set_ = true;
  } else if (flag == "--server-name") {
    server_name = value, server_name_set_ = true;
  } else if (flag == "--token-file") {
    guest_token = Token(ReadFile(value, flag), flag + " " + value), guest_token_set_ = true;
  } else if (flag == "--manager-token-file") {
    manager_token = Token(ReadFile(value, flag), flag + " " + value), manager_token_set_ = true;
  } else {
    return false;
  }
  return true;
}

void ConnectionOptions::Finish() {
  const auto from_env = [](bool set, std::string& field, const char* name) {
    if (!set && Env(name) != nullptr) field = Env(name);
  };
  from_env(target_set_, target, "PAPR_EMU_HOST");
  from_env(ca_set_, ca_file, "PAPR_EMU_CA");
  from_env(cert_set_, cert_file, "PAPR_EMU_CERT");
  from_env(key_set_, key_file, "PAPR_EMU_KEY");
  from_env(server_name_set_, server_name, "PAPR_EMU_SERVER_NAME");
  if (!guest_token_set_ && Env("PAPR_EMU_TOKEN") != nullptr) {
    guest_token = Token(Env("PAPR_EMU_TOKEN"), "$PAPR_EMU_TOKEN");
  }
  if (!manager_token_set_ && Env("PAPR_EMU_MANAGER_TOKEN") != nullptr) {
    manager_token = Token(Env("PAPR_EMU_MANAGER_TOKEN"), "$PAPR_EMU_MANAGER_TOKEN");
  }
  if (target.empty()) target = kDefaultTarget;
  if (cert_file.empty() != key_file.empty()) {
    throw UsageError("a client certificate and its key go together: give both --cert and --key, or neither");
  }
  tls = tls || !ca_file.empty() || !cert_file.empty();
  if (!server_name.empty() && !tls) throw UsageError("--server-name is for TLS: give --ca (or --tls) too");
  if (!tls && (!guest_token.empty() || !manager_token.empty()) && !IsLocal(target)) {
    throw UsageError("refusing to send a bearer token in plaintext to " + target +
                     ": give --ca (TLS), or use a unix socket or a loopback address");
  }
}

std::string ConnectionOptions::Describe() const {
  std::string text = tls ? (cert_file.empty() ? "TLS" : "mTLS") : "plaintext";
  if (!server_name.empty()) text += " (server name " + server_name + ")";
  if (guest_token.empty() && manager_token.empty()) return text + ", no token";
  if (manager_token.empty()) return text + ", one token";
  return text + (guest_token.empty() ? ", a manager token only" : ", a guest and a manager token");
}

std::shared_ptr<grpc::Channel> Connect(const ConnectionOptions& options, RpcCensus& census) {
  grpc::ChannelArguments arguments;
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;  // empty roots: the system's
    if (!options.ca_file.empty()) ssl.pem_root_certs = ReadFile(options.ca_file, "CA");
    if (!options.cert_file.empty()) {
      ssl.pem_cert_chain = ReadFile(options.cert_file, "client certificate");
      ssl.pem_private_key = ReadFile(options.key_file, "client key");
    }
    credentials = grpc::SslCredentials(ssl);
    if (!options.server_name.empty()) arguments.SetSslTargetNameOverride(options.server_name);
  }
  std::vector<std::unique_ptr<gx::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<BearerFactory>(options.guest_token, options.manager_token));
  return census.Channel(options.target, credentials, arguments, std::move(factories));
}

void WaitUntilConnected(const std::shared_ptr<grpc::Channel>& channel, const ConnectionOptions& options) {
  if (channel->WaitForConnected(std::chrono::system_clock::now() + kRpcDeadline)) return;
  const std::string what =
      "cannot reach papr-emu at " + options.target + " within " + std::to_string(kRpcDeadline.count()) + " s";
  // An RPC that does not wait for the channel fails at once with the last connection
  // error: that is the reason to report (refused, a TLS handshake the certificate failed).
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  const auto stub = papr::v1::PlatformService::NewStub(channel);
  papr::v1::GetPlatformResponse response;
  const grpc::Status status = stub->GetPlatform(&context, papr::v1::GetPlatformRequest(), &response);
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    std::string hint;
    // A server that closes the connection during the handshake: most likely one that wants
    // TLS from a plaintext client, or a client certificate the client did not present.
    if (status.error_message().find("Socket closed") != std::string::npos) {
      if (!options.tls) hint = " (a TLS server? give --ca)";
      else if (options.cert_file.empty()) hint = " (a server that requires a client certificate? give --cert and --key)";
    }
    throw Failure(what + ": " + StatusText(status) + hint);
  }
  // It got through after all: the channel is up now.
}

}  // namespace papr_guest
