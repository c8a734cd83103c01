"""``salvo node``: run a node (the supervisor and its actor processes)."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from salvo.core.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "node",
        help="run a node: take jobs over ZeroMQ, deliver them over SMTP",
        description=(
            "Run a salvo node. Without --config it runs with the embedded default "
            "(data in ./salvo-data, producers on tcp://127.0.0.1:5557, events on "
            "tcp://127.0.0.1:5558); see salvo.example.toml. SIGTERM or Ctrl-C drains and stops."
        ),
    )
    parser.add_argument("--config", type=Path, help="TOML config file")
    parser.add_argument("--signers", type=int, help="signer processes (overrides the config)")
    parser.set_defaults(func=run_node)


def run_node(args: argparse.Namespace) -> int:
    """Start the node; a failure to start is one line on stderr and a non-zero status:
    2 when the config is wrong, 1 when the node cannot start with it (docs/cli.md)."""
    from salvo.actors.supervisor import describe_failure

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        return _run_node(args)
    except Exception as exc:
        message, status = describe_failure(exc)
        logging.getLogger("salvo.node").debug("start-up failure", exc_info=True)
        print(f"salvo node: {message}", file=sys.stderr)
        return status


def _feedback_secret(config: Config) -> None:
    """Make ``[feedback] secret_file`` on the first start (32 random bytes, mode 0600),
    before any actor reads it, and check that it can be read."""
    from salvo.core import host
    from salvo.core.errors import StartupError
    from salvo.core.feedback.outbound import load_secret

    path = config.feedback_secret_path
    try:
        if host.create_secret_file(path):
            logging.getLogger("salvo.node").info("made the feedback secret %s", path)
    except OSError as exc:
        raise StartupError(
            f"[feedback] secret_file {path}: cannot create it: {exc.strerror or exc}"
        ) from exc
    load_secret(config)


def _http_token(config: Config) -> None:
    """Make ``[http] token_file`` and the ``[http.tokens]`` files on the first start (a
    random URL-safe token, mode 0600, written beside it then linked into place: never half
    a file, never replaced)."""
    from salvo.core import host
    from salvo.core.errors import StartupError

    for name, (path, role) in config.http_tokens().items():
        try:
            if not host.create_secret_file(path, text=True):
                continue
        except OSError as exc:
            where = "[http] token_file" if name == "admin" else f"[http.tokens.{name}] file"
            raise StartupError(f"{where} {path}: cannot create it: {exc.strerror or exc}") from exc
        logging.getLogger("salvo.node").info("made the %s token %s (role %s)", name, path, role)


def _curve_key(config: Config) -> str:
    """Make the node's CURVE key pair on the first start (``[ingress] curve_secret_key``
    and its ``.key`` beside it), check every producer and subscriber key file, and return
    the node's public key (for the start-up message)."""
    from salvo.actors.keys import KeyFileError, ensure_pair, read_secret
    from salvo.actors.zap import load_keys
    from salvo.core.errors import StartupError

    path = config.curve_secret_path
    try:
        if ensure_pair(path):
            logging.getLogger("salvo.node").info("made the node's CURVE key pair %s", path)
        public, _ = read_secret(path)
    except (KeyFileError, OSError) as exc:
        raise StartupError(f"[ingress] curve_secret_key: {exc}") from exc
    load_keys(config)  # a KeyFileError names the entry
    return public.decode("ascii")


def _bulk_rules(config: Config, config_path: str | None) -> None:
    """With a bulk traffic class, ``salvo doctor`` runs first: its failures are a warning,
    or refuse the start when a bulk class is ``strict`` (docs/doctor.md)."""
    from salvo.cli.doctor import bulk_check
    from salvo.core.errors import StartupError

    bulk, failed = bulk_check(config)
    if not failed:
        if bulk:
            logging.getLogger("salvo.node").info("salvo doctor: the bulk-sender checks pass")
        return
    command = "salvo doctor" + (f" --config {config_path}" if config_path else "")
    first = failed[0]
    what = f"{first.check} {first.subject}: {first.detail}"
    strict = [name for name in bulk if config.traffic[name].strict]
    if strict:
        raise StartupError(
            f"traffic class {strict[0]!r} is bulk and strict, and {len(failed)} sender-"
            f"authentication check(s) fail, first {what}; `{command}` prints the fixes"
        )
    print(
        f"salvo node: warning: {len(failed)} sender-authentication check(s) that bulk "
        f"traffic ({', '.join(bulk)}) needs fail; `{command}` prints the fixes:",
        file=sys.stderr,
    )
    for r in failed:
        print(f"salvo node: warning:   {r.check} {r.subject}: {r.detail}", file=sys.stderr)


def _webhook_secrets(config: Config) -> None:
    """Make each ``[[webhooks]] secret_file`` on the first start (a random URL-safe
    token, mode 0600, as the admin token), and check that it can be read."""
    from salvo.actors.webhooks import load_secret
    from salvo.core import host
    from salvo.core.errors import StartupError

    for hook in config.webhooks:
        path = config.webhook_secret_path(hook)
        try:
            if host.create_secret_file(path, text=True):
                logging.getLogger("salvo.node").info(
                    "made the secret of webhook %r: %s", hook.name, path
                )
        except OSError as exc:
            raise StartupError(
                f"[[webhooks]] {hook.name!r} secret_file {path}: cannot create it: "
                f"{exc.strerror or exc}"
            ) from exc
        load_secret(path)


def _run_node(args: argparse.Namespace) -> int:
    from salvo.actors.datadir_lock import DataDirLock
    from salvo.actors.node import core_main, open_spool
    from salvo.actors.signer import STOP_NOW, keys_from_config, signer_main
    from salvo.actors.supervisor import Supervisor, describe_failure, runtime_dir
    from salvo.core.compose import Composer
    from salvo.core.config import load_config
    from salvo.core.errors import StartupError
    from salvo.ext.errors import DKIMError

    config_path = str(args.config) if args.config else None
    config = load_config(config_path)
    # Before anything opens the spool, and held until this process exits: the actors are
    # its children and die with it (docs/architecture.md, "Start-up and the data dir lock").
    lock = DataDirLock(config.data_dir).acquire()
    try:
        if config.uses_feedback:
            _feedback_secret(config)
        if config.http.listen:
            _http_token(config)
        _webhook_secrets(config)
        node_key = _curve_key(config) if config.uses_curve else ""
        # Fail here, with a clear message, rather than in every signer process.
        composer = Composer(keys_from_config(config), clock=time.time)
        for domain in config.dkim:
            try:
                composer.signers_for(domain.lower())
            except DKIMError as exc:
                cause = exc.__cause__
                if isinstance(cause, OSError) and cause.filename:
                    raise StartupError(
                        f"DKIM key for {domain}: cannot read {cause.filename}: {cause.strerror}"
                    ) from exc
                raise
        _bulk_rules(config, config_path)
        try:
            # A data dir that is not a salvo store, or another master key, is refused here;
            # the master key file is made here when the data dir encrypts.
            open_spool(config, create_key=True).close()
        except StartupError:
            raise
        except Exception as exc:
            message, _ = describe_failure(exc)
            raise StartupError(f"data dir {config.data_dir}: {message}") from exc
        signers = args.signers if args.signers is not None else config.signer_count()
        run_dir = runtime_dir()
        endpoint = f"ipc://{run_dir}/work"
        supervisor = Supervisor()
        supervisor.add("core", core_main, config_path, endpoint, hub=True, reloads=True)
        for i in range(signers):
            supervisor.add(
                f"signer-{i}", signer_main, config_path, endpoint, i, stop_signal=STOP_NOW
            )

        def started() -> None:
            print(
                f"salvo node: {signers} signer(s); producers: {config.ingress.listen}; "
                f"events: {config.events.publish}; data: {config.data_dir}",
                file=sys.stderr,
            )
            if node_key:
                from salvo.actors.keys import public_path

                secured = " and ".join(
                    what
                    for what, on in (
                        ("producers", config.ingress.curve),
                        ("events", config.events.curve),
                    )
                    if on
                )
                print(
                    f"salvo node: CURVE on for {secured}; the node's public key is {node_key} "
                    f"(file {public_path(config.curve_secret_path)}: give it to producers "
                    "and subscribers)",
                    file=sys.stderr,
                )
            if config.http.listen:
                print(
                    f"salvo node: admin API on http://{config.http.listen} "
                    f"(token in {config.http_token_path})",
                    file=sys.stderr,
                )

        supervisor.on_started = started
        try:
            status = supervisor.run()
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        if supervisor.failure is not None:
            print(f"salvo node: {supervisor.failure}", file=sys.stderr)
        return status
    finally:
        lock.release()
