"""Transcripts: every guest and management call of a platform, with its result, as JSON lines.

``papr-emu serve --record DIR`` (TOML ``server.record``) writes one file per platform,
``DIR/<platform>.jsonl``; ``papr-emu replay FILE`` plays one back against a fresh platform
(:mod:`papr_emu.replay`). The format is in docs/transcripts.md; in short, a header line::

    {"transcript": "papr-emu", "version": 1, "papr_emu": "0.1.0", "platform": "t1",
     "created_by": "rpc", "create": {CreatePlatformRequest}, "started": "2026-12-02T19:00:00Z"}

then one line per unary call, and per stream one line when it opens, one per request and
response message, and one when it ends; every line has ``n``, its place in the order the
server took them (a unary call's when it ended, a stream's request when the handler took
it, a response when it was sent), which is the order of the lines in the file::

    {"n": 1, "call": "unary", "method": "/papr.v1.PlatformService/CreatePlatform",
     "request": {...}, "code": "OK", "response": {...}}
    {"n": 2, "call": "open", "stream": 1, "method": "/papr.v1.HotplugService/WatchEvents", "request": {...}}
    {"n": 5, "call": "receive", "stream": 1, "response": {...}}
    {"n": 9, "call": "end", "stream": 1, "code": "CANCELLED", "message": ""}

Messages are protobuf's JSON mapping (``json_format``, proto field names). Tokens never
reach a transcript: CreatePlatform's and RestorePlatform's are left out, AccessService is not recorded,
nor is ListPlatforms (it is about every platform, not one). What is recorded is what the
handlers saw: requests that do not parse, or that the token check refused, never reach
them and are not recorded.

Writes go straight through to the file (one ``write`` per line, nothing queued), so a
client cannot make the recorder hold more than the line it is writing. A write that fails
(a full disk, say) stops the recording of that platform only, with a
``transcript.failed`` log event; the server answers on as before.
"""

from __future__ import annotations

import copy
import datetime
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any, Final

import grpc
import structlog
from google.protobuf import json_format
from google.protobuf.message import Message

from papr.v1 import platform_pb2

from ..model import PlatformError, Platforms
from . import convert
from .decoding import status_of

#: The transcript format's version: a reader refuses a file of a higher one.
FORMAT_VERSION: Final = 1
MAGIC: Final = "papr-emu"
SUFFIX: Final = ".jsonl"
_CREATE = "/papr.v1.PlatformService/CreatePlatform"
_RESTORE = "/papr.v1.PlatformService/RestorePlatform"
#: The calls that make a platform (their request's ``name`` is its name); each starts a new file.
_MAKERS: Final = (_CREATE, _RESTORE)
_DELETE = "/papr.v1.PlatformService/DeletePlatform"
#: Not recorded: credentials, calls about every platform, and the non-papr services (health, reflection).
UNRECORDED: Final = ("/papr.v1.AccessService/", "/papr.v1.PlatformService/ListPlatforms")
RECORDED_PREFIX: Final = "/papr.v1."
_TOKEN = "papr.v1.AccessToken"

log = structlog.get_logger("papr_emu.transcript")


def to_json(message: Message) -> dict[str, Any]:
    """A message in protobuf's JSON mapping, with the .proto field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def records(method: str) -> bool:
    """Whether calls of ``method`` go into transcripts."""
    return method.startswith(RECORDED_PREFIX) and not method.startswith(UNRECORDED)


def platform_named_by(method: str, request: Any) -> str:
    """The platform a request is about: its ``platform`` field (CreatePlatform's ``name``)."""
    name = request.name if method in _MAKERS else getattr(request, "platform", "")
    return name if isinstance(name, str) else ""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Transcript:
    """One platform's file: numbered lines, written through; stops for good at the first write error."""

    def __init__(self, path: Path, platform: str, file: IO[str]) -> None:
        self.path = path
        self.platform = platform
        self._file: IO[str] | None = file
        self._lines = 0  # the last ``n`` handed out
        self._streams = 0  # ids handed out
        self._open_streams = 0
        self._deleted = False

    @property
    def recording(self) -> bool:
        return self._file is not None

    def next_n(self) -> int:
        self._lines += 1
        return self._lines

    def open_stream(self) -> int:
        self._streams += 1
        self._open_streams += 1
        return self._streams

    def end_stream(self) -> None:
        self._open_streams -= 1
        if self._deleted and self._open_streams == 0:
            self.close()

    def deleted(self) -> None:
        """The platform is gone: the file closes once its last stream has ended (their ends are recorded)."""
        self._deleted = True
        if self._open_streams == 0:
            self.close()

    def line(self, call: str, n: int | None = None, **fields: Any) -> None:
        """Write one record: its place ``n`` (the next one unless given), what it is, and ``fields``."""
        self.write({"n": self.next_n() if n is None else n, "call": call, **fields})

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._file.flush()
        except (OSError, ValueError) as error:  # ENOSPC, EFBIG, EIO...; ValueError: closed under us
            log.error(
                "transcript.failed", platform=self.platform, path=str(self.path),
                error=getattr(error, "strerror", None) or str(error), recording="stopped",
            )  # fmt: skip
            self._abandon()

    def _abandon(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except (OSError, ValueError):
                pass  # the buffered rest could not be written either; already reported

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except (OSError, ValueError) as error:
                log.error("transcript.failed", platform=self.platform, path=str(self.path), error=str(error))


class Recorder:
    """Writes the transcripts of a server's platforms into ``directory``.

    A platform's file is ``<platform>.jsonl``; a platform created again under a name that
    already has a file in the directory (deleted and created again, or an earlier run's)
    gets ``<platform>.2.jsonl``, ``.3``, and so on: files are never overwritten or appended to.

    Its methods run on the server's event loop (the interceptor's hooks); the lock only
    keeps ``close`` (at server stop) apart from them.
    """

    def __init__(self, directory: Path, platforms: Platforms, version: str = "unknown") -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"cannot record into {directory}: {error.strerror or error}") from None
        self.directory = directory
        self._platforms = platforms
        self._version = version
        self._open: dict[str, Transcript] = {}
        self._lock = threading.Lock()
        self._closed = False

    def interceptor(self) -> RecordingInterceptor:
        return RecordingInterceptor(self)

    def _new_file(self, platform: str) -> tuple[Path, IO[str]] | None:
        for number in range(1, 1_000_000):
            path = self.directory / (f"{platform}{SUFFIX}" if number == 1 else f"{platform}.{number}{SUFFIX}")
            try:
                # Exclusive: never another's file; line-buffered text, each line flushed by write().
                return path, open(path, "x", encoding="utf-8")
            except FileExistsError:
                continue
            except OSError as error:
                log.error("transcript.failed", platform=platform, path=str(path), error=error.strerror, recording="off")
                return None
        return None

    def _begin(
        self,
        platform: str,
        created_by: str,
        made: dict[str, Any],
    ) -> Transcript | None:
        with self._lock:
            if self._closed:
                return None
            opened = self._new_file(platform)
            if opened is None:
                return None
            transcript = Transcript(opened[0], platform, opened[1])
            self._open[platform] = transcript
        transcript.write(
            {
                "transcript": MAGIC, "version": FORMAT_VERSION, "papr_emu": self._version, "platform": platform,
                "created_by": created_by, **made, "started": _now(),
            }
        )  # fmt: skip
        log.info("transcript.started", platform=platform, path=str(transcript.path))
        return transcript

    def transcript(self, platform: str) -> Transcript | None:
        """The open transcript of ``platform``; for a platform that existed before any call (the
        config's, ``default``, one a state directory brought back), one is started with its snapshot
        (docs/snapshots.md: replay restores it) and a CreatePlatformRequest that makes it as it is now."""
        transcript = self._open.get(platform)
        if transcript is not None or not platform:
            return transcript if transcript is None or transcript.recording else None
        try:
            existing = self._platforms.get(platform)
        except PlatformError:
            return None  # a call on a platform that does not exist: nothing to record it against
        described = convert.platform_to_pb(existing.info())
        geometry = existing.geometry
        # What CreatePlatform makes by itself from the geometry: the boot cores and PHB 0.
        made_by_geometry = {"phb0", *(f"core{core}" for core in geometry.core_ids()[: geometry.boot_cores])}
        create = platform_pb2.CreatePlatformRequest(
            name=platform,
            geometry=described.geometry,
            coldplug=[
                platform_pb2.ColdplugDevice(id=device.id, spec=convert.device_spec_to_pb(device))
                for device in existing.devices()
                if device.hotplugged or device.id not in made_by_geometry
            ],
            unplug_timeouts=described.unplug_timeouts,
        )
        made = {"create": to_json(create), "described": to_json(described), "snapshot": existing.snapshot()}
        return self._begin(platform, "server", made)

    def created(self, method: str, request: Any) -> Transcript | None:
        """A platform made by ``request`` (CreatePlatform, RestorePlatform): a new file."""
        previous = self._open.pop(request.name, None)
        if previous is not None:  # a transcript started for the name before the call's end was seen
            previous.deleted()
        # A restored platform's snapshot is in the RestorePlatform line that follows.
        return self._begin(request.name, "rpc", {"create": to_json(request)} if method == _CREATE else {})

    def deleted(self, platform: str) -> None:
        transcript = self._open.pop(platform, None)
        if transcript is not None:
            transcript.deleted()

    def close(self) -> None:
        """Close every file (the server stops)."""
        with self._lock:
            self._closed = True
            transcripts, self._open = list(self._open.values()), {}
        for transcript in transcripts:
            transcript.close()


def _response_json(response: Message) -> dict[str, Any]:
    """The response without its tokens (CreatePlatform's and RestorePlatform's manager and guest tokens)."""
    tokens = [
        f.name for f in response.DESCRIPTOR.fields if f.message_type is not None and f.message_type.full_name == _TOKEN
    ]
    if any(response.HasField(name) for name in tokens):
        response = copy.copy(response)
        for name in tokens:
            response.ClearField(name)
    return to_json(response)


def _ending(error: BaseException | None, context: grpc.aio.ServicerContext) -> dict[str, Any]:
    """How a call ended. A stream closed at a ``yield`` (GeneratorExit) was given up by its client (or
    the server stops), as a CancelledError at an ``await`` says: both are CANCELLED, not UNKNOWN."""
    if isinstance(error, GeneratorExit):
        return {"code": grpc.StatusCode.CANCELLED.name, "message": ""}
    code = status_of(error, context)
    details = context.details() if code is not grpc.StatusCode.CANCELLED else None
    return {"code": code.name, "message": details if isinstance(details, str) else ""}


class RecordingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Records each call its handler sees. It goes after DecodeInHandler, which hands it parsed requests."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method in self._wrapped:
            return self._wrapped[method]
        handler = await continuation(handler_call_details)
        if handler is None or not records(method):
            return handler
        return self._wrapped.setdefault(method, self._wrap(handler, method))

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, method))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._server_stream(handler.unary_stream, method))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=self._bidi_stream(handler.stream_stream, method))
        return handler  # no client-streaming RPC has a platform to record it against

    def _unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        recorder = self._recorder

        async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
            platform = platform_named_by(method, request)
            # Resolved before the call runs: a platform's first call finds its snapshot as it was before it.
            transcript = recorder.transcript(platform)
            error: BaseException | None = None
            response: Any = None
            try:
                response = await behavior(request, context)
                return response
            except BaseException as raised:
                error = raised
                raise
            finally:
                ok = error is None and response is not None
                if ok and method in _MAKERS:
                    transcript = recorder.created(method, request)
                if transcript is not None:
                    # Its place is when it ended: by then the model has run it. (When it began would put a
                    # call that ran concurrently, and before it, behind it: a stub's stale check-exception
                    # during its own UnplugDevice found no log, but replayed after the unplug it found one.)
                    result = {"code": "OK", "response": _response_json(response)} if ok else _ending(error, context)
                    transcript.line("unary", method=method, request=to_json(request), **result)
                if ok and method == _DELETE:
                    recorder.deleted(platform)

        return answer

    def _server_stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        recorder = self._recorder

        async def generate(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            transcript = recorder.transcript(platform_named_by(method, request))
            if transcript is None:
                async for response in behavior(request, context):
                    yield response
                return
            stream = transcript.open_stream()
            transcript.line("open", stream=stream, method=method, request=to_json(request))
            error: BaseException | None = None
            try:
                async for response in behavior(request, context):
                    transcript.line("receive", stream=stream, response=to_json(response))
                    yield response
            except BaseException as raised:
                error = raised
                raise
            finally:
                transcript.line("end", stream=stream, **_ending(error, context))
                transcript.end_stream()

        return generate

    def _bidi_stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        """A session: its platform is the first request's; each request and response is a line."""
        recorder = self._recorder

        async def generate(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            opened: list[tuple[Transcript, int]] = []  # once the first request named the platform

            async def recorded(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
                async for request in requests:
                    if not opened:
                        transcript = recorder.transcript(platform_named_by(method, request))
                        if transcript is not None:
                            stream = transcript.open_stream()
                            opened.append((transcript, stream))
                            transcript.line("open", stream=stream, method=method)
                    for transcript, stream in opened:
                        transcript.line("send", stream=stream, request=to_json(request))
                    yield request

            error: BaseException | None = None
            try:
                async for response in behavior(recorded(requests), context):
                    for transcript, stream in opened:
                        transcript.line("receive", stream=stream, response=to_json(response))
                    yield response
            except BaseException as raised:
                error = raised
                raise
            finally:
                for transcript, stream in opened:
                    transcript.line("end", stream=stream, **_ending(error, context))
                    transcript.end_stream()

        return generate
