"""Facts of the PAPR platform that guests, tools and tests rely on, written once.

Example::

    >>> LMB_SIZE >> 20
    256
    >>> DRC_ARRAYS[0]
    'ibm,drc-indexes'
"""

from __future__ import annotations

from typing import Final

# A logical memory block (QEMU's SPAPR_MEMORY_BLOCK_SIZE, the device tree's ibm,lmb-size):
# LMB DRC n covers [n * LMB_SIZE, (n + 1) * LMB_SIZE).
LMB_SIZE: Final = 256 << 20

# The four parallel arrays (LoPAPR "ibm,drc-*" properties) that describe a node's connectors, in
# the order the kernel reads them; each starts with a count cell.
DRC_ARRAYS: Final = ("ibm,drc-indexes", "ibm,drc-names", "ibm,drc-types", "ibm,drc-power-domains")

# set-indicator(isolation-state, unisolate) of an inserted entity that the firmware refuses because it
# would disturb the system (LoPAR R1-13.5.3.4-4: "an error status which is unique to the particular
# error"). LoPAR gives no number; -9005 is papr-emu's, used by no DR call for anything else.
HOT_ADD_REFUSED: Final = -9005
