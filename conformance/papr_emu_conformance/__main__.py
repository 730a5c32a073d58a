"""``python -m papr_emu_conformance``: see :mod:`papr_emu_conformance.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
