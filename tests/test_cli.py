"""The people's CLI (`papr-emu platforms|connectors|plug|unplug|watch|dt|guest ...`) against a real server."""

from __future__ import annotations

import io

import pytest

from papr.v1 import device_pb2, hotplug_pb2
from papr_emu import PaprServer
from papr_emu.cli import main
from papr_emu_client import Client
from papr_emu_client.cli import ProgressBar


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


def test_create_and_delete(capsys: pytest.CaptureFixture[str], server: PaprServer) -> None:
    code, lines, _ = run(capsys, server, "create", "cli-made", "--memory", "2G", "--max-memory", "3G", "--slots", "1")
    assert code == 0 and lines == ["created cli-made: 293 connectors"]  # 1 CPU + 31 PHB + 256 PCI + 4 LMB + 1 PMEM
    code, lines, _ = run(capsys, server, "delete", "cli-made")
    assert code == 0 and lines == ["deleted cli-made"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("connectors", "--platform", "nope"), "papr-emu: NOT_FOUND: platform: 'nope': no such platform"),
        (
            ("plug", "dimm", "--size", "300M"),
            "papr-emu: INVALID_ARGUMENT: dimm.size_bytes: 0x12c00000: Hotplugged memory size must be a multiple",
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
