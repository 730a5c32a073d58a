"""PowerVM-style memory requests: add or remove N LMBs by count, one by index, or N from an index.

On a platform with ``MemoryModel.LMB`` the management side does not plug DIMMs: it asks
for LMBs, as a management console does, and the platform queues the matching v6 hotplug
log (identifier type count, index or indexed count). Linux's ``dlpar_memory_*`` functions
then pick and acquire (or release) LMBs themselves; the platform decides what it allows
and works out the request's outcome from what the guest does:

* **add**: the guest may acquire an unassigned LMB the request covers (by count: any; by
  index or indexed count: those named) while fewer than the target are held under the
  request; each becomes an :class:`~.devices.Lmb`. The request is **completed** when the
  target number of LMBs reached the configured state. The guest **rolls back** by
  releasing what it added (Linux removes every LMB it had added when one fails): when
  nothing added under the request is left, it ended **refused**. By count, Linux also skips
  an LMB it cannot add and moves on: a skip while other LMBs are held changes nothing, and
  one released before it was ever configured is never a rollback; but a configured LMB
  released when it was the only one held ends the request (papr-emu cannot tell that skip
  from the rollback of a one-LMB add).
  An add is completed as soon as its last LMB is configured; but Linux may still fail
  that LMB afterwards (add_memory) and skip it (by count) or undo the add. So until the
  next request starts, a give-back of one of its LMBs makes it pending again, and it
  ends once more, completed or refused, in another event with the same id: **the last
  event for a request id is its outcome.**
* **remove**: the LMBs the request covers (by index / indexed count: the assigned ones
  named; by count: every assigned LMB) are marked unplug-pending, so the guest may isolate
  and release them, and the usual refusal signals apply. It is **completed** when the
  target number were released (by count, the others are unmarked then); a refusal signal
  (unisolate, or configure-connector of an LMB it had offlined, which is how Linux re-adds
  what it removed) ends it **refused** and unmarks them all.

One request is pending at a time, as a management console serialises DLPAR operations.

Example::

    >>> request = MemoryRequest(1, MemoryAction.ADD, HP_ID_DRC_COUNT, first_index=0, count=2, target=2,
    ...                         scope=None)
    >>> request.log(), request.may_acquire(0x80000005)
    (HotplugLog(resource=2, action=1, id_type=3, index=0, count=2), True)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .drc import RefusalSignal
from .rtas_log import (
    HP_ACTION_ADD,
    HP_ACTION_REMOVE,
    HP_ID_DRC_COUNT,
    HP_ID_DRC_COUNT_INDEXED,
    HP_ID_DRC_INDEX,
    HP_RESOURCE_MEMORY,
    HotplugLog,
)


class MemoryAction(enum.Enum):
    ADD = "add"
    REMOVE = "remove"


class MemoryOutcome(enum.Enum):
    COMPLETED = "completed"  # the target number of LMBs changed
    REFUSED = "refused"  # the guest refused, or failed and rolled back what it had changed
    CANCELLED = "cancelled"  # CAS reset the connectors and dropped the request's log


#: The identifier types a request may use, and how they read.
ID_TYPE_NAMES = {HP_ID_DRC_COUNT: "count", HP_ID_DRC_INDEX: "index", HP_ID_DRC_COUNT_INDEXED: "indexed count"}


@dataclass
class MemoryRequest:
    """One pending request and what the guest has done under it so far."""

    id: int
    action: MemoryAction
    id_type: int  # HP_ID_DRC_COUNT, HP_ID_DRC_INDEX or HP_ID_DRC_COUNT_INDEXED
    first_index: int  # the index (by index) or first index (indexed count); 0 by count
    count: int  # as the log says: the count (by count, indexed count), 1 by index
    target: int  # LMBs that must change for the request to complete
    scope: frozenset[int] | None  # the LMB indexes it covers; None: any (add: unassigned, remove: assigned)
    held: set[int] = field(default_factory=set)  # add: LMBs acquired under it and still attached
    configured: set[int] = field(default_factory=set)  # add: held LMBs that reached the configured state
    marked: set[int] = field(default_factory=set)  # remove: LMBs marked unplug-pending for it
    changed: int = 0  # remove: LMBs released so far
    failing: bool = False  # add: the guest started giving back what it had added

    def log(self) -> HotplugLog:
        """The v6 hotplug log the platform queues for it."""
        action = HP_ACTION_ADD if self.action is MemoryAction.ADD else HP_ACTION_REMOVE
        if self.id_type == HP_ID_DRC_INDEX:
            return HotplugLog(HP_RESOURCE_MEMORY, action, HP_ID_DRC_INDEX, self.first_index)
        if self.id_type == HP_ID_DRC_COUNT:
            return HotplugLog(HP_RESOURCE_MEMORY, action, HP_ID_DRC_COUNT, count=self.count)
        return HotplugLog(HP_RESOURCE_MEMORY, action, HP_ID_DRC_COUNT_INDEXED, self.first_index, self.count)

    def describe(self) -> str:
        """``add 2 LMBs by count``, ``remove LMB 0x80000005 by index``, ..."""
        if self.id_type == HP_ID_DRC_INDEX:
            return f"{self.action.value} LMB {self.first_index:#x} by index"
        if self.id_type == HP_ID_DRC_COUNT:
            return f"{self.action.value} {self.count} LMBs by count"
        return f"{self.action.value} {self.count} LMBs from {self.first_index:#x} by indexed count"

    # --- add ---------------------------------------------------------------------------------------

    def may_acquire(self, index: int) -> bool:
        """An add: may the guest acquire this unassigned LMB now?"""
        return (
            self.action is MemoryAction.ADD
            and not (self.failing and self.id_type != HP_ID_DRC_COUNT)  # by count a skip is no failure
            and (self.scope is None or index in self.scope)
            and len(self.held) < self.target
        )

    def acquired(self, index: int) -> None:
        self.held.add(index)

    def reached_configured(self, index: int) -> MemoryOutcome | None:
        """An LMB held under an add completed configure-connector: COMPLETED when it was the last."""
        if self.action is not MemoryAction.ADD or index not in self.held:
            return None
        self.configured.add(index)
        return MemoryOutcome.COMPLETED if len(self.configured) == self.target else None

    def may_give_back(self, index: int) -> bool:
        """An add: may the guest isolate this LMB it added (a rollback)?"""
        return self.action is MemoryAction.ADD and index in self.held

    # --- both ---------------------------------------------------------------------------------------

    def released(self, index: int) -> MemoryOutcome | None:
        """The guest gave back an LMB: the outcome if that decided the request."""
        if self.action is MemoryAction.REMOVE:
            if index not in self.marked:
                return None
            self.marked.discard(index)
            self.changed += 1
            return MemoryOutcome.COMPLETED if self.changed == self.target else None
        if index not in self.held:
            return None
        self.held.discard(index)
        was_configured = index in self.configured
        self.configured.discard(index)
        # By index or indexed count, giving back an LMB means the add failed and is being undone.
        # By count Linux also skips an LMB it could not add and goes on, so a give-back only
        # counts once it leaves nothing held: an LMB released before it was ever configured
        # never does (the acquire-configure-release of a skip), a configured one does.
        if was_configured or self.id_type != HP_ID_DRC_COUNT:
            self.failing = True
        return MemoryOutcome.REFUSED if self.failing and not self.held else None

    @property
    def lmbs_changed(self) -> int:
        """How many LMBs the request changed so far (added and configured, or released)."""
        return len(self.configured) if self.action is MemoryAction.ADD else self.changed


@dataclass(frozen=True, slots=True)
class MemoryRequestFinished:
    """The event a request ends with."""

    request_id: int
    action: MemoryAction
    id_type: int
    first_index: int
    count: int
    outcome: MemoryOutcome
    lmbs_changed: int  # LMBs added (configured) or removed (released) when it ended
    signal: RefusalSignal | None = None  # a remove refused with a signal: which, and on which LMB
    drc_index: int = 0


__all__ = ["ID_TYPE_NAMES", "MemoryAction", "MemoryOutcome", "MemoryRequest", "MemoryRequestFinished"]
