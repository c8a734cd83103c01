"""``salvo node``: run a node (the supervisor and its actor processes)."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path


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
    from salvo.actors.node import core_main, open_spool
    from salvo.actors.signer import keys_from_config, signer_main
    from salvo.actors.supervisor import Supervisor, runtime_dir
    from salvo.core.compose import Composer
    from salvo.core.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config_path = str(args.config) if args.config else None
    config = load_config(config_path)
    # Fail here, with a clear message, rather than in every signer process.
    composer = Composer(keys_from_config(config), clock=time.time)
    for domain in config.dkim:
        composer.signers_for(domain.lower())
    open_spool(config).close()  # a data dir that is not a salvo store is refused here
    signers = args.signers if args.signers is not None else config.signer_count()
    run_dir = runtime_dir()
    endpoint = f"ipc://{run_dir}/work"
    supervisor = Supervisor()
    supervisor.add("core", core_main, config_path, endpoint, hub=True)
    for i in range(signers):
        supervisor.add(f"signer-{i}", signer_main, config_path, endpoint, i)
    print(
        f"salvo node: {signers} signer(s); producers: {config.ingress.listen}; "
        f"events: {config.events.publish}; data: {config.data_dir}",
        file=sys.stderr,
    )
    try:
        return supervisor.run()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
