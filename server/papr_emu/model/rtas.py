"""RTAS numbers of the dynamic-reconfiguration protocol (LoPAR, QEMU 7.2).

Everything here is a fact from ``shared/reference/papr-drc.md`` (appendix A)
and QEMU 7.2; the names say what the number means.
"""

from __future__ import annotations

from typing import Final

from papr_emu_client.constants import (
    LMB_SIZE as LMB_SIZE,  # SPAPR_MEMORY_BLOCK_SIZE, defined once for server and guests
)

# RTAS statuses (rets[0]). QEMU folds every parameter error, unknown index,
# unsupported type and forbidden transition into -3.
SUCCESS: Final = 0
NO_ERRORS_FOUND: Final = 1  # check-exception / event-scan: no event
HARDWARE_ERROR: Final = -1
PARAMETER_ERROR: Final = -3
NOT_CONFIGURABLE: Final = -9003  # ibm,configure-connector: connector unusable

# ibm,configure-connector statuses.
CC_COMPLETE: Final = 0
CC_NEXT_SIBLING: Final = 1  # never produced (QEMU neither)
CC_NEXT_CHILD: Final = 2
CC_NEXT_PROPERTY: Final = 3
CC_PREVIOUS_PARENT: Final = 4

# Indicator tokens (set-indicator args[0]) and sensor tokens (get-sensor-state args[0]).
ISOLATION_STATE: Final = 9001
DR_INDICATOR: Final = 9002
ALLOCATION_STATE: Final = 9003
DR_ENTITY_SENSE: Final = 9003

# isolation-state values.
ISOLATE: Final = 0
UNISOLATE: Final = 1

# allocation-state values (2 exchange and 3 recover are refused with -3, as in QEMU).
ALLOCATION_UNUSABLE: Final = 0
ALLOCATION_USABLE: Final = 1

# dr-indicator values 0 inactive, 1 active, 2 identify, 3 action.
DR_INDICATOR_VALUES: Final = frozenset({0, 1, 2, 3})
DR_INDICATOR_INACTIVE: Final = 0
DR_INDICATOR_ACTIVE: Final = 1

# dr-entity-sense values.
SENSE_EMPTY: Final = 0
SENSE_PRESENT: Final = 1
SENSE_UNUSABLE: Final = 2

# The one power domain: live insertion; its level is always 100.
LIVE_INSERTION_DOMAIN: Final = -1
FULL_POWER: Final = 100

# query-cpu-stopped-state rets[1] (LoPAR; Linux's QCSS_*). QEMU answers only 0 or 2; papr-emu too:
# a thread stops at once, so "stopping" (1) is never seen.
THREAD_STOPPED: Final = 0
THREAD_STOPPING: Final = 1
THREAD_RUNNING: Final = 2

# QEMU 7.2's RTAS tokens for the calls papr-emu implements (as found in /rtas).
TOKEN_QUERY_CPU_STOPPED_STATE: Final = 0x2005
TOKEN_START_CPU: Final = 0x2006
TOKEN_STOP_SELF: Final = 0x2007
TOKEN_CHECK_EXCEPTION: Final = 0x200E
TOKEN_EVENT_SCAN: Final = 0x200F
TOKEN_SET_INDICATOR: Final = 0x201A
TOKEN_SET_POWER_LEVEL: Final = 0x201B
TOKEN_GET_POWER_LEVEL: Final = 0x201C
TOKEN_GET_SENSOR_STATE: Final = 0x201D
TOKEN_IBM_CONFIGURE_CONNECTOR: Final = 0x201E

# Memory geometry.
DEVICE_MEMORY_ALIGN: Final = 1 << 30  # device memory starts at ROUND_UP(ram, 1 GiB)
