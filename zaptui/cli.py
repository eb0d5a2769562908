"""The `zaptui` command: the console, the headless scheduler, and scripting.

Exit status: 0 on success, 1 when the work failed, 2 for bad usage. Errors are
one line naming what to do; a traceback is never shown.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from zaptui import __version__

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage: exit status 2."""


class WorkFailed(Exception):
    """The work was attempted and failed: exit status 1."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose complaints are one line (exit status 2).

    Options must be spelled out: `--password` is not taken for
    `--password-env`, so a secret typed after it is never read as a name.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raise UsageError instead of printing the usage and exiting."""
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            # A stray value may be a password typed inline: name options only.
            options = [
                word.partition("=")[0]
                for word in message[len(prefix) :].split()
                if word.startswith("-")
            ]
            message = "unrecognised arguments" + (
                f" {' '.join(options)}" if options else ""
            )
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class _OneLine(logging.Formatter):
    """Log records as one line each, without tracebacks."""

    def format(self, record: logging.LogRecord) -> str:
        """The record's message on one line."""
        return _one_line(f"{record.levelname.lower()}: {record.getMessage()}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _debug() -> bool:
    return bool(os.environ.get("ZAPTUI_DEBUG"))


def _configure_logging(command: str) -> None:
    """Errors nothing else reports to stderr, one line each.

    A command prints its own outcome, so retries and the sync's own summary
    stay out of the way; ZAPTUI_DEBUG=1 shows everything, tracebacks too.
    """
    handler = logging.StreamHandler(sys.stderr)
    if _debug():
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=logging.DEBUG, handlers=[handler])
        from zaptui.headless import quiet_sql_echo

        quiet_sql_echo()
        return
    handler.setFormatter(_OneLine())
    logging.basicConfig(level=logging.ERROR, handlers=[handler])
    if command == "sync":
        logging.getLogger("zaptui.sync.engine").setLevel(logging.CRITICAL)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every mode and command."""
    parser = _Parser(
        prog="zaptui",
        description="Operator console and sync service for ZAP~POST's Klaviyo "
        "integration. With no command, opens the console.",
    )
    parser.add_argument("--version", action="version", version=f"zaptui {__version__}")
    parser.add_argument("--db", metavar="URL", help="database URL (or ZAPTUI_DB)")
    parser.add_argument(
        "--klaviyo-url", metavar="URL", help="Klaviyo base URL (or ZAPTUI_KLAVIYO_URL)"
    )
    parser.add_argument(
        "--zap-url", metavar="URL", help="ZAP~POST base URL (or ZAPTUI_ZAP_URL)"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="open the console on a demo database and the built-in simulators",
    )
    parser.add_argument(
        "--run-scheduler",
        action="store_true",
        help="run the sync scheduler without a screen",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="with --run-scheduler: run everything due, then exit",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="with --run-scheduler: log line format",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    account = commands.add_parser("account", help="Klaviyo accounts").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    add = account.add_parser("add", help="pair a Klaviyo account")
    add.add_argument(
        "--api-key-env",
        metavar="VAR",
        required=True,
        help="name of the environment variable holding the private key",
    )
    account_list = account.add_parser("list", help="list paired accounts")
    account_list.add_argument("--json", action="store_true")
    for name, text in (("recheck", "check a key again"), ("remove", "unpair")):
        sub = account.add_parser(
            name,
            help=f"{text} (removing also removes its data connections)"
            if name == "remove"
            else text,
        )
        sub.add_argument("account_id", type=int, metavar="ID")

    connection = commands.add_parser(
        "connection", help="data connections"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    cadd = connection.add_parser("add", help="pair a list or segment with a campaign")
    cadd.add_argument("--account", type=int, required=True, metavar="ID")
    source = cadd.add_mutually_exclusive_group(required=True)
    source.add_argument("--list", metavar="ID", dest="list_id")
    source.add_argument("--segment", metavar="ID", dest="segment_id")
    cadd.add_argument("--campaign", required=True, metavar="ID")
    cadd.add_argument("--name", metavar="TEXT")
    cadd.add_argument("--new-joiners-only", action="store_true")
    clist = connection.add_parser("list", help="list data connections")
    clist.add_argument("--json", action="store_true")
    for name in ("pause", "resume", "remove"):
        sub = connection.add_parser(name, help=f"{name} a data connection")
        sub.add_argument("connection_id", type=int, metavar="ID")
    cmap = connection.add_parser(
        "map",
        help="show a data connection's mapping, or change which profile field "
        "fills each campaign field",
    )
    cmap.add_argument("connection_id", type=int, metavar="ID")
    cmap.add_argument(
        "pairs",
        nargs="*",
        metavar="FIELD=PATH",
        help="fill FIELD from the profile path PATH (`first_name`, "
        "`properties.tier`); `FIELD=` leaves it not mapped",
    )
    cmap.add_argument("--json", action="store_true")

    sync = commands.add_parser("sync", help="sync one data connection now")
    sync.add_argument("connection_id", type=int, metavar="CONNECTION_ID")
    sync.add_argument("--json", action="store_true")

    settings_parser = commands.add_parser("settings", help="settings").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    sset = settings_parser.add_parser("set", help="change a setting")
    sset.add_argument(
        "key",
        choices=(
            "sync-frequency",
            "fix-address-data",
            "hold-back-days",
            "lookback-hours",
            "retention-days",
            "alert-webhook",
        ),
    )
    sset.add_argument("value")
    sshow = settings_parser.add_parser("show", help="show the settings")
    sshow.add_argument("--json", action="store_true")

    zap = commands.add_parser("zap", help="ZAP~POST credentials").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    login = zap.add_parser("login", help="store the ZAP~POST API credentials")
    login.add_argument("--api-key-env", metavar="VAR", required=True)
    login.add_argument("--password-env", metavar="VAR", required=True)
    login.add_argument("--name", metavar="TEXT", default="")
    campaigns = zap.add_parser("campaigns", help="list ZAP~POST campaigns")
    campaigns.add_argument("--json", action="store_true")

    simulate = commands.add_parser(
        "simulate", help="serve the Klaviyo and ZAP~POST simulators over HTTP"
    )
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8025)
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--profiles", type=int, default=1000)
    simulate.add_argument("--faulty-share", type=float, default=0.1)
    simulate.add_argument(
        "--no-rate-limits", action="store_true", help="serve without rate limits"
    )

    ssh = commands.add_parser(
        "serve-ssh", help="serve the console to operators over SSH"
    )
    ssh.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ssh.add_argument("--port", type=int, default=8022)
    ssh.add_argument(
        "--authorized-keys",
        metavar="PATH",
        required=True,
        help="the operators' public keys, one per line (OpenSSH format)",
    )
    ssh.add_argument(
        "--host-key",
        metavar="PATH",
        help="the server's private host key (created if missing; default: in "
        "the user data folder)",
    )

    commands.add_parser("secret-key", help="print a new key for ZAPTUI_SECRET_KEY")
    return parser


def _refuse_inline_secrets(argv: Sequence[str]) -> None:
    for arg in argv:
        value = arg.partition("=")[2] if arg.startswith("--") else arg
        if value.startswith("pk_") or arg.startswith(("--api-key=", "--password=")):
            raise UsageError(
                "refusing a secret on the command line (it would land in shell "
                "history): put it in an environment variable and pass "
                "--api-key-env VAR"
            )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_secret(var: str, what: str) -> str:
    if not _ENV_NAME.fullmatch(var):
        # Likely the secret itself typed where its variable's name belongs:
        # never repeat it back.
        raise UsageError(
            f"give the NAME of an environment variable holding the {what} "
            "(e.g. KLAVIYO_KEY), not the value itself"
        )
    value = os.environ.get(var, "").strip()
    if not value:
        raise UsageError(
            f"environment variable {var} is empty or not set: put the {what} in it"
        )
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    """Open the database and build the services for a command."""
    import peewee

    from zaptui.runtime import Runtime
    from zaptui.services import Services
    from zaptui.store.db import database_url_from_env, describe_url, open_database

    url = database_url_from_env(args.db)
    try:
        open_database(url)
    except (peewee.PeeweeException, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise WorkFailed(
            f"cannot open the database {describe_url(url)}: "
            f"{first or type(error).__name__}; check --db or ZAPTUI_DB"
        ) from None
    runtime = Runtime.from_env(args.klaviyo_url, args.zap_url)
    return runtime, Services(runtime)


def _account_row(account: Any) -> dict[str, Any]:
    return {
        "id": account.id,
        "klaviyo_id": account.klaviyo_id,
        "name": account.name,
        "status": account.status,
        "reason": account.status_reason,
        "data_connections": account.connections.count(),
        "connected_at": account.connected_at,
        "checked_at": account.checked_at,
    }


def _connection_row(connection: Any) -> dict[str, Any]:
    return {
        "id": connection.id,
        "account_id": connection.account_id,
        "connected_data": connection.source_name,
        "name": connection.name,
        "type": connection.source_type,
        "source_id": connection.source_id,
        "campaign_id": connection.campaign_id,
        "campaign": connection.campaign_name,
        "status": connection.status,
        "last_submission_at": connection.last_submission_at,
        "last_error": connection.last_error,
    }


def _printable(text: str) -> str:
    """Names as one line that cannot drive the terminal (escape sequences gone)."""
    from zaptui.domain.address import clean_text

    return clean_text(text)[0]


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    from zaptui.clock import format_utc

    def cell(value: Any) -> str:
        if hasattr(value, "isoformat"):
            return format_utc(value)
        return _printable("" if value is None else str(value))

    cells = [[cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def cmd_account(args: argparse.Namespace) -> int:
    """`zaptui account ...`."""
    _, services = _open(args)
    if args.action == "add":
        key = _env_secret(args.api_key_env, "Klaviyo private key")
        account = services.connect_account(key)
        state = account.status
        if account.status_reason:
            state += f": {account.status_reason}"
        name = _printable(account.name)
        print(f"paired Klaviyo account {account.id}: {name} ({state})")
        return EXIT_OK if account.status == "connected" else EXIT_FAILED
    if args.action == "list":
        rows = [_account_row(a) for a in services.accounts()]
        if args.json:
            _print_json(rows)
        else:
            _table(rows, ("id", "name", "klaviyo_id", "status", "data_connections"))
        return EXIT_OK
    if args.action == "recheck":
        account = services.recheck_account(args.account_id)
        print(
            f"account {account.id}: {account.status} {account.status_reason}".rstrip()
        )
        return EXIT_OK if account.status == "connected" else EXIT_FAILED
    removed = services.disconnect_account(args.account_id)
    print(
        f"unpaired account {args.account_id} and removed {removed} data connection(s)"
    )
    return EXIT_OK


def cmd_connection(args: argparse.Namespace) -> int:
    """`zaptui connection ...`."""
    if args.action == "map":
        return _connection_map(args)
    _, services = _open(args)
    if args.action == "add":
        source_type = "list" if args.list_id else "segment"
        connection = services.create_connection(
            args.account,
            source_type,
            args.list_id or args.segment_id,
            args.campaign,
            name=args.name,
            new_joiners_only=args.new_joiners_only,
        )
        name = _printable(connection.name)
        print(f"created data connection {connection.id}: {name}")
        return EXIT_OK
    if args.action == "list":
        rows = [_connection_row(c) for c in services.connections()]
        if args.json:
            _print_json(rows)
        else:
            _table(
                rows,
                (
                    "id",
                    "connected_data",
                    "name",
                    "type",
                    "last_submission_at",
                    "status",
                ),
            )
        return EXIT_OK
    action: Callable[[int], Any] = getattr(services, args.action)
    action(args.connection_id)
    verb = {"pause": "paused", "resume": "resumed", "remove": "removed"}[args.action]
    print(f"data connection {args.connection_id} {verb}")
    return EXIT_OK


def _mapping_changes(pairs: Sequence[str]) -> dict[str, str]:
    """FIELD=PATH arguments as campaign field -> profile path ("" unmaps)."""
    changes: dict[str, str] = {}
    for pair in pairs:
        field, equals, path = pair.partition("=")
        if not equals or not field.strip():
            raise UsageError(
                f"{_printable(pair)!r} is not FIELD=PATH (`FIELD=` unmaps a field)"
            )
        changes[field.strip()] = path.strip()
    return changes


def _connection_map(args: argparse.Namespace) -> int:
    """`zaptui connection map ID [FIELD=PATH ...]`: show or change a mapping.

    The pairs change the mapping as it is; the services refuse a mapping that
    leaves a required campaign field empty or names no profile field.
    """
    changes = _mapping_changes(args.pairs)
    _, services = _open(args)
    mapping = services.mapping(args.connection_id)
    if changes:
        mapping = services.update_mapping(args.connection_id, mapping | changes)
        if not args.json:
            done = ", ".join(
                f"{field}={path}" if path else f"{field} not mapped"
                for field, path in changes.items()
            )
            saved = f"mapping of data connection {args.connection_id} saved"
            print(f"{saved}: {_printable(done)}")
            return EXIT_OK
    if args.json:
        _print_json(mapping)
    else:
        rows = [
            {"campaign_field": field, "profile_field": path}
            for field, path in sorted(mapping.items())
        ]
        _table(rows, ("campaign_field", "profile_field"))
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    """`zaptui sync ID`: run now and print the counts."""
    from zaptui.sync.engine import SyncBusy, SyncRefused

    _, services = _open(args)
    services.recover()
    try:
        run = services.sync_now(args.connection_id)
    except (SyncRefused, SyncBusy) as error:
        raise WorkFailed(str(error)) from None
    summary = {
        "sync_id": run.id,
        "connection_id": args.connection_id,
        "status": run.status,
        "trigger": run.trigger,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "pages": run.pages,
        "fetched": run.fetched,
        "imported": run.imported,
        "failed": run.failed,
        "skipped_duplicate": run.skipped_duplicate,
        "rejected_by_zappost": len(run.rejected_records or []),
        "address_updates_failed": run.address_updates_failed,
        "submission_id": run.submission_id,
        "submission_url": run.submission_url,
        "error": run.error,
    }
    if args.json:
        _print_json(summary)
    else:
        print(
            f"sync {run.id} {run.status}: fetched {run.fetched}, imported "
            f"{run.imported}, failed {run.failed}, skipped as duplicate "
            f"{run.skipped_duplicate}"
            + (f", submission {run.submission_id}" if run.submission_id else "")
        )
        if run.submission_url:
            print(f"  {run.submission_url}")
        if run.error:
            print(f"  {_one_line(run.error)}")
    return EXIT_FAILED if run.status in ("failed", "interrupted") else EXIT_OK


def cmd_settings(args: argparse.Namespace) -> int:
    """`zaptui settings ...`."""
    from zaptui import settings

    _, services = _open(args)
    if args.action == "show":
        values = {key: settings.get(key) for key in settings.SPECS}
        values.pop("zap_api_password_encrypted", None)
        if args.json:
            _print_json(values)
        else:
            for key, value in values.items():
                print(f"{settings.SPECS[key].label}: {value}")
        return EXIT_OK
    parsers: dict[str, tuple[str, Callable[[str], Any]]] = {
        "sync-frequency": ("sync_frequency_hours", settings.parse_frequency),
        "fix-address-data": ("fix_address_data", settings.parse_switch),
        "hold-back-days": ("hold_back_days", _whole),
        "lookback-hours": ("lookback_hours", _whole),
        "retention-days": ("retention_days", _whole),
        "alert-webhook": ("alert_webhook_url", str),
    }
    key, parse = parsers[args.key]
    try:
        value = services.set_setting(key, parse(args.value))
    except settings.SettingError as error:
        raise UsageError(f"{args.key}: {error}") from None
    print(f"{settings.SPECS[key].label} set to {value}")
    return EXIT_OK


def _whole(text: str) -> int:
    from zaptui.settings import SettingError

    try:
        return int(text)
    except ValueError:
        raise SettingError("expected a whole number") from None


def cmd_zap(args: argparse.Namespace) -> int:
    """`zaptui zap ...`."""
    _, services = _open(args)
    if args.action == "login":
        services.save_zap_credentials(
            _env_secret(args.api_key_env, "ZAP~POST API key"),
            _env_secret(args.password_env, "ZAP~POST API password"),
            args.name,
        )
        print("ZAP~POST credentials stored (the password encrypted)")
        return EXIT_OK
    campaigns = services.campaigns()
    if args.json:
        _print_json(campaigns)
    else:
        _table(
            [
                {"id": c.get("id"), "name": c.get("name"), "status": c.get("status")}
                for c in campaigns
            ],
            ("id", "name", "status"),
        )
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    """`zaptui simulate`: serve both simulators on one port."""
    from zaptui.sim.server import run_simulator

    if args.profiles < 0 or not 0 <= args.faulty_share <= 1:
        raise UsageError("--profiles must be ≥ 0 and --faulty-share between 0 and 1")
    run_simulator(
        args.host,
        args.port,
        seed=args.seed,
        profiles=args.profiles,
        faulty_share=args.faulty_share,
        rate_limits=not args.no_rate_limits,
    )
    return EXIT_OK


def cmd_serve_ssh(args: argparse.Namespace) -> int:
    """`zaptui serve-ssh`: each operator's SSH session gets its own console."""
    from pathlib import Path

    import platformdirs

    from zaptui.ssh import serve

    authorized = Path(args.authorized_keys)
    if not authorized.is_file():
        raise UsageError(
            f"no authorized keys file at {authorized}: list the operators' "
            "public keys there, one per line"
        )
    host_key = Path(
        args.host_key or Path(platformdirs.user_data_dir("zaptui")) / "ssh_host_key"
    )
    console_args: list[str] = []
    for flag, value in (
        ("--db", args.db),
        ("--klaviyo-url", args.klaviyo_url),
        ("--zap-url", args.zap_url),
    ):
        if value:
            console_args += [flag, value]
    if args.demo:
        console_args.append("--demo")
    logging.getLogger("zaptui.ssh").setLevel(logging.INFO)
    serve(
        args.host,
        args.port,
        host_key=host_key,
        authorized_keys=authorized,
        console_args=console_args,
    )
    return EXIT_OK


def cmd_secret_key(args: argparse.Namespace) -> int:
    """`zaptui secret-key`: a new Fernet key."""
    from zaptui.store.secrets import new_key

    print(new_key())
    return EXIT_OK


def run_console(args: argparse.Namespace) -> int:
    """Open the console (on the demo when asked)."""
    from zaptui.ui.launch import launch_console

    return launch_console(args)


def run_headless(args: argparse.Namespace) -> int:
    """Run the scheduler without a screen."""
    from zaptui.headless import run_headless_scheduler

    return run_headless_scheduler(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "account": cmd_account,
    "connection": cmd_connection,
    "sync": cmd_sync,
    "settings": cmd_settings,
    "zap": cmd_zap,
    "simulate": cmd_simulate,
    "serve-ssh": cmd_serve_ssh,
    "secret-key": cmd_secret_key,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `zaptui` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        _refuse_inline_secrets(argv)
        args = parser.parse_args(argv)
        if args.once and not args.run_scheduler:
            raise UsageError("--once only goes with --run-scheduler")
        if args.command:
            if args.command != "simulate":
                _configure_logging(args.command)
            return COMMANDS[args.command](args)
        if args.run_scheduler:
            return run_headless(args)
        return run_console(args)
    except UsageError as error:
        print(f"zaptui: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED
    except Exception as error:  # every failure is one line, never a traceback
        return _report_failure(error)


def _report_failure(error: Exception) -> int:
    from zaptui.runtime import ConfigurationError
    from zaptui.services import ServiceError
    from zaptui.settings import SettingError
    from zaptui.store.db import DatabaseUrlError
    from zaptui.store.secrets import SecretKeyError

    if isinstance(error, SettingError | DatabaseUrlError):
        print(f"zaptui: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    known = (WorkFailed, ServiceError, ConfigurationError, SecretKeyError)
    if isinstance(error, known):
        print(f"zaptui: {_one_line(str(error))}", file=sys.stderr)
    else:
        if _debug():
            traceback.print_exception(error, file=sys.stderr)
        print(
            f"zaptui: {type(error).__name__}: {_one_line(str(error))} "
            "(set ZAPTUI_DEBUG=1 for details)",
            file=sys.stderr,
        )
    return EXIT_FAILED
