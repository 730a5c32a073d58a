"""PCI function models by QEMU device name, and the papr.v1 enum value of each: the one table.

The names are QEMU's ``-device`` names (``e1000``, ``virtio-net-pci``); QEMU's alias
``virtio-net`` is accepted too. The CLI, the conformance scenarios and the server's config
file all read model names through here.

Example::

    >>> pci_model_name("virtio-net"), pci_model("e1000") == device_pb2.PCI_MODEL_E1000
    ('virtio-net-pci', True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from papr.v1 import device_pb2

# Canonical QEMU name -> papr.v1 PciModel.
PCI_MODELS: Final[Mapping[str, device_pb2.PciModel.ValueType]] = {
    "e1000": device_pb2.PCI_MODEL_E1000,
    "virtio-net-pci": device_pb2.PCI_MODEL_VIRTIO_NET,
}
# Other spelling -> canonical name (QEMU's qdev alias table has virtio-net for virtio-net-pci).
PCI_MODEL_ALIASES: Final[Mapping[str, str]] = {"virtio-net": "virtio-net-pci"}
# Every name accepted, canonical ones first.
PCI_MODEL_NAMES: Final = (*PCI_MODELS, *PCI_MODEL_ALIASES)


def pci_model_name(name: str) -> str:
    """The canonical QEMU name of a model name or alias; ValueError if it is neither."""
    canonical = PCI_MODEL_ALIASES.get(name, name)
    if canonical not in PCI_MODELS:
        raise ValueError(f"{name!r} is not one of {', '.join(PCI_MODEL_NAMES)}")
    return canonical


def pci_model(name: str) -> device_pb2.PciModel.ValueType:
    """The papr.v1 PciModel of a model name or alias; ValueError if it is neither."""
    return PCI_MODELS[pci_model_name(name)]
