"""papr-emu sandbox: run unmodified guest tools (librtas programs, drmgr) against a papr-emu platform.

``papr-emu sandbox [--platform P] -- COMMAND...`` (see :mod:`.cli` and docs/sandbox.md).
"""
