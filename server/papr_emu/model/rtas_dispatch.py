"""The RTAS dispatcher: token, nargs, nret, argument cells and guest buffers in; return cells out.

The raw ``RtasService.Call`` goes through :func:`dispatch`; its table calls the same
``Platform`` methods the typed RPCs call (``service/rtas_calls.py``), so a stub that
ports the kernel's ``rtas_call()`` line for line sees exactly what a typed client
sees. As in QEMU, an unknown token, or nargs/nret a call does not take,
gives status -3 (stop-self takes any, as QEMU's). Buffers (the configure-connector
work area, the check-exception log buffer) are addressed by the argument cells
that point at them. A buffer a
call names but never touches (event-scan's, which QEMU leaves as it is) may be
given or left out; given, it must be the named length.

Example::

    >>> from papr_emu.model import Platform, default_geometry
    >>> platform = Platform("p", default_geometry())
    >>> dispatch(platform, 0x201D, 2, 2, [9003, 0x10000000], Buffers({}))
    [0, 1]
    >>> dispatch(platform, 0x201D, 3, 2, [9003, 0x10000000, 0], Buffers({}))  # wrong nargs
    [-3, 0]
    >>> dispatch(platform, 0x2005, 1, 2, [0], Buffers({}))  # query-cpu-stopped-state: vCPU 0 runs
    [0, 2]
    >>> dispatch(platform, 0x2007, 0, 1, [], Buffers({}), caller=0)  # stop-self, made by vCPU 0
    [0]
    >>> dispatch(platform, 0x2005, 1, 2, [0], Buffers({}))
    [0, 0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from . import rtas
from .errors import InvalidArgument
from .work_area import WORK_AREA_SIZE

if TYPE_CHECKING:
    from .platform import Platform

MAX_CELLS: Final = 255  # nargs and nret are bytes in practice; bounds what a request can allocate


@dataclass
class Buffers:
    """The guest buffers a raw call supplied, by guest real address; each must be used, whole."""

    regions: dict[int, bytearray]
    used: set[int] = field(default_factory=set)

    def check(self, address: int, length: int, what: str) -> None:
        """Raise InvalidArgument unless exactly ``length`` bytes were given at ``address`` for ``what``."""
        region = self.regions.get(address)
        if region is None:
            raise InvalidArgument("buffers", f"{address:#x}", f"{what} needs a buffer at this address")
        if len(region) != length:
            raise InvalidArgument(
                f"buffers[{address:#x}].data", len(region), f"{what} needs exactly {length} bytes at {address:#x}"
            )
        self.used.add(address)

    def check_if_given(self, address: int, length: int, what: str) -> None:
        """As :meth:`check` for a buffer the call may be given without: none at ``address`` is fine."""
        if address in self.regions:
            self.check(address, length, what)

    def read(self, address: int, length: int) -> bytes:
        return bytes(self.regions[address][:length])

    def write(self, address: int, data: bytes) -> None:
        self.regions[address][: len(data)] = data


#: A call's body: the platform, the argument cells, the buffers, and the calling thread's vCPU id.
Run = Callable[["Platform", Sequence[int], Buffers, int], list[int]]
Needs = Callable[[Sequence[int]], list[tuple[int, int, str]]]


@dataclass(frozen=True, slots=True)
class RtasFunction:
    """One RTAS call: the nargs and nret it takes, the buffers it points at, and what it does.

    ``needs`` are the buffers the call reads or writes: a raw call must supply them.
    ``may_name`` are buffers its arguments name but it never touches: a raw call may
    supply them or not (a port of the kernel's ``rtas_call()`` passes them).
    """

    name: str
    nargs: frozenset[int]  # LoPAR's
    nret: int
    run: Run
    needs: Needs = lambda args: []
    may_name: Needs = lambda args: []
    # False: any nargs and nret are taken (QEMU 7.2's stop-self checks neither).
    checks_cells: bool = True


def _set_indicator(p: Platform, args: Sequence[int], memory: Buffers, caller: int) -> list[int]:
    return [p.set_indicator(args[0], args[1], args[2])]


def _get_sensor_state(p: Platform, args: Sequence[int], memory: Buffers, caller: int) -> list[int]:
    return list(p.get_sensor_state(args[0], args[1]))


def _configure_connector(p: Platform, args: Sequence[int], memory: Buffers, caller: int) -> list[int]:
    # args[1] is LoPAR's memory extent, not the high half of the address (QEMU's reading).
    status, area = p.configure_connector(memory.read(args[0], WORK_AREA_SIZE), args[1])
    memory.write(args[0], area)
    return [status]


def _signed(cell: int) -> int:
    return cell - (1 << 32) if cell & 0x80000000 else cell


def _set_power_level(p: Platform, args: Sequence[int], memory: Buffers, caller: int) -> list[int]:
    return list(p.set_power_level(_signed(args[0]), args[1]))


def _get_power_level(p: Platform, args: Sequence[int], memory: Buffers, caller: int) -> list[int]:
    return list(p.get_power_level(_signed(args[0])))


def _check_exception(p: Platform, args: Sequence[int], memory: Buffers, caller: int) -> list[int]:
    status, log = p.check_exception(args[2], args[5])
    if status == rtas.SUCCESS:
        memory.write(args[4], log)
    return [status]


def _event_scan(p: Platform, args: Sequence[int], memory: Buffers, caller: int) -> list[int]:
    return [p.event_scan(args[0], args[3])]


def _query_cpu_stopped_state(p: Platform, args: Sequence[int], memory: Buffers, caller: int) -> list[int]:
    return list(p.query_cpu_stopped_state(args[0]))


def _start_cpu(p: Platform, args: Sequence[int], memory: Buffers, caller: int) -> list[int]:
    return [p.start_cpu(args[0], args[1], args[2])]


def _stop_self(p: Platform, args: Sequence[int], memory: Buffers, caller: int) -> list[int]:
    return [p.stop_self(caller)]


FUNCTIONS: Final[Mapping[int, RtasFunction]] = {
    rtas.TOKEN_SET_INDICATOR: RtasFunction("set-indicator", frozenset({3}), 1, _set_indicator),
    rtas.TOKEN_GET_SENSOR_STATE: RtasFunction("get-sensor-state", frozenset({2}), 2, _get_sensor_state),
    rtas.TOKEN_IBM_CONFIGURE_CONNECTOR: RtasFunction(
        "ibm,configure-connector", frozenset({2}), 1, _configure_connector,
        lambda args: [(args[0], WORK_AREA_SIZE, "ibm,configure-connector's work area (args[0])")],
        # After status 5 the guest passes a memory extent page in args[1]; the platform only needs its address.
        may_name=lambda args: [(args[1], WORK_AREA_SIZE, "ibm,configure-connector's memory extent (args[1])")]
        if args[1] else [],
    ),
    rtas.TOKEN_SET_POWER_LEVEL: RtasFunction("set-power-level", frozenset({2}), 2, _set_power_level),
    rtas.TOKEN_GET_POWER_LEVEL: RtasFunction("get-power-level", frozenset({1}), 2, _get_power_level),
    rtas.TOKEN_CHECK_EXCEPTION: RtasFunction(
        "check-exception", frozenset({6, 7}), 1, _check_exception,
        lambda args: [(args[4], args[5], "check-exception's buffer (args[4], length args[5])")],
    ),
    # QEMU's event-scan writes nothing into its buffer: it re-pulses interrupts and returns 1.
    rtas.TOKEN_EVENT_SCAN: RtasFunction(
        "event-scan", frozenset({4}), 1, _event_scan,
        may_name=lambda args: [(args[2], args[3], "event-scan's buffer (args[2], length args[3])")],
    ),
    rtas.TOKEN_QUERY_CPU_STOPPED_STATE: RtasFunction(
        "query-cpu-stopped-state", frozenset({1}), 2, _query_cpu_stopped_state,
    ),
    rtas.TOKEN_START_CPU: RtasFunction("start-cpu", frozenset({3}), 1, _start_cpu),
    # QEMU 7.2's stop-self checks neither nargs nor nret (Linux makes it with 0 and 1) and writes
    # no return cell; the thread it stops is the caller (CallRequest.calling_cpu_id).
    rtas.TOKEN_STOP_SELF: RtasFunction("stop-self", frozenset({0}), 1, _stop_self, checks_cells=False),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A raw call checked against its function (see :func:`prepare`): running it raises nothing new."""

    function: RtasFunction | None  # None: an unknown token, or cells the call does not take
    args: tuple[int, ...]
    nret: int
    memory: Buffers
    caller: int = 0  # the calling thread's vCPU id (see CallRequest.calling_cpu_id)

    def run(self, platform: Platform) -> list[int]:
        """The call's ``nret`` return cells (status first, signed)."""
        rets = [0] * self.nret
        if self.function is None:
            # QEMU: unknown token, or a call made with the wrong number of cells: -3 (when there is a rets[0]).
            if self.nret:
                rets[0] = rtas.PARAMETER_ERROR
            return rets
        results = self.function.run(platform, self.args, self.memory, self.caller)
        rets[: len(results)] = results[: self.nret]
        return rets


def prepare(token: int, nargs: int, nret: int, args: Sequence[int], memory: Buffers, caller: int = 0) -> PreparedCall:
    """Check a raw call without running it (so a batch can check every call before the first runs).

    ``caller`` is the vCPU id of the thread making the call; only stop-self uses it.

    Raises InvalidArgument when the request does not describe a call: args not
    ``nargs`` long, or buffers that do not match what the call points at (a buffer
    the call needs missing; one it needs or may be given of another length than its
    arguments name; one at an address it does not name).
    """
    if nargs > MAX_CELLS or nret > MAX_CELLS:
        raise InvalidArgument("nargs" if nargs > MAX_CELLS else "nret", max(nargs, nret), f"at most {MAX_CELLS}")
    if len(args) != nargs:
        raise InvalidArgument("args", len(args), f"has {len(args)} cells but nargs is {nargs}")
    if any(not 0 <= a <= 0xFFFFFFFF for a in args):
        raise InvalidArgument("args", list(args), "cells are 32-bit")
    function = FUNCTIONS.get(token)
    if function is None or (function.checks_cells and (nargs not in function.nargs or nret != function.nret)):
        return PreparedCall(None, tuple(args), nret, memory, caller)
    for address, length, what in function.needs(args):
        memory.check(address, length, what)
    for address, length, what in function.may_name(args):
        memory.check_if_given(address, length, what)
    unused = sorted(set(memory.regions) - memory.used)
    if unused:
        raise InvalidArgument("buffers", f"{unused[0]:#x}", f"{function.name} does not use a buffer there")
    return PreparedCall(function, tuple(args), nret, memory, caller)


def dispatch(
    platform: Platform, token: int, nargs: int, nret: int, args: Sequence[int], memory: Buffers, caller: int = 0
) -> list[int]:
    """Run one RTAS call; returns its ``nret`` return cells (status first, signed).

    Raises InvalidArgument (changing nothing) when the request does not describe a call
    (see :func:`prepare`).
    """
    return prepare(token, nargs, nret, args, memory, caller).run(platform)


#: The most calls one configure-connector walk makes, and what max_calls 0 means.
MAX_WALK_CALLS: Final = 512
DEFAULT_WALK_CALLS: Final = 64
#: The statuses after which a guest's configure-connector loop calls again.
_WALK_CONTINUES: Final = frozenset({rtas.CC_NEXT_SIBLING, rtas.CC_NEXT_CHILD, rtas.CC_NEXT_PROPERTY,
                                    rtas.CC_PREVIOUS_PARENT})  # fmt: skip


def walk_configure_connector(
    platform: Platform, area: bytes, max_calls: int, memory_extent: int = 0
) -> list[tuple[int, bytes]]:
    """ibm,configure-connector, fed its own work area, while the status says "call again".

    Exactly the calls a guest's loop makes (each with ``memory_extent`` as args[1]); returns
    (status, work area) of each, at most ``max_calls`` of them.
    """
    steps: list[tuple[int, bytes]] = []
    while len(steps) < max_calls:
        status, area = platform.configure_connector(area, memory_extent)
        steps.append((status, area))
        if status not in _WALK_CONTINUES:
            break
    return steps
