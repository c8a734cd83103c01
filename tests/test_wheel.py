"""The wheel, installed into a fresh virtual environment, holds every module of salvo and
runs a node that delivers.

The wheel is built by pip from a clean copy of the source: the files a checkout has
(pyproject.toml, setup.py, README.md and the folders of the package-dir mapping), without
the egg-info, build folder or compiled extensions that an editable install leaves in the
working tree, from which setuptools would otherwise pick up files a clean build lacks.
It is installed with its dependencies into a new virtual environment (no system
site-packages, not editable). That environment's interpreter then imports every module of
the installed package, and its ``salvo node`` delivers a message submitted with its
``salvo submit`` to an SMTP sink, then exits 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from nodeutil import AioSink, NodeProcess, NodeSetup, dkim_verify, wait_for

REPO = Path(__file__).resolve().parent.parent
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md")
BUILD_LEFTOVERS = ("__pycache__", "*.egg-info", "build", "*.so", "*.c", "*.html")
INSTALL_TIMEOUT = 900  # seconds: compiling the extensions and fetching dependencies
DELIVERY_BOUND = 90.0

pytestmark = pytest.mark.slow

# Run by the fresh environment's interpreter: every module of the installed package.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
import salvo

def failed(name):
    raise ImportError(f"walk_packages could not import {name}")

names = ["salvo"]
for info in pkgutil.walk_packages(salvo.__path__, "salvo.", onerror=failed):
    names.append(info.name)
files = {}
for name in names:
    if name.rpartition(".")[2] == "__main__":
        continue  # running it is the command line: found, not imported
    files[name] = importlib.import_module(name).__file__
json.dump({"names": names, "files": files, "prefix": sys.prefix}, sys.stdout)
"""


def _leftovers(folder: str, names: list[str]) -> set[str]:
    """What a build leaves in the source, but not the dashboard's page (package data)."""
    ignored = shutil.ignore_patterns(*BUILD_LEFTOVERS)(folder, names)
    if Path(folder).name == "dashboard":
        ignored = {n for n in ignored if not n.endswith(".html")}
    return ignored


def _package_dirs() -> dict[str, str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-dir"]


def _source_modules() -> set[str]:
    """Module names of every .py and .pyx file under the mapped folders of the source."""
    names = set()
    for package, folder in _package_dirs().items():
        root = REPO / folder
        for path in [*root.rglob("*.py"), *root.rglob("*.pyx")]:
            parts = path.relative_to(root).with_suffix("").parts
            if "__pycache__" in parts or "build" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.add(".".join((package, *parts)))
    return names


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with salvo installed from the wheel; its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_FILES:
        shutil.copy2(REPO / name, src / name)
    for folder in sorted(set(_package_dirs().values())):
        shutil.copytree(REPO / folder, src / folder, ignore=_leftovers)
    wheels = tmp / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(src)],
        timeout=INSTALL_TIMEOUT,
    )
    (wheel,) = wheels.glob("salvo-*.whl")
    env_dir = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(env_dir)], timeout=300)
    _run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        timeout=INSTALL_TIMEOUT,
        cwd=tmp,
    )
    return env_dir / "bin"


def _clean_env() -> dict[str, str]:
    """This environment without anything that would put the source tree on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    return env


def test_every_module_of_salvo_imports_from_the_installed_wheel(venv: Path, tmp_path: Path):
    done = _run(
        [str(venv / "python"), "-c", IMPORT_ALL], cwd=tmp_path, env=_clean_env(), timeout=300
    )
    found = json.loads(done.stdout)
    installed = Path(found["prefix"]).resolve()
    assert installed == venv.parent.resolve()
    names = set(found["names"])
    assert {"salvo.core.smtp.client", "salvo.ext.mime", "salvo.ext.dkim"} <= names
    assert {"salvo.testing.sink", "salvo.bench.suite", "salvo.cli.node"} <= names
    missing = _source_modules() - names
    assert not missing, f"in the source but not in the wheel: {sorted(missing)}"
    for name, file in found["files"].items():
        assert Path(file).resolve().is_relative_to(installed), (name, file)
    dashboard = Path(found["files"]["salvo"]).parent / "dashboard"  # package data
    assert {"index.html", "dashboard.js", "dashboard.css"} <= {p.name for p in dashboard.iterdir()}
    mime = found["files"]["salvo.ext.mime"]
    assert mime.endswith(".so"), mime  # the compiled extension, not a source file


def test_the_installed_node_delivers_and_stops_on_sigterm(venv: Path, tmp_path: Path):
    with AioSink("127.0.0.2") as sink:
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address})
        node = NodeProcess(setup)
        with open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen(
                [str(venv / "salvo"), "node", "--config", str(setup.config_path)],
                cwd=setup.root,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            node.wait_ready()
            body = tmp_path / "body.txt"
            body.write_text("Hello from the wheel.\n")
            submitted = _run(
                [
                    *(str(venv / "salvo"), "submit", "--endpoint", setup.endpoint),
                    *("--from", "Acme <news@acme.example>", "--to", "ann@example.org"),
                    *("--subject", "wheel", "--text", str(body)),
                ],
                cwd=tmp_path,
                env=_clean_env(),
                timeout=120,
            )
            reply = json.loads(submitted.stdout.splitlines()[-1])
            assert reply["status"] == "accepted", reply
            (accepted,) = reply["accepted"]
            arrived = wait_for(sink.snapshot, DELIVERY_BOUND, 0.1)
            assert [m.message_id for m in arrived] == [accepted["message_id"]], node.log()
            assert arrived[0].rcpts == ["ann@example.org"]
            assert dkim_verify(arrived[0].content, setup.key_pem)
            assert node.terminate() == 0, node.log()[-3000:]
        finally:
            node.close()
