# PYTHON_ARGCOMPLETE_OK (argcomplete's global completion looks for this line)
"""The ``papr-emu`` command: ``serve`` runs the server; the other commands talk to one.

Example::

    papr-emu serve                                  # default platform on 127.0.0.1:50051
    papr-emu serve --listen unix:/tmp/papr.sock --log-format json
    papr-emu serve --config platforms.toml
    papr-emu connectors --attached                  # see papr_emu_client.cli for the rest
    papr-emu conformance list                       # a command from the papr_emu.commands entry points

Commands beyond ``serve`` and the client's come from the ``papr_emu.commands`` entry-point
group (name -> a ``main(argv) -> int``), loaded only when run: that is how the conformance
suite, which depends on this package, adds ``conformance`` without this package importing it.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import structlog

from papr_emu_client.arguments import OneLineParser, seconds_argument

from .addresses import host_port, listen_address
from .logs import LOG_LEVELS, configure_logging
from .model import DEFAULT_PLATFORM, LIMITS, Limits, PlatformError, Platforms, default_geometry
from .security import ADMIN_TOKEN_ENV, Security, SecurityError
from .server import DEFAULT_LISTEN, DEFAULT_MAX_WORKERS, ListenError, PaprServer
from .state import StateDir, StateError
from .transcript_version import distribution_version

COMMANDS_GROUP = "papr_emu.commands"


if TYPE_CHECKING:
    from importlib.metadata import EntryPoint


def plugin_commands() -> dict[str, EntryPoint]:
    """The ``papr_emu.commands`` entry points by command name, not loaded yet."""
    from importlib.metadata import entry_points

    return {entry.name: entry for entry in entry_points(group=COMMANDS_GROUP)}


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type from a check that raises ValueError saying why (argparse would only say 'invalid')."""

    def argument(text: str) -> str:
        try:
            check(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return text

    return argument


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return number


class _Version(argparse.Action):
    """``--version``, looked up only when asked for (reading package metadata takes a while)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        print(f"{parser.prog} {distribution_version()}")
        parser.exit()


def build_parser(plugins: dict[str, EntryPoint], client_commands: bool = True) -> argparse.ArgumentParser:
    """The `papr-emu` parser; ``plugins`` are listed as commands but not loaded.

    Without ``client_commands`` it knows ``serve`` (and the plugins) only: starting a
    server then imports nothing of the client's commands.
    """
    description = "PAPR/RTAS DRC platform emulator over gRPC"
    parser: argparse.ArgumentParser = OneLineParser(prog="papr-emu", description=description)
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument(
        "--listen",
        action="append",
        type=_checked(listen_address),
        metavar="ADDR",
        help=f"host:port or unix:PATH; repeatable (default {DEFAULT_LISTEN}, or the config's server.listen)",
    )
    serve.add_argument("--config", type=Path, metavar="FILE", help="TOML file with the platforms to create")
    serve.add_argument("--log-format", choices=("json", "console"), default="console")
    serve.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    serve.add_argument(
        "--max-workers", type=_positive, default=DEFAULT_MAX_WORKERS, metavar="N",
        help="threads for model calls that may block (streams and RTAS calls need none)",
    )  # fmt: skip
    serve.add_argument(
        "--grace", type=seconds_argument, default=2.0, metavar="S", help="seconds to finish RPCs on SIGTERM (default 2)"
    )
    serve.add_argument(
        "--metrics-listen", metavar="HOST:PORT", type=_checked(host_port),
        help="serve Prometheus metrics (GET /metrics, plain HTTP) here; off by default; off loopback needs --insecure",
    )  # fmt: skip
    serve.add_argument(
        "--access-log", action="store_true", default=None, help="log one event per RPC (method, platform, code, ms)"
    )
    serve.add_argument(
        "--record", type=Path, metavar="DIR",
        help="write each platform's calls and results to DIR/<platform>.jsonl (docs/transcripts.md)",
    )  # fmt: skip
    serve.add_argument(
        "--state-dir", type=Path, metavar="DIR",
        help="keep every platform in DIR across restarts (and kill -9); on start, bring back what DIR holds",
    )  # fmt: skip
    serve.add_argument(
        "--state-sync", action="store_true", default=None, help="fsync each state record (survives a machine crash)"
    )
    tls = serve.add_argument_group("security (see docs/security.md; each also a key of the config's [security])")
    tls.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve TLS with this certificate chain")
    tls.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    tls.add_argument("--tls-client-ca", type=Path, metavar="PEM", help="mTLS: require client certificates of this CA")
    tls.add_argument(
        "--admin-token-file", type=Path, metavar="FILE",
        help=f"require bearer tokens; this file holds the admin token (or set {ADMIN_TOKEN_ENV})",
    )  # fmt: skip
    tls.add_argument(
        "--insecure", action="store_true", default=None,
        help="allow a non-loopback listener without TLS and tokens (a throwaway local run only)",
    )  # fmt: skip
    tls.add_argument(
        "--no-reflection", dest="reflection", action="store_false", default=None, help="do not serve gRPC reflection"
    )
    tls.add_argument(
        "--certificate-role", action="append", metavar="SUBJECT=ROLE", dest="certificate_roles",
        help="mTLS: a client certificate of this subject (e.g. CN=job-7) without a token acts as ROLE "
        "(admin, manager:PLATFORM or guest:PLATFORM); repeatable",
    )  # fmt: skip
    tls.add_argument(
        "--unix-socket-mode", type=_octal, metavar="MODE", help="file mode of unix sockets, octal (default 600)"
    )
    defaults = Limits()
    for option in LIMITS.values():
        serve.add_argument(
            option.flag, type=_positive, metavar="N", dest=f"limit_{option.name}",
            help=f"{option.help} (default {getattr(defaults, option.name)}; TOML {option.key})",
        )  # fmt: skip
    if client_commands:
        from papr_emu_client import cli as client_cli

        client_cli.add_global_options(parser)
        client_cli.add_commands(commands)
    for name, entry in sorted(plugins.items()):
        # Listed for --help only: main() hands a plugin its arguments before this parser runs.
        commands.add_parser(name, help=f"from {entry.module.partition('.')[0]}; see `papr-emu {name} --help`")
    return parser


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal file mode (e.g. 600)") from None


def unbindable(address: str) -> str | None:
    """Why ``address`` (``host:port``) cannot be listened on now, or None (also for unix: and port 0).

    Checked before anything is built: a port in use is then one line of error, not gRPC's
    C-core log lines (which it prints to stderr, whatever Python's logging says) and the
    startup's. Like gRPC, an address is good when any of its resolved addresses binds.
    """
    host, colon, port = address.rpartition(":")
    if not colon or "://" in address or address.startswith(("unix:", "unix-abstract:", "vsock:")):
        return None
    try:
        number = int(port)
    except ValueError:
        return None
    if number == 0:
        return None
    host = host.removeprefix("[").removesuffix("]")
    try:
        resolved = socket.getaddrinfo(host or None, number, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        return f"cannot listen on {address}: {getattr(error, 'strerror', None) or error}"
    reasons = []
    for family, kind, protocol, _, where in resolved:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no obstacle
                probe.bind(where)
            return None
        except OSError as error:
            reasons.append(error)
    in_use = [r for r in reasons if r.errno == errno.EADDRINUSE]
    reason = (in_use or reasons)[0] if reasons else None
    return f"cannot listen on {address}: {reason.strerror.lower() if reason and reason.strerror else 'no address'}"


def serve(options: argparse.Namespace) -> int:
    configure_logging(options.log_format, options.log_level)
    log = structlog.get_logger("papr_emu.cli")
    listen = options.listen or []
    from .config import ConfigError, ServerConfig, load_config  # here: the client commands need none of it

    try:
        config = load_config(options.config) if options.config is not None else ServerConfig()
    except ConfigError as error:
        print(f"papr-emu: {error}", file=sys.stderr)
        return 2
    listen = listen or config.listen or [DEFAULT_LISTEN]
    settings = config.security | {
        key: value
        for key, value in (
            ("tls_cert", options.tls_cert), ("tls_key", options.tls_key), ("tls_client_ca", options.tls_client_ca),
            ("admin_token_file", options.admin_token_file), ("insecure", options.insecure),
            ("reflection", options.reflection), ("unix_socket_mode", options.unix_socket_mode),
        )
        if value is not None
    }  # fmt: skip
    if options.certificate_roles:
        pairs = [item.rpartition("=")[::2] for item in options.certificate_roles]  # subjects hold "=", roles not
        if not all(subject and role for subject, role in pairs):
            print("papr-emu: --certificate-role takes SUBJECT=ROLE, e.g. CN=job-7=guest:job7", file=sys.stderr)
            return 2
        settings["certificate_roles"] = dict(pairs)
    try:
        security = Security.load(**settings)
        security.check_listeners(listen)  # before anything is built: a refused start says one line only
        metrics_listen = options.metrics_listen or config.metrics_listen
        if metrics_listen is not None:
            security.check_metrics_listener(metrics_listen)
        for address in listen:
            if (reason := unbindable(address)) is not None:
                print(f"papr-emu: {reason}", file=sys.stderr)
                return 2
        flags = {name: getattr(options, f"limit_{name}") for name in LIMITS}
        # A flag beats the config file's [limits], which beats the default.
        limits = Limits(**(config.limits | {k: v for k, v in flags.items() if v is not None}))
        state_dir = options.state_dir or config.state_dir
        state = None
        if state_dir is not None:
            state = StateDir(state_dir, sync=bool(options.state_sync or config.state_sync))
        platforms = Platforms(limits, store=state)
        kept = {p.name for p in state.recover(platforms)} if state is not None else set()
        if options.config is not None:
            for platform in config.platforms:
                if platform.name not in kept:  # a platform the state directory kept comes back as it was
                    created = platforms.create(
                        platform.name, platform.geometry, platform.coldplug, platform.unplug_timeouts
                    )
                    for rule in platform.fault_rules():  # [[platform.fault]]: in force from the first call
                        created.add_fault_rule(rule)
        elif DEFAULT_PLATFORM not in kept:
            platforms.create(DEFAULT_PLATFORM, default_geometry())
        server = PaprServer(
            platforms, listen, max_workers=options.max_workers, security=security,
            metrics_listen=metrics_listen,
            access_log=bool(options.access_log if options.access_log is not None else config.access_log),
            record=options.record or config.record,
        )  # fmt: skip
    except (SecurityError, PlatformError, ValueError, StateError) as error:
        # Unsafe or unreadable security settings, a bad platform, a limit or --max-workers not positive,
        # a state directory in use by another server.
        print(f"papr-emu: {error}", file=sys.stderr)
        return 2
    try:
        server.start()
    except ListenError as error:
        print(f"papr-emu: {error}", file=sys.stderr)
        return 2
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("server.signal", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping.wait(0.5):
        pass
    server.stop(options.grace)
    if state is not None:
        state.close()
    return 0


def _complete(parser: argparse.ArgumentParser) -> None:
    """Print the completions and exit, if argcomplete is installed (``pip install 'papr-emu[completion]'``).

    Bash: ``eval "$(register-python-argcomplete papr-emu)"``; zsh and fish: see argcomplete's docs.
    Imported only here: a command that is not completing pays nothing for it.
    """
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:  # the server's start: no entry-point scan, no client commands (faster)
        return serve(build_parser({}, client_commands=False).parse_args(args))
    plugins = plugin_commands()
    if args and args[0] in plugins:
        # The plugin parses everything after its name itself (its options and --help included).
        plugin_main: Callable[[list[str]], int] = plugins[args[0]].load()
        return plugin_main(args[1:])
    parser = build_parser(plugins)
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions of the line it holds
        _complete(parser)
    options = parser.parse_args(args)
    if options.command == "serve":
        return serve(options)
    from papr_emu_client import cli as client_cli

    return client_cli.run(options)


if __name__ == "__main__":
    sys.exit(main())
