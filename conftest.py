"""Repository-wide pytest setup: quiet structured logs (doctests compare printed output)."""

import io

from papr_emu.logs import configure_logging

configure_logging("json", "critical", stream=io.StringIO())
