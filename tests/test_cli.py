"""The people's CLI (`papr-emu platforms|connectors|plug|unplug|watch|dt|guest ...`) against a real server."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest

from papr.v1 import device_pb2, hotplug_pb2, platform_pb2
from papr_emu import PaprServer
from papr_emu.cli import main
from papr_emu_client import Client
from papr_emu_client.cli import ProgressBar
from papr_emu_client.reference_guest import ReferenceGuest, RefusalPolicy


def run(capsys: pytest.CaptureFixture[str], server: PaprServer, *args: str) -> tuple[int, list[str], str]:
    code = main([*args, "--server", server.addresses[1]])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_tables(capsys: pytest.CaptureFixture[str], server: PaprServer, client: Client, platform: str) -> None:
    code, lines, _ = run(capsys, server, "platforms")
    assert code == 0 and lines[0].split() == ["NAME", "GEOMETRY", "CONNECTORS", "DEVICES", "EVENTS", "CAS"]
    row = next(line for line in lines if line.startswith(platform + " "))
    assert "-m 1024M,slots=4,maxmem=4096M -smp 1,maxcpus=4,threads=1" in row and " 307 " in row
    code, lines, _ = run(capsys, server, "connectors", "--platform", platform)
    assert len(lines) == 1 + 307 and lines[0].split()[:3] == ["INDEX", "NAME", "TYPE"]
    assert lines[1].split() == ["0x10000000", "CPU", "0", "CPU", "LOGICAL_CONFIGURED", "1", "core0"]
    code, lines, _ = run(capsys, server, "connectors", "--platform", platform, "--type", "lmb")
    assert [line.split()[0] for line in lines[1:]] == [f"{0x80000000 + n:#010x}" for n in range(4, 16)]


def test_plug_guest_unplug_watch(capsys: pytest.CaptureFixture[str], server: PaprServer, platform: str) -> None:
    code, lines, _ = run(capsys, server, "plug", "--platform", platform, "dimm", "--size", "512M", "--id", "mem")
    assert code == 0 and lines == ["plugged mem (dimm) on 2 connector(s) from 0x80000004"]
    code, lines, _ = run(capsys, server, "devices", "--platform", platform)
    assert [line.split() for line in lines[1:]][1] == ["mem", "dimm", "0x80000004..0x80000005", "(2)", "hot"]
    code, lines, _ = run(capsys, server, "guest", "--platform", platform, "--once")
    assert code == 0 and lines == ["resource 2 action 1: done 0x80000004..0x80000005 2 LMBs"]
    code, lines, _ = run(capsys, server, "connectors", "--platform", platform, "--attached", "--type", "lmb")
    assert [line.split()[4] for line in lines[1:]] == ["LOGICAL_CONFIGURED"] * 2  # "LMB 4" is two words
    code, lines, _ = run(capsys, server, "unplug", "--platform", platform, "mem")
    assert lines == ["mem: unplug requested, waiting for the guest"]
    code, lines, _ = run(capsys, server, "guest", "--platform", platform, "--once", "--refuse-lmb", "0x80000005")
    assert lines == ["resource 2 action 2: refused 0x80000004 LMB 0x80000005 cannot be offlined"]
    run(capsys, server, "unplug", "--platform", platform, "mem")
    code, lines, _ = run(capsys, server, "guest", "--platform", platform, "--once")
    assert lines == ["resource 2 action 2: done 0x80000004..0x80000005 2 LMBs"]
    code, lines, _ = run(capsys, server, "watch", "--platform", platform, "--after", "2", "--count", "5")
    assert lines == [
        "#3 device_added mem (dimm) on 2 connector(s) from 0x80000004",
        "#4 unplug_requested mem, waiting on 2 connector(s)",
        "#5 unplug_rejected mem: the guest refused by unisolate on 0x80000004",
        "#6 unplug_requested mem, waiting on 2 connector(s)",
        "#7 device_deleted mem (released by 0x80000005)",
    ]


def test_pci_models_by_qemu_name_or_alias(
    capsys: pytest.CaptureFixture[str], server: PaprServer, client: Client, platform: str
) -> None:
    for slot, model in ((3, "e1000"), (4, "virtio-net-pci"), (5, "virtio-net")):
        code, _, _ = run(capsys, server, "plug", "--platform", platform, "pci", "--slot", str(slot), "--model", model)
        assert code == 0
    devices = client.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform=platform)).devices
    models = [d.spec.pci_function.model for d in devices if d.type == device_pb2.DEVICE_TYPE_PCI_FUNCTION]
    assert models == [device_pb2.PCI_MODEL_E1000, device_pb2.PCI_MODEL_VIRTIO_NET, device_pb2.PCI_MODEL_VIRTIO_NET]


def test_device_tree_dump(capsys: pytest.CaptureFixture[str], server: PaprServer, platform: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    code, lines, _ = run(capsys, server, "dt", "--platform", platform)
    text = "\n".join(lines)
    assert code == 0 and text.startswith("/dts-v1/;") and "ibm,configure-connector = <0x201e>;" in text
    target = tmp_path / "tree.dtb"
    code, _, _ = run(capsys, server, "dt", "--platform", platform, "--dtb", str(target))
    assert code == 0 and target.read_bytes()[:4] == b"\xd0\x0d\xfe\xed"


def test_create_and_delete(capsys: pytest.CaptureFixture[str], server: PaprServer, client: Client) -> None:
    code, lines, _ = run(capsys, server, "create", "cli-made", "--memory", "2G", "--max-memory", "3G", "--slots", "1")
    assert code == 0 and lines == ["created cli-made: 296 connectors"]  # 4 CPU + 31 PHB + 256 PCI + 4 LMB + 1 PMEM
    code, lines, _ = run(capsys, server, "delete", "cli-made")
    assert code == 0 and lines == ["deleted cli-made"]


def test_create_defaults_to_the_default_geometry(
    capsys: pytest.CaptureFixture[str], server: PaprServer, client: Client
) -> None:
    code, lines, _ = run(capsys, server, "create", "cli-plain")
    assert code == 0 and lines == ["created cli-plain: 307 connectors"]  # the default platform's count
    geometries = {
        p.name: p.geometry for p in client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms
    }
    assert geometries["cli-plain"] == geometries["default"]
    # A fraction of a size, when it is whole bytes, as QEMU's -m 1.5G; maxmem and maxcpus follow if more.
    code, lines, _ = run(capsys, server, "-o", "json", "create", "cli-big", "--memory", "5.5G", "--cpus", "6")
    assert code == 0 and json.loads(lines[0]) == {"name": "cli-big", "connectors": 6 + 31 + 256 + 15 + 1, "tokens": []}
    big = next(
        p for p in client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms if p.name == "cli-big"
    )
    assert (big.geometry.memory_bytes, big.geometry.max_memory_bytes, big.geometry.max_cpus) == (
        11 << 29,
        (11 << 29) + (3 << 30),
        6,
    )
    for name in ("cli-plain", "cli-big"):
        assert run(capsys, server, "delete", name)[0] == 0
    with pytest.raises(SystemExit):
        main(["create", "x", "--memory", "1.3G"])
    assert "'1.3G' is not a size: not a whole number of bytes" in capsys.readouterr().err


def test_every_option_has_help() -> None:
    import argparse

    from papr_emu.cli import build_parser

    parser = build_parser({})
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(p for name, p in action.choices.items() if name != "serve")
            else:
                assert action.help, f"{current.prog}: {action.dest} has no help"


@pytest.mark.parametrize("before", [True, False])
def test_global_options_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str], server: PaprServer, platform: str, before: bool
) -> None:
    options = ["--server", server.addresses[1], "--platform", platform, "-o", "json"]
    args = [*options, "devices"] if before else ["devices", *options]
    assert main(args) == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)] == ["core0", "phb0"]
    # After the device kind too, and after wins over before.
    args = [
        "--platform",
        "nope",
        "plug",
        "cpu",
        "--core-id",
        "1",
        "--platform",
        platform,
        "--server",
        server.addresses[1],
    ]
    assert main(args) == 0 and capsys.readouterr().out.startswith("plugged ")


def test_json_output(capsys: pytest.CaptureFixture[str], server: PaprServer, platform: str) -> None:
    def json_of(*args: str) -> object:
        code, lines, err = run(capsys, server, "-o", "json", *args)
        assert code == 0 and len(lines) == 1, err
        return json.loads(lines[0])

    platforms = json_of("platforms")
    assert isinstance(platforms, list)
    mine = next(p for p in platforms if p["name"] == platform)
    assert (mine["memory_bytes"], mine["max_memory_bytes"], mine["connectors"], mine["negotiated"]) == (
        1 << 30,
        4 << 30,
        307,
        False,
    )
    connectors = json_of("connectors", "--platform", platform, "--type", "cpu")
    assert connectors[0] == {
        "index": 0x10000000, "name": "CPU 0", "type": "CPU", "state": "LOGICAL_CONFIGURED", "entity_sense": 1,
        "device_id": "core0", "unplug_pending": False,
    }  # fmt: skip
    plugged = json_of("plug", "--platform", platform, "dimm", "--size", "512M", "--id", "mem")
    assert plugged == {
        "id": "mem", "type": "dimm", "drc_indexes": [0x80000004, 0x80000005], "hotplugged": True,
        "unplug_pending": False,
    }  # fmt: skip
    outcome = json_of("guest", "--platform", platform, "--once")
    assert outcome["result"] == "done" and outcome["drc_indexes"] == [0x80000004, 0x80000005]
    assert json_of("unplug", "--platform", platform, "mem") == {"id": "mem", "outcome": "requested", "event": None}
    code, lines, _ = run(capsys, server, "-o", "json", "watch", "--platform", platform, "--after", "2", "--count", "2")
    events = [json.loads(line) for line in lines]
    assert code == 0
    assert [(e["sequence"], e["kind"]) for e in events] == [(3, "device_added"), (4, "unplug_requested")]
    assert events[1]["device_id"] == "mem" and events[1]["drc_indexes"] == [0x80000004, 0x80000005]
    assert events[1]["device_type"] == "DEVICE_TYPE_DIMM" and events[1]["platform"] == platform


def _guest_when_pending(client: Client, platform: str, policy: RefusalPolicy) -> threading.Thread:
    """The reference guest, once the unplug is pending: what a Linux guest would do a moment later."""

    def act() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            devices = client.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform=platform)).devices
            if any(d.id == "mem" and d.unplug_pending for d in devices):
                guest = ReferenceGuest(client, platform, policy, transport="unary")
                try:
                    guest.handle_pending()
                finally:
                    guest.close()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def test_unplug_wait(capsys: pytest.CaptureFixture[str], server: PaprServer, client: Client, platform: str) -> None:
    run(capsys, server, "plug", "--platform", platform, "dimm", "--size", "512M", "--id", "mem")
    run(capsys, server, "plug", "--platform", platform, "dimm", "--size", "256M", "--id", "other")
    ReferenceGuest(client, platform, RefusalPolicy(set(), set(), "unisolate"), transport="unary").handle_pending()
    # The guest refuses: exit 3.
    thread = _guest_when_pending(client, platform, RefusalPolicy({0x80000005}, set(), "unisolate"))
    code, lines, _ = run(capsys, server, "unplug", "--platform", platform, "mem", "--wait", "--timeout", "20")
    thread.join()
    assert code == 3 and lines == ["mem: the guest refused by unisolate on 0x80000004"]
    # The guest releases it: exit 0.
    thread = _guest_when_pending(client, platform, RefusalPolicy(set(), set(), "unisolate"))
    code, lines, _ = run(capsys, server, "-o", "json", "unplug", "--platform", platform, "mem", "--wait")
    thread.join()
    reply = json.loads(lines[0])
    assert code == 0 and reply["outcome"] == "deleted" and reply["event"]["kind"] == "device_deleted"
    # Nobody answers: exit 4 after --timeout.
    code, lines, _ = run(capsys, server, "unplug", "--platform", platform, "other", "--wait", "--timeout", "0.5")
    assert code == 4 and lines == ["other: still not unplugged after 0.5 s"]
    assert run(capsys, server, "unplug", "--platform", platform, "mem", "--timeout", "1")[2] == (
        "papr-emu: --timeout is for --wait\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("connectors", "--platform", "nope"), "papr-emu: NOT_FOUND: platform: 'nope': no such platform"),
        (
            ("plug", "dimm", "--size", "300M"),
            "papr-emu: INVALID_ARGUMENT: dimm.size_bytes: 300M: Hotplugged memory size must be a multiple",
        ),
        (  # numbers as the user wrote them, not as the server does
            ("plug", "dimm", "--size", "314572800"),
            "papr-emu: INVALID_ARGUMENT: dimm.size_bytes: 314572800: Hotplugged memory size must be a multiple",
        ),
        (("unplug", "core0"), "papr-emu: FAILED_PRECONDITION: Boot CPU core may not be unplugged"),
        (("create", "Bad"), "papr-emu: INVALID_ARGUMENT: name: 'Bad': must be lower-case letters"),
    ],
)
def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], server: PaprServer, args: tuple[str, ...], message: str
) -> None:
    code, lines, err = run(capsys, server, *args)
    assert code == 1 and lines == []
    assert err.startswith(message) and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unreachable_server(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = main(["platforms", "--server", f"unix:{tmp_path}/nobody.sock"])
    err = capsys.readouterr().err
    assert (
        code == 1
        and err.strip()
        == f"papr-emu: cannot reach a server at unix:{tmp_path}/nobody.sock (is `papr-emu serve` running?)"
    )


def test_progress_bar() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = ProgressBar(stream)
    for done in (0, 2048, 4096):
        bar("memory add", done, 4096)
    assert stream.getvalue().endswith("memory add       [##############################] 4096/4096\n")
    assert "[" + "#" * 15 + "." * 15 + "] 2048/4096" in stream.getvalue()
