"""``papr-emu replay FILE``: play a transcript back against a fresh platform, report the first difference.

A transcript (``serve --record DIR``, :mod:`papr_emu.service.transcript`) holds every call
a platform saw, with its result. Replay creates a platform as the header says, under a new
unique name, makes the calls again in the order the server saw them (by ``n``), and
compares each result with the recorded one:

- a unary call: its gRPC code, and its response (or its error message);
- a Session: its requests are sent on a new stream as recorded, and each response is
  awaited and compared when its line comes;
- a server stream (WatchEvents, WatchInterrupts, GetDeviceTree): it is opened when its
  line comes (and replay waits until the server has subscribed it), and its responses are
  compared in order, each as soon as it arrives (within ``--wait`` seconds); how it ended
  is compared too, unless the client had cancelled it.

What cannot be the same on another platform at another time is normalized on both sides
before comparing (docs/transcripts.md): timestamps (Event.time), the platform's name where
a message or an error names it, tokens (AccessToken), event sequence numbers (taken
relative to the platform's own at creation), and the creation date and time in the PH
section of RTAS event logs (bytes 32-39 of a check-exception log).

Exit status: 0 clean, 1 a difference (the first one, by line, is reported), 2 bad usage or
an unreadable transcript, 3 the server could not be reached.

Example::

    papr-emu serve --record /tmp/rec &
    ... run a guest against platform t1 ...
    papr-emu replay /tmp/rec/t1.jsonl              # an in-process server
    papr-emu replay /tmp/rec/t1.jsonl --server unix:/tmp/papr.sock -o json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pkgutil
import queue
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from google.protobuf import descriptor, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

import papr.v1
from papr_emu_client.connect import HOST_VARIABLE, Client, connect

from .service.transcript import FORMAT_VERSION, MAGIC, to_json

EXIT_CLEAN, EXIT_DIFFERS, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
#: Seconds to wait for a stream's next response or end (a stream response may come after the call that caused it).
DEFAULT_WAIT: Final = 10.0
CALL_TIMEOUT: Final = 60.0
_CREATE = "/papr.v1.PlatformService/CreatePlatform"
_RESTORE = "/papr.v1.PlatformService/RestorePlatform"
_MAKERS: Final = (_CREATE, _RESTORE)
_CALLS: Final = ("unary", "open", "send", "receive", "end")
_DELETE = "/papr.v1.PlatformService/DeletePlatform"
PLATFORM_MARK: Final = "<platform>"
#: Fields holding a platform name (CreatePlatformRequest's is ``name``, Platform's too).
_NAME_FIELDS: Final = frozenset({"platform", "name"})
_SEQUENCE_FIELDS: Final = frozenset({"sequence", "last_event_sequence"})
#: Message types left out of comparisons entirely: a time, and credentials.
_IGNORED_TYPES: Final = frozenset({"google.protobuf.Timestamp", "papr.v1.AccessToken"})
#: Fields left out of comparisons: a snapshot document holds times and the platform's name (its
#: restore is what matters, and the calls after a RestorePlatform compare that).
_IGNORED_FIELDS: Final = frozenset(
    {("papr.v1.SnapshotPlatformResponse", "snapshot"), ("papr.v1.Event", "incarnation")}  # the run's id: new each run
)
# A PAPR v6 platform event log: version byte 6, the PH section at 24, its creation date and time at 32-39.
_LOG_VERSION, _PH_AT, _TIME_AT, _TIME_END = 0x06, 24, 32, 40


class TranscriptError(Exception):
    """The file is not a transcript this version can replay; the message says why."""


@dataclass(frozen=True)
class Transcript:
    path: Path
    header: dict[str, Any]
    records: list[tuple[int, dict[str, Any]]]  # (line number, record), sorted by n


def load(path: Path) -> Transcript:
    """The transcript at ``path``; a torn last line (the server was killed while writing it) is dropped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TranscriptError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    parsed: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # torn
            raise TranscriptError(f"{path}:{number}: not a JSON line") from None
        if not isinstance(record, dict):
            raise TranscriptError(f"{path}:{number}: not a JSON object")
        parsed.append((number, record))
    if not parsed or parsed[0][1].get("transcript") != MAGIC:
        raise TranscriptError(f"{path}: not a papr-emu transcript (no header line)")
    header = parsed[0][1]
    version = header.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise TranscriptError(
            f"{path}: transcript format version {version!r}; this papr-emu reads up to {FORMAT_VERSION}"
        )
    body = parsed[1:]
    for number, record in body:
        if not isinstance(record.get("n"), int) or record.get("call") not in _CALLS:
            raise TranscriptError(f"{path}:{number}: not a transcript record (n, call)")
    return Transcript(path, header, sorted(body, key=lambda item: item[1]["n"]))


# --- messages: types, names, normalization ------------------------------------------------------


def _load_protos() -> None:
    """Every papr.v1 module, so that the descriptor pool knows every method a transcript names."""
    for module in pkgutil.iter_modules(papr.v1.__path__):
        if module.name.endswith("_pb2"):
            importlib.import_module(f"papr.v1.{module.name}")


def message_types(method: str) -> tuple[type[Message], type[Message]]:
    """The request and response classes of ``/package.Service/Method``."""
    service, _, name = method.strip("/").rpartition("/")
    try:
        found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    except KeyError:
        found = None
    if found is None:
        raise TranscriptError(f"unknown method {method}")
    return message_factory.GetMessageClass(found.input_type), message_factory.GetMessageClass(found.output_type)


def _walk(message: Message, visit: Any) -> None:
    """Calls ``visit(message, field, value)`` for every set field, depth first (map fields are left alone)."""
    for field_descriptor, value in message.ListFields():
        if field_descriptor.message_type is not None and field_descriptor.message_type.GetOptions().map_entry:
            continue
        if visit(message, field_descriptor, value):
            continue  # handled (cleared, replaced)
        if field_descriptor.message_type is not None:
            for item in value if field_descriptor.is_repeated else [value]:
                _walk(item, visit)


def renamed(message: Message, old: str, new: str, sequence_offset: int) -> Message:
    """A request for the replay platform: ``old`` names become ``new``; after_sequence moves with the sequences."""

    def visit(owner: Message, field_descriptor: descriptor.FieldDescriptor, value: Any) -> bool:
        if field_descriptor.type == descriptor.FieldDescriptor.TYPE_STRING and field_descriptor.name in _NAME_FIELDS:
            if not field_descriptor.is_repeated and value == old:
                setattr(owner, field_descriptor.name, new)
            return True
        if field_descriptor.name == "after_sequence" and not field_descriptor.is_repeated:
            setattr(owner, field_descriptor.name, max(0, value + sequence_offset))
            return True
        return False

    copy = type(message)()
    copy.CopyFrom(message)
    _walk(copy, visit)
    return copy


def _masked_log(blob: bytes) -> bytes:
    if len(blob) >= _TIME_END and blob[0] == _LOG_VERSION and blob[_PH_AT : _PH_AT + 2] == b"PH":
        return blob[:_TIME_AT] + bytes(_TIME_END - _TIME_AT) + blob[_TIME_END:]
    return blob


def normalized(message: Message, platform: str, sequence_offset: int = 0) -> dict[str, Any]:
    """``message`` as JSON without what differs between runs (see the module docstring).

    Example::

        >>> from papr.v1 import hotplug_pb2
        >>> event = hotplug_pb2.Event(sequence=7, platform="t1")
        >>> event.time.FromSeconds(1_700_000_000)
        >>> normalized(event, "t1", sequence_offset=2)
        {'sequence': '5', 'platform': '<platform>'}
    """

    def visit(owner: Message, field_descriptor: descriptor.FieldDescriptor, value: Any) -> bool:
        kind, name = field_descriptor.type, field_descriptor.name
        type_name = field_descriptor.message_type.full_name if field_descriptor.message_type is not None else ""
        if type_name in _IGNORED_TYPES or (owner.DESCRIPTOR.full_name, name) in _IGNORED_FIELDS:
            owner.ClearField(name)
            return True
        if field_descriptor.is_repeated:
            if kind == descriptor.FieldDescriptor.TYPE_BYTES:
                value[:] = [_masked_log(item) for item in value]
                return True
            return False
        if kind == descriptor.FieldDescriptor.TYPE_STRING and name in _NAME_FIELDS and value == platform:
            setattr(owner, name, PLATFORM_MARK)
        elif kind == descriptor.FieldDescriptor.TYPE_BYTES:
            setattr(owner, name, _masked_log(value))
        elif name in _SEQUENCE_FIELDS and isinstance(value, int):
            setattr(owner, name, max(0, value - sequence_offset))
        return False

    copy = type(message)()
    copy.CopyFrom(message)
    _walk(copy, visit)
    return to_json(copy)


def _normalized_error(code: str, message: str, platform: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message.replace(repr(platform), repr(PLATFORM_MARK)).replace(platform, PLATFORM_MARK),
    }


def hinted_wait(result: Any) -> float:
    """The seconds a guest waits before calling again after ``result`` (a normalized response):
    the longest extended delay (990x) among its statuses, clamped to 1 s as Linux and the stubs do.

        >>> hinted_wait({"results": [{"status": 0}, {"status": 9902}]}), hinted_wait({"status": -2})
        (0.1, 0.0)
    """
    if isinstance(result, dict):
        status = result.get("status")
        own = min(10 ** (status - 9900) / 1000, 1.0) if isinstance(status, int) and 9900 <= status <= 9905 else 0.0
        return max([own, *(hinted_wait(value) for value in result.values())])
    if isinstance(result, list):
        return max((hinted_wait(value) for value in result), default=0.0)
    return 0.0


def first_difference(recorded: Any, replayed: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """Where two JSON values first differ: (path, recorded part, replayed part), or None."""
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        for key in sorted(recorded.keys() | replayed.keys()):
            found = first_difference(recorded.get(key), replayed.get(key), f"{path}.{key}" if path else key)
            if found is not None:
                return found
        return None
    if isinstance(recorded, list) and isinstance(replayed, list):
        for index in range(max(len(recorded), len(replayed))):
            left = recorded[index] if index < len(recorded) else None
            right = replayed[index] if index < len(replayed) else None
            found = first_difference(left, right, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    return None if recorded == replayed else (path or "(whole)", recorded, replayed)


# --- the replay -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """The first call (or stream message) whose replayed result is not the recorded one."""

    line: int
    n: int
    method: str
    what: str  # "response", "response 3 of stream 2", "end of stream 2"
    path: str  # where in the (normalized) result, e.g. "results[0].status"
    recorded: Any
    replayed: Any

    def as_json(self) -> dict[str, Any]:
        return {
            "line": self.line, "n": self.n, "method": self.method, "what": self.what, "path": self.path,
            "recorded": self.recorded, "replayed": self.replayed,
        }  # fmt: skip

    def text(self) -> str:
        return (
            f"line {self.line} (n={self.n}): {self.method} {self.what} differs at {self.path}: "
            f"recorded {json.dumps(self.recorded)}, replayed {json.dumps(self.replayed)}"
        )


@dataclass
class Report:
    transcript: Path
    platform: str  # the replay platform
    calls: int = 0  # records replayed
    differences: list[Difference] = field(default_factory=list)

    @property
    def first(self) -> Difference | None:
        return min(self.differences, key=lambda d: d.line) if self.differences else None

    def as_json(self) -> dict[str, Any]:
        first = self.first
        return {
            "result": "clean" if first is None else "differs", "transcript": str(self.transcript),
            "platform": self.platform, "records": self.calls,
            **({"difference": first.as_json()} if first is not None else {}),
        }  # fmt: skip

    def text(self) -> str:
        first = self.first
        if first is None:
            return f"clean: {self.calls} records of {self.transcript} replayed on platform {self.platform}"
        return f"{self.transcript}: {first.text()}"


_END = object()


class _Stream:
    """One replayed stream: its responses (and its end) arrive on a queue from a reader thread."""

    def __init__(self, method: str, response_type: type[Message], bidi: bool) -> None:
        self.method = method
        self.response_type = response_type
        self.bidi = bidi
        self.requests: queue.Queue[Message | None] = queue.Queue()
        self.arrived: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.subscribed = threading.Event()
        self.call: Any = None
        self.received = 0  # responses compared
        self.ended: tuple[str, str] | None = None  # (code, message), once the end arrived
        self.pending: list[tuple[int, dict[str, Any]]] = []  # server stream: recorded responses not compared yet

    def request_iterator(self) -> Iterator[Message]:
        while (request := self.requests.get()) is not None:
            yield request

    def read(self, call: Any) -> None:
        self.call = call
        try:
            call.initial_metadata()  # the server sends it once the stream is subscribed
            self.subscribed.set()
            for response in call:
                self.arrived.put(("message", response))
            self.arrived.put((_END, "OK", ""))
        except grpc.RpcError as error:
            self.arrived.put((_END, error.code().name, error.details() or ""))
        finally:
            self.subscribed.set()

    def next(self, wait: float) -> tuple[Any, ...] | None:
        """The next response ("message", response) or end (_END, code, message); None if none came in time."""
        if self.ended is not None:
            return (_END, *self.ended)
        try:
            item = self.arrived.get(timeout=wait)
        except queue.Empty:
            return None
        if item[0] is _END:
            self.ended = (item[1], item[2])
        return item

    def close(self) -> None:
        self.requests.put(None)
        if self.call is not None:
            self.call.cancel()


class Replayer:
    """Replays one transcript through ``client``'s channel (see the module docstring)."""

    def __init__(self, client: Client, transcript: Transcript, wait: float = DEFAULT_WAIT, keep: bool = False) -> None:
        _load_protos()
        self._channel = client.channel
        self._client = client
        self._transcript = transcript
        self._wait = wait
        self._keep = keep
        self.recorded_name = str(transcript.header.get("platform", ""))
        self.name = f"replay-{uuid.uuid4().hex[:8]}"
        self._offset = 0  # replayed event sequence - recorded event sequence
        self._streams: dict[int, _Stream] = {}
        self._threads: list[threading.Thread] = []
        self._exists = False
        self.report = Report(transcript.path, self.name)

    # The platform name in what is sent, and in what is compared.

    def _request(self, method: str, record: dict[str, Any]) -> Message:
        request_type, _ = message_types(method)
        try:
            request = json_format.ParseDict(record.get("request", {}), request_type())
        except json_format.ParseError as error:
            raise TranscriptError(f"a {method} request that does not parse: {error}") from None
        return renamed(request, self.recorded_name, self.name, self._offset)

    def _recorded(self, method: str, response: dict[str, Any]) -> dict[str, Any]:
        _, response_type = message_types(method)
        try:
            message = json_format.ParseDict(response, response_type())
        except json_format.ParseError as error:
            raise TranscriptError(f"a {method} response that does not parse: {error}") from None
        return normalized(message, self.recorded_name)

    def _differs(self, line: int, record: dict[str, Any], method: str, what: str, recorded: Any, replayed: Any) -> bool:
        found = first_difference(recorded, replayed)
        if found is None:
            return False
        self.report.differences.append(Difference(line, record["n"], method, what, *found))
        return True

    def _create_from_header(self) -> None:
        """A platform that existed before its first call (the config's, a state directory's): restored
        from the header's snapshot (a transcript without one: made by the header's CreatePlatformRequest)."""
        header, platforms = self._transcript.header, _platform_pb2()
        response: Any
        if "snapshot" in header:
            document = json.dumps(header["snapshot"]).encode()
            restore = platforms.RestorePlatformRequest(name=self.name, snapshot=document)
            response = self._client.platforms.RestorePlatform(restore, timeout=CALL_TIMEOUT)
        else:
            request = json_format.ParseDict(header.get("create", {}), platforms.CreatePlatformRequest())
            request.name = self.name
            response = self._client.platforms.CreatePlatform(request, timeout=CALL_TIMEOUT)
        self._exists = True
        described = self._transcript.header.get("described", {})
        self._offset = response.platform.last_event_sequence - int(described.get("last_event_sequence", 0))

    def run(self) -> Report:
        try:
            if self._transcript.header.get("created_by") != "rpc":
                self._create_from_header()
            for line, record in self._transcript.records:
                self.report.calls += 1
                if self._replay(line, record):
                    break
            self._finish_streams()
        finally:
            for stream in self._streams.values():
                stream.close()
            for thread in self._threads:
                thread.join(timeout=self._wait)
            if self._exists and not self._keep:
                with contextlib.suppress(grpc.RpcError):
                    self._client.platforms.DeletePlatform(
                        _platform_pb2().DeletePlatformRequest(platform=self.name), timeout=CALL_TIMEOUT
                    )
        return self.report

    def _replay(self, line: int, record: dict[str, Any]) -> bool:
        """One record; True once a difference means the rest would compare a diverged platform."""
        call = record["call"]
        if call == "unary":
            return self._unary(line, record)
        stream_id = record.get("stream")
        if call == "open":
            self._open(stream_id, record)
            return False
        stream = self._streams.get(stream_id)  # type: ignore[arg-type]
        if stream is None:
            raise TranscriptError(f"line {line}: stream {stream_id} was never opened")
        if call == "send":
            stream.requests.put(self._request(stream.method, record))
            return False
        if call == "receive":
            if stream.bidi:  # caused by a request already sent: compared now
                return self._compare_next(line, record, stream_id, stream, self._wait)  # type: ignore[arg-type]
            stream.pending.append((line, record))
            return self._drain(stream_id, stream, 0.0)  # type: ignore[arg-type]
        return self._end(line, record, stream_id, stream)  # type: ignore[arg-type]

    def _unary(self, line: int, record: dict[str, Any]) -> bool:
        method = record["method"]
        request = self._request(method, record)
        request_type, response_type = message_types(method)
        call = self._channel.unary_unary(method, request_type.SerializeToString, response_type.FromString)
        recorded_code = record.get("code", "OK")
        try:
            response = call(request, timeout=CALL_TIMEOUT)
            code, message = "OK", ""
        except grpc.RpcError as error:
            response, code, message = None, error.code().name, error.details() or ""
        if method in _MAKERS and code == "OK":
            self._exists = True
            if recorded_code == "OK":
                recorded_sequence = int(record.get("response", {}).get("platform", {}).get("last_event_sequence", 0))
                self._offset = response.platform.last_event_sequence - recorded_sequence
        if method == _DELETE and code == "OK":
            self._exists = False
        if recorded_code != "OK" or code != "OK":
            recorded = _normalized_error(recorded_code, record.get("message", ""), self.recorded_name)
            replayed = _normalized_error(code, message, self.name)
            return self._differs(line, record, method, "status", recorded, replayed)
        recorded = self._recorded(method, record.get("response", {}))
        replayed = normalized(response, self.name, self._offset)
        time.sleep(hinted_wait(replayed))  # the guest waited out an extended delay before its next call
        return self._differs(line, record, method, "response", recorded, replayed)

    def _open(self, stream_id: Any, record: dict[str, Any]) -> None:
        method = record["method"]
        request_type, response_type = message_types(method)
        bidi = "request" not in record
        stream = _Stream(method, response_type, bidi)
        if bidi:
            call = self._channel.stream_stream(method, request_type.SerializeToString, response_type.FromString)(
                stream.request_iterator()
            )
        else:
            call = self._channel.unary_stream(method, request_type.SerializeToString, response_type.FromString)(
                self._request(method, record)
            )
        self._streams[stream_id] = stream
        thread = threading.Thread(target=stream.read, args=(call,), name=f"replay-stream-{stream_id}", daemon=True)
        thread.start()
        self._threads.append(thread)
        if not bidi:
            stream.subscribed.wait(self._wait)  # later calls must find the watcher in place, as they did

    def _compare_next(self, line: int, record: dict[str, Any], stream_id: int, stream: _Stream, wait: float) -> bool:
        """The stream's next response against ``record``'s; None when nothing came within ``wait``."""
        item = stream.next(wait)
        stream.received += 1
        what = f"response {stream.received} of stream {stream_id}"
        recorded = self._recorded(stream.method, record.get("response", {}))
        if item is None:
            return self._differs(line, record, stream.method, what, recorded, f"nothing within {self._wait:g} s")
        if item[0] is _END:
            ended = _normalized_error(item[1], item[2], self.name)
            return self._differs(line, record, stream.method, what, recorded, {"stream ended": ended})
        replayed = normalized(item[1], self.name, self._offset)
        if stream.bidi:  # an RTAS session's results: the guest waited out an extended delay before its next call
            time.sleep(hinted_wait(replayed))
        return self._differs(line, record, stream.method, what, recorded, replayed)

    def _drain(self, stream_id: int, stream: _Stream, wait: float) -> bool:
        """Compare the server stream's recorded responses that have arrived (waiting up to ``wait`` for each)."""
        while stream.pending:
            if wait == 0.0 and stream.arrived.empty() and stream.ended is None:
                return False  # not yet: it may be caused by a later call
            line, record = stream.pending.pop(0)
            if self._compare_next(line, record, stream_id, stream, wait):
                return True
        return False

    def _end(self, line: int, record: dict[str, Any], stream_id: int, stream: _Stream) -> bool:
        if self._drain(stream_id, stream, self._wait):
            return True
        if record.get("code") == "CANCELLED":  # the client went away: nothing the server decided to compare
            stream.close()
            return False
        stream.requests.put(None)  # a session the client ended: half-close
        item = stream.next(self._wait)
        if item is not None and item[0] is not _END:  # a response the recording does not have
            replayed: Any = {"extra response": normalized(item[1], self.name, self._offset)}
        elif item is None:
            replayed = f"no end within {self._wait:g} s"
        else:
            replayed = _normalized_error(item[1], item[2], self.name)
        recorded = _normalized_error(record.get("code", "OK"), record.get("message", ""), self.recorded_name)
        return self._differs(line, record, stream.method, f"end of stream {stream_id}", recorded, replayed)

    def _finish_streams(self) -> None:
        """Streams the transcript leaves open: their recorded responses must still arrive."""
        wait = 0.5 if self.report.differences else self._wait  # after a difference, only what is there already
        for stream_id, stream in self._streams.items():
            if stream.ended is None or stream.pending:
                self._drain(stream_id, stream, wait)


def _platform_pb2() -> Any:
    from papr.v1 import platform_pb2

    return platform_pb2


# --- the command ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _client(target: str | None) -> Iterator[Client]:
    """A client for ``target`` / $PAPR_EMU_HOST, or for a server started here (in-process)."""
    target = target or os.environ.get(HOST_VARIABLE)
    if target:
        with connect(target) as client:
            yield client
        return
    from .logs import configure_logging
    from .model import Platforms
    from .server import PaprServer

    configure_logging("console", "critical")
    with tempfile.TemporaryDirectory(prefix="papr-replay-") as tmp:
        server = PaprServer(Platforms(), [f"unix:{tmp}/papr.sock"])
        server.start()
        try:
            with connect(server.addresses[0]) as client:
                yield client
        finally:
            server.stop(grace=0.5)


def replay(path: Path, client: Client, wait: float = DEFAULT_WAIT, keep: bool = False) -> Report:
    """Replay the transcript at ``path`` through ``client`` (raises TranscriptError for a bad file)."""
    return Replayer(client, load(path), wait, keep).run()


def _parser() -> argparse.ArgumentParser:
    from papr_emu_client.arguments import OneLineParser, seconds_argument

    parser = OneLineParser(
        prog="papr-emu replay",
        description="Replay a transcript (serve --record) against a fresh platform; report the first difference.",
    )
    parser.add_argument("transcript", type=Path, metavar="FILE", help="a DIR/<platform>.jsonl of serve --record")
    parser.add_argument(
        "--server", metavar="TARGET", help=f"host:port or unix:PATH (default ${HOST_VARIABLE}; else one in-process)"
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument(
        "--wait", type=seconds_argument, default=DEFAULT_WAIT, help="seconds to wait for a stream's next message"
    )
    parser.add_argument("--keep", action="store_true", help="leave the replay platform on the server")
    return parser


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        transcript = load(options.transcript)
    except TranscriptError as error:
        print(f"papr-emu replay: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with _client(options.server) as client:
            report = Replayer(client, transcript, options.wait, options.keep).run()
    except TranscriptError as error:
        print(f"papr-emu replay: {error}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.FutureTimeoutError:
        print(f"papr-emu replay: cannot reach {options.server or os.environ.get(HOST_VARIABLE)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except grpc.RpcError as error:  # the replay platform could not be created
        print(f"papr-emu replay: {error.code().name}: {error.details()}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if options.output == "json":
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(report.text())
    return EXIT_CLEAN if report.first is None else EXIT_DIFFERS


if __name__ == "__main__":
    sys.exit(main())
