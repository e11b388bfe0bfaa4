"""Command line: ``gateway run | check | demo | explain | hash-password | keys generate |
sessions revoke``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.bundle import Bundle, load
from gateway.config import ConfigError, load_settings
from gateway.config.settings import Settings
from gateway.demo import ANY_PORT, demo_main
from gateway.describe import describe_access, describe_match
from gateway.explain import explain
from gateway.ops import MULTIPROC_ENV
from gateway.passwords import hash_password
from gateway.revoke_cli import RevokeError, revoke_user
from gateway.server import serve
from gateway.tokens import generate_hmac_secret, generate_private_key, write_private_key


def _config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("GATEWAY_CONFIG") or "config.yaml")


def _load_settings(arg: str | None) -> Settings | None:
    """The configuration file alone (the YAML, checked), without the files it names."""
    path = _config_path(arg)
    try:
        return load_settings(path)
    except ConfigError as exc:
        _print_issues(path, exc)
        return None


def _load(arg: str | None, *, generate_key: bool = False) -> Bundle | None:
    """The configuration whole: the users and keys it names read and checked too; every
    problem of them all is printed, in file order."""
    path = _config_path(arg)
    try:
        return load(path, generate_key=generate_key)
    except ConfigError as exc:
        _print_issues(path, exc)
        return None


def _print_issues(path: Path, exc: ConfigError) -> None:
    print(f"{path}: invalid configuration ({len(exc.issues)} error(s)):", file=sys.stderr)
    for issue in exc.issues:
        line = f" (line {issue.line})" if issue.line is not None else ""
        print(f"  {issue}{line}", file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the configuration and print the route table and warnings."""
    bundle = _load(args.config)
    if bundle is None:
        return 1
    settings = bundle.settings
    rows = [("NAME", "MATCH", "ACCESS", "UPSTREAM")]
    for route in settings.routes:
        upstream = settings.upstreams[route.upstream]
        rows.append(
            (
                route.name,
                describe_match(route.match),
                describe_access(route.access),
                f"{upstream.name} ({upstream.url})",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    public_url = settings.server.public_url
    for provider in settings.login.oidc:
        # What to register at the provider for this client.
        print(
            f"sign-in provider {provider.name}: {provider.issuer} (client {provider.client_id}); "
            f"redirect URI {public_url}/.gateway/oidc/callback, post-logout redirect URI "
            f"{public_url}/.gateway/login, back-channel logout URI "
            f"{public_url}/.gateway/oidc/{provider.name}/backchannel-logout"
        )
    warnings = bundle.warnings
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"configuration OK: {len(settings.routes)} route(s), {len(warnings)} warning(s)")
    return 0


_OWNS_METRICS_DIR = "GATEWAY_OWNS_METRICS_DIR"


def cmd_run(args: argparse.Namespace) -> int:
    """Serve (see :mod:`gateway.server`)."""
    # Before any worker starts, so that a generated key is created once and shared.
    bundle = _load(args.config, generate_key=True)
    if bundle is None:
        return 1
    if bundle.settings.server.workers > 1 and MULTIPROC_ENV not in os.environ:
        # prometheus_client picks its storage when first imported, which loading the config
        # already did: start again with a shared metrics directory so every worker's counts
        # add up in one scrape.
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ[_OWNS_METRICS_DIR] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "gateway", *sys.argv[1:]])  # noqa: S606
    return serve(bundle)


MIN_PASSWORD_CHARS = 8
"""Shortest password ``gateway hash-password`` hashes without ``--allow-short``."""


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Read a password (no echo on a TTY, else one line from stdin); print an argon2id hash.

    Refuses one shorter than :data:`MIN_PASSWORD_CHARS` characters unless ``--allow-short``."""
    tty = sys.stdin.isatty()
    if tty:
        password = getpass.getpass("Password: ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        print("gateway hash-password: empty password", file=sys.stderr)
        return 1
    if len(password) < MIN_PASSWORD_CHARS and not args.allow_short:
        print(
            f"gateway hash-password: the password has {len(password)} characters; use at "
            f"least {MIN_PASSWORD_CHARS} (or --allow-short to hash it anyway)",
            file=sys.stderr,
        )
        return 1
    if tty and getpass.getpass("Again: ") != password:
        print("gateway hash-password: the passwords differ", file=sys.stderr)
        return 1
    try:
        print(hash_password(password))
    except ValueError as exc:
        print(f"gateway hash-password: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """Write a new private signing key (PEM, mode 0600) and print its kid; with ``--alg HS256``
    a 32-byte random secret for ``hmac_secret_file`` instead (``--out`` required)."""
    if args.alg == "HS256":
        if args.out is None:
            print(
                "gateway keys generate: an HS256 secret is 32 raw bytes, not text: give "
                "--out FILE (written with mode 0600)",
                file=sys.stderr,
            )
            return 1
        key, kid = generate_hmac_secret()
    else:
        key, kid = generate_private_key(args.alg)
    if args.out is None:
        sys.stdout.write(key.decode("ascii"))
        print(f"kid: {kid}", file=sys.stderr)
        return 0
    try:
        write_private_key(Path(args.out), key, overwrite=args.force)
    except FileExistsError:
        print(
            f"gateway keys generate: {args.out} exists (use --force to replace it)", file=sys.stderr
        )
        return 1
    except OSError as exc:
        print(f"gateway keys generate: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(kid)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Which route matches, the decision, the upstream URL and the JWT claims for one request."""
    bundle = _load(args.config)
    if bundle is None:
        return 1
    try:
        report = explain(
            bundle,
            args.method,
            args.url,
            user=args.user,
            headers=args.header,
            idp=args.idp,
            claims=args.claim,
        )
        sys.stdout.write(report)
    except ValueError as exc:
        print(f"gateway explain: {exc}", file=sys.stderr)
        return 1
    return 0


_COOKIE_CANNOT_REVOKE = (
    "gateway sessions revoke: the cookie session backend keeps no sessions on the server: each\n"
    "session lives sealed in its browser's cookie, so a user's sessions cannot be found to end\n"
    "them. To end {user}'s sessions now, on every replica:\n"
    "  - give the user a new password_hash and reload every gateway process (SIGHUP): every\n"
    "    session and API token begun with the old credentials is refused, for good;\n"
    "  - or set `disabled: true` and reload: refused while the user stays disabled (enabled\n"
    "    again, a restarted process takes their unexpired cookies back);\n"
    "  - or rotate session.cookie.secret_file and reload: this ends EVERYONE's sessions.\n"
    "Use session.backend redis to revoke one user's sessions without either."
)


def cmd_sessions_revoke(args: argparse.Namespace) -> int:
    """End every session of a user (memory: through the admin listener; redis: in Redis, for
    every replica; cookie: impossible, and says what to do instead)."""
    settings = _load_settings(args.config)
    if settings is None:
        return 1
    if settings.session.backend == "cookie":
        print(_COOKIE_CANNOT_REVOKE.format(user=args.user), file=sys.stderr)
        return 1
    try:
        ended = asyncio.run(revoke_user(settings, args.user))
    except RevokeError as exc:
        print(f"gateway sessions revoke: {exc}", file=sys.stderr)
        return 1
    print(f"ended {ended} session(s) of {args.user}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve config.example.yaml in front of the bundled demo upstream; with ``--port`` the
    gateway listens there and the demo upstream on any free port."""
    if args.port is None:
        return demo_main()
    return demo_main(gateway_port=args.port, upstream_port=ANY_PORT)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Authentication reverse proxy.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    config_help = "configuration file (default: $GATEWAY_CONFIG, then ./config.yaml)"

    run = sub.add_parser("run", help="serve")
    run.add_argument("-c", "--config", help=config_help)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate the configuration and print the route table")
    check.add_argument("-c", "--config", help=config_help)
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser(
        "demo", help="serve config.example.yaml in front of a demo app that shows what it received"
    )
    demo.add_argument(
        "--port",
        type=_port,
        help="serve the gateway on this port of 127.0.0.1 (default 8080) and the demo app on any "
        "free port (default 9000)",
    )
    demo.set_defaults(func=cmd_demo)

    explain = sub.add_parser(
        "explain", help="which route matches a request, the decision and the JWT claims"
    )
    explain.add_argument("-c", "--config", help=config_help)
    explain.add_argument("method", metavar="METHOD")
    explain.add_argument("url", metavar="URL", help="absolute URL, or a path on public_url")
    explain.add_argument("--user", help="decide for this user (default: anonymous)")
    explain.add_argument(
        "--idp",
        metavar="NAME",
        help="the user signed in at this OpenID Connect provider (login.oidc) instead",
    )
    explain.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with --idp: a claim of the provider's ID token, e.g. groups=admin or "
        "email=a@example.com; repeat a name for a list",
    )
    explain.add_argument(
        "--header",
        "-H",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header that takes part in the decision (Host, Accept, Origin, Upgrade, "
        "Connection); repeat for more",
    )
    explain.set_defaults(func=cmd_explain)

    hash_pw = sub.add_parser(
        "hash-password", help="read a password and print an argon2id hash for users.*"
    )
    hash_pw.add_argument(
        "--allow-short",
        action="store_true",
        help=f"hash a password shorter than {MIN_PASSWORD_CHARS} characters too",
    )
    hash_pw.set_defaults(func=cmd_hash_password)

    sessions = sub.add_parser("sessions", help="sessions of running gateways")
    sessions_sub = sessions.add_subparsers(
        dest="sessions_command", metavar="COMMAND", required=True
    )
    revoke = sessions_sub.add_parser("revoke", help="end every session of a user")
    revoke.add_argument("user", metavar="USER")
    revoke.add_argument("-c", "--config", help=config_help)
    revoke.set_defaults(func=cmd_sessions_revoke)

    keys = sub.add_parser("keys", help="signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    generate = keys_sub.add_parser(
        "generate", help="write a new private signing key, or an HS256 secret"
    )
    generate.add_argument("--alg", choices=("EdDSA", "ES256", "RS256", "HS256"), default="EdDSA")
    generate.add_argument(
        "--out",
        help="file to write (mode 0600): a PEM private key, default stdout; with HS256 (required) "
        "32 random bytes for tokens.signing_keys[].hmac_secret_file",
    )
    generate.add_argument("--force", action="store_true", help="replace an existing --out file")
    generate.set_defaults(func=cmd_keys_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
