#!/usr/bin/env node
// A Node.js guest stub for papr-emu: hot-adds a CPU core, removes it, then refuses its
// removal ("CPU busy"), making the RTAS calls the Linux pseries kernel makes
// (arch/powerpc/platforms/pseries: dlpar.c, hotplug-cpu.c).
//
//   node client/node/guest.js [--unary] [--server TARGET] [--tls] [--ca FILE]
//       [--cert FILE --key FILE] [--server-name NAME] [--token-file FILE]
//       [--manager-token-file FILE] PLATFORM
//
// Its RTAS calls go through one RtasService.Session stream, the calls it makes in a row
// batched into one session request (acquire, release, unisolate; configure-connector as a
// walk); --unary makes them one unary RPC per RTAS call instead, as before sessions.
// A call answered busy (-2) or extended delay (990x), as a papr-emu fault rule may answer,
// is called again as Linux does (CallingAgain below); the fault_fired events that follow
// are counted, not expected.
// The server comes from --server, else $PAPR_EMU_HOST (host:port or unix:PATH), else
// 127.0.0.1:50051. TLS, mTLS and bearer tokens: see connectionFromArgs() below and README.md
// (options override $PAPR_EMU_CA, $PAPR_EMU_CERT, $PAPR_EMU_KEY, $PAPR_EMU_SERVER_NAME,
// $PAPR_EMU_TOKEN and $PAPR_EMU_MANAGER_TOKEN). Tokens are never printed.
// The .proto files are loaded from the repository's proto/ directory at run time
// (override with $PAPR_EMU_PROTO_DIR).
//
// Output: one JSON line per hotplug event handled, on stdout:
//   {"resource":1,"action":1,"result":"done","drc_indexes":[268435457]}
// then, once every check held, one summary line: the RPCs the stub started (counted by a
// client interceptor, so by what went to the channel) and the messages of the session:
//   {"summary":{"rtas":"session","unary_rtas_calls":0,"session_streams":1,...}}
// Diagnostics go to stderr. Exit status 0 only if every check held; 1 if one failed;
// 2 on a usage error. Every RPC has a deadline and every wait is bounded.
'use strict';

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DEFAULT_TARGET = '127.0.0.1:50051';
const WAIT_MS = 10_000; // every RPC deadline and every wait for a pulse or an event
const WATCHDOG_MS = 60_000; // the whole run

// RTAS constants (LoPAR; the kernel's names in comments).
const ISOLATION_STATE = 9001; // ISOLATION_STATE
const ALLOCATION_STATE = 9003; // ALLOCATION_STATE
const DR_ENTITY_SENSE = 9003; // DR_ENTITY_SENSE
const ISOLATE = 0;
const UNISOLATE = 1;
const UNUSABLE = 0;
const USABLE = 1;
const SENSE_PRESENT = 1;
const SENSE_UNUSABLE = 2;
const RTAS_ERROR_LOG_MAX = 2048;
const EVENT_MASK_ALL = 0xffffffff;
const WORK_AREA_SIZE = 4096;
// ibm,configure-connector statuses.
const CC_COMPLETE = 0;
const CC_NEXT_SIBLING = 1;
const CC_NEXT_CHILD = 2;
const CC_NEXT_PROPERTY = 3;
const CC_PREV_PARENT = 4;
const CC_MAX_CALLS = 10_000;
// Calls per configure-connector walk: a CPU core's fragment takes one walk; a longer one
// resumes in the next. The server sizes a batch at max_calls 4 KiB work areas per walk.
const WALK_MAX_CALLS = 64;
// "Call again" statuses, answered as Linux's rtas_busy_delay() does around every RTAS call of
// its DLPAR code: busy at once, extended delay 9900 + n after 10^n ms clamped to [1 ms, 1 s].
const RTAS_BUSY = -2;
const EXTENDED_DELAY_FIRST = 9900;
const EXTENDED_DELAY_LAST = 9905;
const MAX_DELAY_MS = 1000;
// Calls again of one call before its last status stands (papr_emu_client's
// RetryPolicy.max_retries; Linux itself never gives up).
const MAX_RETRIES = 10_000;
// Hotplug log HP section.
const RESOURCE_CPU = 1;
const ACTION_ADD = 1;
const ACTION_REMOVE = 2;
const ID_INDEX = 2;
const ID_COUNT_INDEXED = 4;

const CPU_DRC_BASE = 0x10000000;
const CORE_ID = 1;
const DEVICE_ID = 'core-node';

const RTAS_SERVICE = 'papr.v1.RtasService';
// The unary RPC of each RtasCall kind (--unary).
const UNARY_RPCS = {
  set_indicator: 'SetIndicator',
  get_sensor_state: 'GetSensorState',
  configure_connector: 'ConfigureConnector',
  set_power_level: 'SetPowerLevel',
  get_power_level: 'GetPowerLevel',
  check_exception: 'CheckException',
  event_scan: 'EventScan',
  query_cpu_stopped_state: 'QueryCpuStoppedState',
  start_cpu: 'StartCpu',
  stop_self: 'StopSelf',
  raw: 'Call',
};

class CheckFailed extends Error {}

// A bad command line or environment (exit status 2).
class UsageError extends Error {}

// A gRPC error, named after the RPC that got it.
class RpcFailed extends Error {
  constructor(method, error) {
    super(`${method}: ${error.message}`);
    this.code = error.code;
  }
}

function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

function hex(n) {
  return '0x' + (n >>> 0).toString(16);
}

// --- connection: target, TLS, tokens ------------------------------------------------------

const USAGE =
  'usage: node guest.js [--unary] [--server TARGET] [--tls] [--ca FILE] [--cert FILE --key FILE]\n' +
  '                     [--server-name NAME] [--token-file FILE] [--manager-token-file FILE] PLATFORM\n' +
  '  (environment: PAPR_EMU_HOST, PAPR_EMU_CA, PAPR_EMU_CERT, PAPR_EMU_KEY, PAPR_EMU_SERVER_NAME,\n' +
  '   PAPR_EMU_TOKEN, PAPR_EMU_MANAGER_TOKEN; default server 127.0.0.1:50051, plaintext, no token)\n';

// The options that take a value, and the environment variable each overrides.
const VALUE_OPTIONS = {
  '--server': 'PAPR_EMU_HOST',
  '--ca': 'PAPR_EMU_CA',
  '--cert': 'PAPR_EMU_CERT',
  '--key': 'PAPR_EMU_KEY',
  '--server-name': 'PAPR_EMU_SERVER_NAME',
  '--token-file': 'PAPR_EMU_TOKEN',
  '--manager-token-file': 'PAPR_EMU_MANAGER_TOKEN',
};

// The command line: { unary, tls, platform, values: { '--ca': ..., ... } }; UsageError if bad.
function parseArgs(argv) {
  const parsed = { unary: false, tls: false, platform: null, values: {} };
  for (let n = 0; n < argv.length; n++) {
    const arg = argv[n];
    const eq = arg.indexOf('=');
    const name = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
    if (name === '--unary' || name === '--tls') {
      checkUsage(name === arg, `${name} takes no value`);
      parsed[name.slice(2)] = true;
    } else if (Object.hasOwn(VALUE_OPTIONS, name)) {
      const value = name === arg ? argv[++n] : arg.slice(eq + 1);
      checkUsage(value !== undefined && value !== '', `${name} needs a value`);
      parsed.values[name] = value;
    } else {
      checkUsage(!arg.startsWith('-'), `unknown option ${name}`);
      checkUsage(parsed.platform === null, `one platform, not ${parsed.platform} and ${arg}`);
      parsed.platform = arg;
    }
  }
  checkUsage(parsed.platform !== null, 'no platform given');
  return parsed;
}

function checkUsage(condition, message) {
  if (!condition) throw new UsageError(message);
}

function readFile(file, what) {
  try {
    return fs.readFileSync(file);
  } catch (error) {
    throw new UsageError(`${what} ${file}: ${error.code || error.message}`);
  }
}

// A bearer token, checked without ever being shown: printable ASCII, no spaces (a header value).
function checkToken(token, what) {
  checkUsage(token.length > 0, `${what}: empty token`);
  checkUsage(/^[\x21-\x7e]+$/.test(token), `${what}: the token has characters a gRPC header cannot carry`);
  return token;
}

// A plaintext channel may carry a token only to this machine: a unix socket or a loopback host.
function isLocalTarget(target) {
  if (/^unix(-abstract)?:/.test(target)) return true;
  let host = target.replace(/^dns:(\/\/[^/]*\/)?/, '').replace(/^ipv[46]:/, '');
  host = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d+$/, '');
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  return net.isIPv6(host) && (host === '::1' || /^(0{0,4}:){7}0{0,3}1$/.test(host));
}

// How to reach the server, from the options, else the environment (file paths: PEM files and
// token files on the command line; PEM file paths and the tokens themselves in the environment):
//   target       --server, PAPR_EMU_HOST (host:port or unix:PATH), else 127.0.0.1:50051
//   TLS          on with --tls (system roots), --ca/PAPR_EMU_CA (the CA that signed the server's
//                certificate), or a client certificate
//   mTLS         --cert and --key (PAPR_EMU_CERT, PAPR_EMU_KEY): the client certificate and key
//   server name  --server-name, PAPR_EMU_SERVER_NAME: the name the server's certificate must
//                bear (grpc.ssl_target_name_override), when it is not the target's host
//   guestToken   --token-file, PAPR_EMU_TOKEN: for RtasService, InterruptService and
//                PlatformService (GetConnector); an admin token does for everything
//   managerToken --manager-token-file, PAPR_EMU_MANAGER_TOKEN: for HotplugService (PlugDevice,
//                UnplugDevice, GetDevice, WatchEvents), which a guest token may not call;
//                else the guest token
function connectionFromArgs(parsed, env = process.env) {
  const option = (name) => parsed.values[name] ?? (env[VALUE_OPTIONS[name]] || undefined);
  const fromOption = (name) => parsed.values[name] !== undefined;
  const target = option('--server') || DEFAULT_TARGET;
  const [ca, cert, key] = ['--ca', '--cert', '--key'].map((name) => {
    const file = option(name);
    return file === undefined ? null : readFile(file, fromOption(name) ? name : VALUE_OPTIONS[name]);
  });
  checkUsage((cert === null) === (key === null), 'a client certificate and its key go together: give both or neither');
  const tls = parsed.tls || ca !== null || cert !== null;
  const token = (name) => {
    if (fromOption(name)) {
      return checkToken(readFile(parsed.values[name], name).toString('utf8').trim(), name);
    }
    const value = (env[VALUE_OPTIONS[name]] || '').trim();
    return value ? checkToken(value, VALUE_OPTIONS[name]) : null;
  };
  const guestToken = token('--token-file');
  const managerToken = token('--manager-token-file') || guestToken;
  checkUsage(
    tls || guestToken === null || isLocalTarget(target),
    `a token would cross the network in clear text to ${target}: use TLS (--ca, --tls), or a local target`,
  );
  const serverName = option('--server-name') || null;
  return { target, tls, ca, cert, key, serverName, guestToken, managerToken };
}

// Call credentials sending `authorization: Bearer <token>` on every call of a TLS channel.
function bearerCredentials(token) {
  return grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${token}`);
    callback(null, metadata);
  });
}

// The same on a plaintext (local) channel, which grpc-js will not combine with call
// credentials: a client interceptor adding the metadata to every call it starts.
function bearerInterceptor(token) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start: (metadata, listener, next) => {
        metadata.set('authorization', `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

// Channel credentials and options for one token (or none) over this connection.
function channelFor(connection, token) {
  const options = {};
  if (!connection.tls) return { credentials: grpc.credentials.createInsecure(), options };
  if (connection.serverName) {
    options['grpc.ssl_target_name_override'] = connection.serverName;
    options['grpc.default_authority'] = connection.serverName;
  }
  const ssl = grpc.credentials.createSsl(connection.ca, connection.key, connection.cert);
  const credentials = token === null ? ssl : grpc.credentials.combineChannelCredentials(ssl, bearerCredentials(token));
  return { credentials, options };
}

// --- gRPC plumbing ---------------------------------------------------------------------------

function loadServices() {
  const protoDir = process.env.PAPR_EMU_PROTO_DIR || path.resolve(__dirname, '..', '..', 'proto');
  const files = ['rtas', 'hotplug', 'interrupt', 'platform'].map((n) => `papr/v1/${n}.proto`);
  const definition = protoLoader.loadSync(files, {
    includeDirs: [protoDir],
    keepCase: true, // field names as in the .proto (drc_indexes, work_area)
    longs: String, // uint64 (event sequence numbers) as decimal strings
    enums: String, // enum values by name (REFUSAL_SIGNAL_UNISOLATE)
    bytes: Buffer,
    defaults: true,
    oneofs: true, // event.kind names the set member of a oneof
  });
  return grpc.loadPackageDefinition(definition).papr.v1;
}

function deadline(ms = WAIT_MS) {
  return new Date(Date.now() + ms);
}

// A unary call as a promise, with a deadline.
function unary(stub, method, request) {
  return new Promise((resolve, reject) => {
    stub[method](request, { deadline: deadline() }, (error, response) => {
      if (error) reject(new RpcFailed(method, error));
      else resolve(response);
    });
  });
}

// A client interceptor counting, per method ("papr.v1.RtasService/Session"), the calls
// started and the messages sent and received: the proof of which RPCs the stub made.
class RpcCounter {
  constructor() {
    this.calls = {};
    this.sent = {};
    this.received = {};
    this.interceptor = (options, nextCall) => {
      const method = options.method_definition.path.replace(/^\//, '');
      bump(this.calls, method);
      return new grpc.InterceptingCall(nextCall(options), {
        start: (metadata, listener, next) => {
          next(metadata, {
            onReceiveMessage: (message, nextMessage) => {
              bump(this.received, method);
              nextMessage(message);
            },
          });
        },
        sendMessage: (message, next) => {
          bump(this.sent, method);
          next(message);
        },
      });
    };
  }

  summary(transport) {
    const session = `${RTAS_SERVICE}/Session`;
    let unaryRtas = 0;
    for (const [method, n] of Object.entries(this.calls)) {
      if (method.startsWith(`${RTAS_SERVICE}/`) && method !== session) unaryRtas += n;
    }
    return {
      rtas: transport,
      unary_rtas_calls: unaryRtas,
      session_streams: this.calls[session] || 0,
      session_requests: this.sent[session] || 0,
      session_responses: this.received[session] || 0,
      rpcs: this.calls,
    };
  }
}

function bump(counts, key) {
  counts[key] = (counts[key] || 0) + 1;
}

// The RTAS status of an RtasResult (a walk's is its last call's), as the server's
// stop_at_nonzero_status reads it.
function statusOf(kind, response) {
  if (kind === 'raw') return response.rets.length ? response.rets[0] : 0;
  if (kind === 'configure_connector_walk') return response.calls[response.calls.length - 1].status;
  return response.status;
}

// RTAS calls over one RtasService.Session stream: run(calls, stop) sends one SessionRequest
// (a batch) and resolves with its SessionResponse's results. Responses come in request
// order; each is awaited at most WAIT_MS, after which the session is given up. The stream
// is opened by the first request and lives (at most WATCHDOG_MS) until close().
class RtasSession {
  constructor(rtas, platform) {
    this.rtas = rtas;
    this.platform = platform;
    this.call = null;
    this.pending = [];
    this.error = null;
    this.closing = false;
    this.finished = false; // the stream has its status
  }

  open() {
    this.call = this.rtas.Session({ deadline: deadline(WATCHDOG_MS) });
    this.call.on('data', (response) => {
      const waiter = this.pending.shift();
      if (waiter) waiter.resolve(response.results);
      else this.fail(new CheckFailed('Session: a response to no request'));
    });
    this.call.on('error', (error) => {
      if (this.closing && error.code === grpc.status.CANCELLED) return;
      this.fail(new RpcFailed('Session', error));
    });
    this.call.on('end', () => {
      if (!this.closing) this.fail(new CheckFailed('Session: the server ended the session'));
    });
    this.call.on('status', () => {
      this.finished = true;
    });
  }

  run(calls, stopAtNonzeroStatus) {
    if (this.error) return Promise.reject(this.error);
    const request = { calls, stop_at_nonzero_status: stopAtNonzeroStatus };
    if (this.call === null) {
      request.platform = this.platform; // the first request names the platform, later ones need not
      this.open();
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(new CheckFailed(`Session: no response within ${WAIT_MS} ms`));
        this.closing = true;
        this.call.cancel();
      }, WAIT_MS);
      this.pending.push({
        resolve: (results) => {
          clearTimeout(timer);
          resolve(results);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.call.write(request);
    });
  }

  fail(error) {
    if (!this.error) this.error = error;
    for (const waiter of this.pending.splice(0)) waiter.reject(this.error);
  }

  // Half-closes the stream and waits (bounded) for the server to end it.
  close() {
    if (this.call === null || this.closing || this.finished) return Promise.resolve();
    this.closing = true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.call.cancel();
        resolve();
      }, WAIT_MS);
      this.call.once('status', () => {
        clearTimeout(timer);
        resolve();
      });
      this.call.end();
    });
  }
}

// The same batches as unary RPCs, one per RTAS call (--unary): a walk is a loop of
// ConfigureConnector calls, and stop_at_nonzero_status is applied here.
class RtasUnary {
  constructor(rtas, platform) {
    this.rtas = rtas;
    this.platform = platform;
  }

  async run(calls, stopAtNonzeroStatus) {
    const results = [];
    for (const call of calls) {
      const [kind] = Object.keys(call);
      const response =
        kind === 'configure_connector_walk'
          ? await this.walk(call[kind])
          : await unary(this.rtas, UNARY_RPCS[kind], { ...call[kind], platform: this.platform });
      results.push({ result: kind, [kind]: response });
      if (stopAtNonzeroStatus && statusOf(kind, response) !== 0) break;
    }
    return results;
  }

  async walk({ work_area: workArea, memory_extent: memoryExtent, max_calls: maxCalls }) {
    const calls = [];
    let area = workArea;
    for (let n = 0; n < (maxCalls || WALK_MAX_CALLS); n++) {
      const reply = await unary(this.rtas, 'ConfigureConnector', {
        platform: this.platform,
        work_area: area,
        memory_extent: memoryExtent,
      });
      calls.push(reply);
      area = reply.work_area;
      if (reply.status < CC_NEXT_SIBLING || reply.status > CC_PREV_PARENT) break;
    }
    return { calls };
  }

  close() {
    return Promise.resolve();
  }
}

// Milliseconds to wait before calling again after `status`; null: not a "call again" status.
function retryDelayMs(status) {
  if (status === RTAS_BUSY) return 0;
  if (status < EXTENDED_DELAY_FIRST || status > EXTENDED_DELAY_LAST) return null;
  return Math.min(10 ** (status - EXTENDED_DELAY_FIRST), MAX_DELAY_MS);
}

// Whether a result says "call again". A raw call's status is its caller's to read, as with
// the kernel's rtas_call(), which retries nothing itself.
function answeredAgain(result) {
  const response = result[result.result];
  if (result.result === 'raw' || response === undefined || response === null) return false;
  if (result.result === 'configure_connector_walk' && !response.calls.length) return false;
  return retryDelayMs(statusOf(result.result, response)) !== null;
}

// At least `ms` by the monotonic clock: a timer may fire up to a millisecond early (libuv
// keeps the loop's time in whole milliseconds), and a retry before the hint is too soon.
async function sleepAtLeast(ms) {
  const until = performance.now() + ms;
  for (let left = ms; left > 0; left = until - performance.now()) {
    await new Promise((resolve) => setTimeout(resolve, Math.ceil(left)));
  }
}

// Either transport, with every call answered busy or extended delay called again (after its
// delay) until it is not; its result is the last answer. With stopAtNonzeroStatus that
// happens before the calls after it run (as a batch of their own); without, they ran
// already. A walk answered "call again" goes on from the work area it left (unchanged: the
// kernel copies it back after every call) with the calls it has left, and its result holds
// its calls but the ones answered "call again".
class CallingAgain {
  constructor(transport) {
    this.transport = transport;
    this.retries = 0; // calls made again
  }

  async run(calls, stopAtNonzeroStatus) {
    let results = await this.transport.run(calls, stopAtNonzeroStatus);
    const done = [];
    let first = 0; // the call of results[0]
    for (;;) {
      const again = results.findIndex(answeredAgain);
      // (more results than calls: batch() finds that)
      if (again < 0 || first + again >= calls.length) return done.concat(results);
      done.push(...results.slice(0, again), await this.callAgain(calls[first + again], results[again]));
      first += again + 1;
      if (!stopAtNonzeroStatus) {
        results = results.slice(again + 1);
        continue;
      }
      const last = done[done.length - 1];
      if (statusOf(last.result, last[last.result]) !== 0 || first === calls.length) return done;
      results = await this.transport.run(calls.slice(first), true);
    }
  }

  async callAgain(call, result) {
    const [kind] = Object.keys(call);
    const steps = []; // a walk's calls before the ones answered "call again"
    for (let n = 0; n < MAX_RETRIES && answeredAgain(result); n++) {
      const delay = retryDelayMs(statusOf(result.result, result[result.result]));
      if (delay > 0) await sleepAtLeast(delay);
      if (kind === 'configure_connector_walk') {
        const walk = call[kind];
        const made = result[kind].calls;
        steps.push(...made.slice(0, -1));
        const maxCalls = Math.max((walk.max_calls || WALK_MAX_CALLS) - made.length + 1, 1);
        call = { [kind]: { ...walk, work_area: made[made.length - 1].work_area, max_calls: maxCalls } };
      }
      this.retries++;
      [result] = await this.transport.run([call], false);
      check(result !== undefined, `RTAS: no result for a ${kind} call made again`);
    }
    if (steps.length) result = { result: kind, [kind]: { calls: [...steps, ...result[kind].calls] } };
    return result;
  }

  close() {
    return this.transport.close();
  }
}

// A server stream read into a queue; take() waits (bounded) for the next message.
class StreamQueue {
  constructor(call, what) {
    this.call = call;
    this.what = what;
    this.items = [];
    this.waiters = [];
    this.error = null;
    this.ended = false;
    this.cancelled = false;
    call.on('data', (item) => {
      const waiter = this.waiters.shift();
      if (waiter) waiter.resolve(item);
      else this.items.push(item);
    });
    call.on('error', (error) => {
      if (this.cancelled && error.code === grpc.status.CANCELLED) return;
      this.error = new RpcFailed(what, error);
      this.flush();
    });
    call.on('end', () => {
      this.ended = true;
      this.flush();
    });
  }

  flush() {
    for (const waiter of this.waiters.splice(0)) {
      waiter.reject(this.error || new CheckFailed(`${this.what} stream ended`));
    }
  }

  // Resolves once the server has sent the response headers: from then on nothing is missed.
  subscribed() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new CheckFailed(`${this.what}: no response headers`)), WAIT_MS);
      this.call.once('metadata', (metadata) => {
        clearTimeout(timer);
        resolve(metadata);
      });
      this.call.once('error', (error) => {
        clearTimeout(timer);
        reject(new RpcFailed(this.what, error));
      });
    });
  }

  take(ms = WAIT_MS) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    if (this.error || this.ended) {
      return Promise.reject(this.error || new CheckFailed(`${this.what} stream ended`));
    }
    return new Promise((resolve, reject) => {
      const waiter = {};
      const timer = setTimeout(() => {
        const at = this.waiters.indexOf(waiter);
        if (at >= 0) this.waiters.splice(at, 1);
        reject(new CheckFailed(`${this.what}: nothing within ${ms} ms`));
      }, ms);
      waiter.resolve = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
      waiter.reject = (error) => {
        clearTimeout(timer);
        reject(error);
      };
      this.waiters.push(waiter);
    });
  }

  cancel() {
    this.cancelled = true;
    this.call.cancel();
  }
}

// --- the guest ------------------------------------------------------------------------------

class NodeGuest {
  // The guest side (RtasService, InterruptService, PlatformService.GetConnector) uses the
  // guest token, the management side (HotplugService) the manager token. Over TLS a token is
  // part of the channel's credentials, so each distinct token has its own channel; a
  // plaintext channel is shared and each stub's interceptor adds its token.
  constructor(services, connection, platform, { useUnary = false } = {}) {
    this.platform = platform;
    this.counter = new RpcCounter();
    this.connection = connection;
    const channels = new Map(); // channel key -> channel
    const stub = (Service, token) => {
      const key = connection.tls ? token : null;
      const { credentials, options } = channelFor(connection, key);
      const interceptors = [this.counter.interceptor];
      if (!connection.tls && token !== null) interceptors.push(bearerInterceptor(token));
      const shared = channels.get(key);
      const made = new Service(connection.target, credentials, {
        ...options,
        interceptors,
        ...(shared ? { channelOverride: shared } : {}),
      });
      if (!shared) channels.set(key, made.getChannel());
      return made;
    };
    this.rtas = stub(services.RtasService, connection.guestToken);
    this.interrupts = stub(services.InterruptService, connection.guestToken);
    this.platforms = stub(services.PlatformService, connection.guestToken);
    this.hotplug = stub(services.HotplugService, connection.managerToken);
    this.channels = [...channels.values()];
    this.transport = useUnary ? 'unary' : 'session';
    this.rtasCalls = null; // opened by subscribe()
    this.faultEvents = 0; // fault_fired events seen
    this.useUnary = useUnary;
  }

  async subscribe() {
    const interrupts = new StreamQueue(
      this.interrupts.WatchInterrupts({ platform: this.platform }),
      'WatchInterrupts',
    );
    const events = new StreamQueue(this.hotplug.WatchEvents({ platform: this.platform }), 'WatchEvents');
    this.pulses = interrupts; // close() cancels them, even if only one of them was refused
    this.events = events;
    await Promise.all([interrupts.subscribed(), events.subscribed()]);
    const Transport = this.useUnary ? RtasUnary : RtasSession;
    this.rtasCalls = new CallingAgain(new Transport(this.rtas, this.platform));
  }

  async close() {
    if (this.pulses) this.pulses.cancel();
    if (this.events) this.events.cancel();
    if (this.rtasCalls) await this.rtasCalls.close();
    for (const channel of this.channels) channel.close();
  }

  // How the stub connected (never the tokens themselves), for the summary line.
  security() {
    const { tls, cert, guestToken, managerToken } = this.connection;
    let tokens = 'none';
    if (guestToken !== null) tokens = managerToken === guestToken ? 'one' : 'guest+manager';
    return { tls, client_cert: cert !== null, tokens, channels: this.channels.length };
  }

  // --- RTAS calls

  // Runs RTAS calls in a row (one session request; --unary: one RPC each) and returns each
  // call's response, in order; with stopAtNonzeroStatus the calls after the first non-zero
  // status did not run and have none (undefined).
  async batch(calls, stopAtNonzeroStatus) {
    const results = await this.rtasCalls.run(calls, stopAtNonzeroStatus);
    check(results.length <= calls.length, `RTAS batch: ${results.length} results for ${calls.length} calls`);
    return calls.map((call, n) => {
      const [kind] = Object.keys(call);
      if (n >= results.length) {
        const last = results[results.length - 1];
        check(
          stopAtNonzeroStatus && last !== undefined && statusOf(last.result, last[last.result]) !== 0,
          `RTAS batch: ${results.length} results for ${calls.length} calls, none stopping it`,
        );
        return undefined;
      }
      check(results[n].result === kind, `RTAS batch: result ${n} is ${results[n].result}, want ${kind}`);
      return results[n][kind];
    });
  }

  async setIndicator(indicator, index, value) {
    const [reply] = await this.batch([indicatorCall(indicator, index, value)], false);
    return reply.status;
  }

  // The next hotplug log: wait for an interrupt pulse, then check-exception. A pulse with
  // no log behind it (pulses coalesce; a stale one) sends us back to waiting.
  async nextLog() {
    const until = Date.now() + WAIT_MS;
    for (;;) {
      const left = until - Date.now();
      check(left > 0, `no event log within ${WAIT_MS} ms`);
      await this.pulses.take(left);
      const [reply] = await this.batch(
        [
          {
            check_exception: {
              vector_offset: 0x500,
              event_mask: EVENT_MASK_ALL,
              buffer_length: RTAS_ERROR_LOG_MAX,
            },
          },
        ],
        false,
      );
      if (reply.status === 0) return reply.buffer;
      check(reply.status === 1, `check-exception returned ${reply.status}`);
    }
  }

  // The kernel's sequences below make their calls one after the other, each only if the
  // one before returned 0; here they go as one batch with stop_at_nonzero_status, which
  // the server stops at the same status. A sense of the wrong *value* (status 0) cannot
  // stop a batch: it fails the check after the set-indicators ran (the kernel would not
  // have made them). The undo calls after a failed last step are a second batch.

  // dlpar_acquire_drc: sense must be 2 (unusable); allocation usable; unisolate.
  async acquireDrc(index) {
    const what = `acquire ${hex(index)}`;
    const [sense, allocate, unisolate] = await this.batch(
      [
        senseCall(index),
        indicatorCall(ALLOCATION_STATE, index, USABLE),
        indicatorCall(ISOLATION_STATE, index, UNISOLATE),
      ],
      true,
    );
    check(
      sense.status === 0 && sense.state === SENSE_UNUSABLE,
      `${what}: sense ${sense.status}/${sense.state}, want 0/2`,
    );
    check(allocate.status === 0, `${what}: set-indicator(9003, usable) returned ${allocate.status}`);
    if (unisolate.status !== 0) {
      await this.setIndicator(ALLOCATION_STATE, index, UNUSABLE);
      check(false, `${what}: set-indicator(9001, unisolate) returned ${unisolate.status}`);
    }
  }

  // dlpar_release_drc: sense must be 1 (present); isolate; allocation unusable.
  async releaseDrc(index) {
    const what = `release ${hex(index)}`;
    const [sense, isolate, unallocate] = await this.batch(
      [
        senseCall(index),
        indicatorCall(ISOLATION_STATE, index, ISOLATE),
        indicatorCall(ALLOCATION_STATE, index, UNUSABLE),
      ],
      true,
    );
    check(
      sense.status === 0 && sense.state === SENSE_PRESENT,
      `${what}: sense ${sense.status}/${sense.state}, want 0/1`,
    );
    check(isolate.status === 0, `${what}: set-indicator(9001, isolate) returned ${isolate.status}`);
    if (unallocate.status !== 0) {
      await this.setIndicator(ISOLATION_STATE, index, UNISOLATE);
      check(false, `${what}: set-indicator(9003, unusable) returned ${unallocate.status}`);
    }
  }

  // dlpar_unisolate_drc: sense must be 1; unisolate (Linux ignores the result).
  async unisolateDrc(index) {
    const what = `unisolate ${hex(index)}`;
    const [sense, unisolate] = await this.batch(
      [senseCall(index), indicatorCall(ISOLATION_STATE, index, UNISOLATE)],
      true,
    );
    check(
      sense.status === 0 && sense.state === SENSE_PRESENT,
      `${what}: sense ${sense.status}/${sense.state}, want 0/1`,
    );
    return unisolate.status;
  }

  // dlpar_configure_connector: call until status 0, building the node tree from the raw
  // 4096-byte work area the way the kernel reads it (cells 2..4 hold offsets and lengths).
  // The calls go as configure-connector walks: the server makes them, feeding each work
  // area back, and returns every call's status and work area, which are read here in
  // order as the kernel reads them. A walk that stops at WALK_MAX_CALLS is resumed.
  async configureConnector(index) {
    let area = Buffer.alloc(WORK_AREA_SIZE);
    area.writeUInt32BE(index >>> 0, 0);
    area.writeUInt32BE(0, 4);
    let root = null;
    let last = null;
    const stack = [];
    let replies = [];
    let fullWalk = false;
    for (let calls = 0; calls < CC_MAX_CALLS; calls++) {
      if (!replies.length) {
        const [walk] = await this.batch(
          [{ configure_connector_walk: { work_area: area, memory_extent: 0, max_calls: WALK_MAX_CALLS } }],
          false,
        );
        check(
          walk.calls.length >= 1 && walk.calls.length <= WALK_MAX_CALLS,
          `configure-connector ${hex(index)}: a walk of ${walk.calls.length} calls`,
        );
        replies = walk.calls.slice();
        fullWalk = walk.calls.length === WALK_MAX_CALLS;
      }
      const reply = replies.shift();
      const status = reply.status;
      check(
        reply.work_area.length === WORK_AREA_SIZE,
        `configure-connector ${hex(index)}: work area of ${reply.work_area.length} bytes`,
      );
      area = reply.work_area; // handed back unmodified on the next call
      const more = status >= CC_NEXT_SIBLING && status <= CC_PREV_PARENT;
      check(
        more || !replies.length,
        `configure-connector ${hex(index)}: the walk went on after status ${status}`,
      );
      check(
        !more || replies.length || fullWalk,
        `configure-connector ${hex(index)}: a walk stopped at status ${status}`,
      );
      switch (status) {
        case CC_COMPLETE:
          check(root !== null, `configure-connector ${hex(index)}: completed without a node`);
          // The top-level node's end is the completion itself (no status 4 for it), as in QEMU.
          check(stack.length <= 1, `configure-connector ${hex(index)}: completed ${stack.length} levels deep`);
          return root;
        case CC_NEXT_SIBLING:
        case CC_NEXT_CHILD: {
          const node = { name: cString(area, area.readUInt32BE(8)), properties: new Map(), children: [] };
          if (status === CC_NEXT_SIBLING) {
            check(stack.length > 0, `configure-connector ${hex(index)}: sibling at the top level`);
            stack.pop();
          }
          if (stack.length) stack[stack.length - 1].children.push(node);
          else if (root === null) root = node;
          else check(false, `configure-connector ${hex(index)}: second top-level node ${node.name}`);
          stack.push(node);
          last = node;
          break;
        }
        case CC_NEXT_PROPERTY: {
          check(last !== null, `configure-connector ${hex(index)}: property before any node`);
          const name = cString(area, area.readUInt32BE(8));
          const length = area.readUInt32BE(12);
          const offset = area.readUInt32BE(16);
          check(offset + length <= WORK_AREA_SIZE, `configure-connector ${hex(index)}: property ${name} out of bounds`);
          last.properties.set(name, Buffer.from(area.subarray(offset, offset + length)));
          break;
        }
        case CC_PREV_PARENT:
          check(stack.length > 0, `configure-connector ${hex(index)}: previous parent at the top level`);
          stack.pop();
          last = stack.length ? stack[stack.length - 1] : null;
          break;
        default:
          check(false, `configure-connector ${hex(index)} returned ${status}`);
      }
    }
    check(false, `configure-connector ${hex(index)}: no completion after ${CC_MAX_CALLS} calls`);
    return null;
  }

  // --- management side and its events

  async plugCore() {
    const reply = await unary(this.hotplug, 'PlugDevice', {
      platform: this.platform,
      id: DEVICE_ID,
      spec: { cpu_core: { core_id: CORE_ID } },
    });
    check(
      JSON.stringify(reply.device.drc_indexes) === JSON.stringify([CPU_DRC_BASE + CORE_ID]),
      `PlugDevice: connectors ${reply.device.drc_indexes.map(hex)}`,
    );
    await this.expectEvent('device_added');
  }

  async unplugCore() {
    const reply = await unary(this.hotplug, 'UnplugDevice', { platform: this.platform, id: DEVICE_ID });
    check(!reply.deleted, 'UnplugDevice: deleted at once, but the guest had acquired the core');
    await this.expectEvent('unplug_requested');
  }

  // The next management event must be of this kind, about our device. fault_fired events
  // (a fault rule's news, not the device's: the RTAS calls were made again) are counted.
  async expectEvent(kind) {
    const until = Date.now() + WAIT_MS;
    let event;
    for (;;) {
      ({ event } = await this.events.take(Math.max(until - Date.now(), 0)));
      if (event.kind !== 'fault_fired') break;
      this.faultEvents++;
    }
    const finding = event.conduct_finding; // the platform's word on something the guest did
    const why = finding ? ` (${finding.kind}, ${finding.requirement}: ${finding.call} ${finding.detail})` : '';
    check(event.kind === kind, `WatchEvents: got ${event.kind}${why}, want ${kind}`);
    const body = event[kind];
    const deviceId = kind === 'device_added' ? body.device.id : body.device_id;
    check(deviceId === DEVICE_ID, `WatchEvents: ${kind} for device ${deviceId}, want ${DEVICE_ID}`);
    return body;
  }

  async connector(index) {
    const reply = await unary(this.platforms, 'GetConnector', { platform: this.platform, drc_index: index });
    return reply.connector;
  }
}

// RtasCall entries (the platform is the session's or the batch's).
function senseCall(index) {
  return { get_sensor_state: { sensor_type: DR_ENTITY_SENSE, sensor_index: index } };
}

function indicatorCall(indicator, index, value) {
  return { set_indicator: { indicator_type: indicator, indicator_index: index, new_state: value } };
}

function cString(area, offset) {
  check(offset < area.length, `work area: string offset ${offset} out of bounds`);
  const end = area.indexOf(0, offset);
  check(end >= 0, `work area: string at ${offset} not NUL-terminated`);
  return area.toString('latin1', offset, end);
}

// The HP section of a PAPR v6 event log, found as the kernel's get_pseries_errorlog does.
function parseHotplugLog(log) {
  check(log.length >= 24, `event log of ${log.length} bytes: shorter than a v6 header`);
  check(log[0] === 6, `event log version ${log[0]}, want 6`);
  const extendedLength = log.readUInt32BE(4);
  const end = Math.min(log.length, 8 + extendedLength);
  for (let offset = 24; offset + 4 <= end; ) {
    const id = log.toString('latin1', offset, offset + 2);
    const length = log.readUInt16BE(offset + 2);
    check(length >= 4, `event log: section at ${offset} has length ${length}`);
    if (id === 'HP') {
      check(offset + 8 + 8 <= end, 'event log: HP section too short');
      const payload = offset + 8;
      const event = { resource: log[payload], action: log[payload + 1], idType: log[payload + 2] };
      if (event.idType === ID_INDEX) {
        event.index = log.readUInt32BE(payload + 4);
      } else if (event.idType === ID_COUNT_INDEXED) {
        check(offset + 8 + 12 <= end, 'event log: HP section too short for count-indexed');
        event.count = log.readUInt32BE(payload + 4);
        event.index = log.readUInt32BE(payload + 8);
      }
      return event;
    }
    offset += length;
  }
  check(false, 'event log: no HP section');
  return null;
}

function report(event, result, indexes) {
  const line = { resource: event.resource, action: event.action, result, drc_indexes: indexes };
  process.stdout.write(JSON.stringify(line) + '\n');
}

function expectCpuEvent(event, action, index) {
  check(
    event.resource === RESOURCE_CPU && event.action === action && event.idType === ID_INDEX,
    `hotplug log: resource ${event.resource} action ${event.action} id type ${event.idType}, ` +
      `want CPU ${action === ACTION_ADD ? 'add' : 'remove'} by index`,
  );
  check(event.index === index, `hotplug log: DRC ${hex(event.index)}, want ${hex(index)}`);
}

// --- the scenario ---------------------------------------------------------------------------

// hotplug-cpu.c dlpar_cpu_add: acquire, configure-connector, check the node.
async function handleCpuAdd(guest, index) {
  const event = parseHotplugLog(await guest.nextLog());
  expectCpuEvent(event, ACTION_ADD, index);
  await guest.acquireDrc(event.index);
  const node = await guest.configureConnector(event.index);
  const wantName = `PowerPC,POWER9@${CORE_ID}`;
  check(node.name === wantName, `configure-connector: node ${node.name}, want ${wantName}`);
  const myIndex = node.properties.get('ibm,my-drc-index');
  check(myIndex !== undefined && myIndex.length === 4, `${node.name}: no 4-byte ibm,my-drc-index`);
  check(myIndex.readUInt32BE(0) === index, `${node.name}: ibm,my-drc-index ${hex(myIndex.readUInt32BE(0))}`);
  const connector = await guest.connector(index);
  check(connector.state === 'DRC_STATE_LOGICAL_CONFIGURED', `connector ${hex(index)} is ${connector.state}`);
  report(event, 'done', [event.index]);
}

async function run(guest) {
  const index = CPU_DRC_BASE + CORE_ID;
  await guest.subscribe();

  // (1) Hot-add.
  await guest.plugCore();
  await handleCpuAdd(guest, index);

  // (2) Removal: offline the threads (nothing to do here), then dlpar_release_drc.
  await guest.unplugCore();
  let event = parseHotplugLog(await guest.nextLog());
  expectCpuEvent(event, ACTION_REMOVE, index);
  await guest.releaseDrc(event.index);
  const deleted = await guest.expectEvent('device_deleted');
  check(deleted.released_by_drc_index === index, `device_deleted released by ${hex(deleted.released_by_drc_index)}`);
  try {
    await unary(guest.hotplug, 'GetDevice', { platform: guest.platform, id: DEVICE_ID });
    check(false, `GetDevice(${DEVICE_ID}) still finds the device after device_deleted`);
  } catch (error) {
    if (!(error instanceof RpcFailed)) throw error;
    check(error.code === grpc.status.NOT_FOUND, `GetDevice after deletion: ${error.message}, want NOT_FOUND`);
  }
  report(event, 'done', [event.index]);

  // (3) Refused removal: hot-add again, then "CPU busy": the kernel (5.12+) gives the
  // connector back with unisolate instead of releasing it.
  await guest.plugCore();
  await handleCpuAdd(guest, index);
  await guest.unplugCore();
  event = parseHotplugLog(await guest.nextLog());
  expectCpuEvent(event, ACTION_REMOVE, index);
  await guest.unisolateDrc(event.index);
  const rejected = await guest.expectEvent('unplug_rejected');
  check(
    rejected.signal === 'REFUSAL_SIGNAL_UNISOLATE',
    `unplug_rejected signal ${rejected.signal}, want REFUSAL_SIGNAL_UNISOLATE`,
  );
  check(rejected.drc_index === index, `unplug_rejected on ${hex(rejected.drc_index)}, want ${hex(index)}`);
  const connector = await guest.connector(index);
  check(!connector.unplug_pending, `connector ${hex(index)}: unplug still pending after the refusal`);
  check(connector.device_id === DEVICE_ID, `connector ${hex(index)}: device ${connector.device_id}`);
  check(connector.state === 'DRC_STATE_LOGICAL_CONFIGURED', `connector ${hex(index)} is ${connector.state}`);
  const device = (await unary(guest.hotplug, 'GetDevice', { platform: guest.platform, id: DEVICE_ID })).device;
  check(!device.unplug_pending, `device ${DEVICE_ID}: unplug still pending after the refusal`);
  report(event, 'refused', [event.index]);
}

async function main(argv) {
  let parsed;
  let connection;
  try {
    parsed = parseArgs(argv);
    connection = connectionFromArgs(parsed);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`guest.js: ${error.message}\n${USAGE}`);
    return 2;
  }
  const guest = new NodeGuest(loadServices(), connection, parsed.platform, { useUnary: parsed.unary });
  const watchdog = setTimeout(() => {
    process.stderr.write(`guest.js: FAILED: not done within ${WATCHDOG_MS} ms\n`);
    process.exit(1);
  }, WATCHDOG_MS);
  let code = 1;
  try {
    await run(guest);
    code = 0;
  } catch (error) {
    const expected = error instanceof CheckFailed || error instanceof RpcFailed || error.code !== undefined;
    const what = expected ? error.message : error.stack || String(error);
    process.stderr.write(`guest.js: FAILED: ${what}\n`);
  }
  await guest.close();
  clearTimeout(watchdog);
  // The RPCs made, counted once the session is closed: on stdout after a success, else on stderr.
  const summary =
    JSON.stringify({
      summary: {
        ...guest.counter.summary(guest.transport),
        retries: guest.rtasCalls ? guest.rtasCalls.retries : 0,
        fault_events: guest.faultEvents,
        security: guest.security(),
      },
    }) + '\n';
  (code === 0 ? process.stdout : process.stderr).write(summary);
  return code;
}

// grpc-js gives TLS an IP target's address as the SNI server name, and Node warns about that
// (DEP0123) on every connection; the certificate is still checked against the IP. Only that
// warning is dropped.
function quietIpServerNameWarning() {
  const emitWarning = process.emitWarning;
  process.emitWarning = function (warning, ...rest) {
    const code = rest[0] !== null && typeof rest[0] === 'object' ? rest[0].code : rest[1];
    if (code === 'DEP0123') return undefined;
    return emitWarning.call(process, warning, ...rest);
  };
}

if (require.main === module) {
  quietIpServerNameWarning();
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}

module.exports = { parseHotplugLog, cString, parseArgs, connectionFromArgs, isLocalTarget };
