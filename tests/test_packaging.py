"""The package a user installs: one top-level name, a working `pool` command, typed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools builds in the source's build/, and two test processes
    # building at once (pytest-xdist) took each other's files away mid-build.
    source = out / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                                                 ".*_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source),
                    "-w", str(out)], check=True, capture_output=True)
    (built,) = out.glob("spoolpool-*.whl")
    return built


def test_the_wheel_holds_only_pool_at_top_level_and_is_typed(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"pool"}
    assert "pool/py.typed" in names and "pool/cli/main.py" in names and "pool/__main__.py" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata and "Classifier: Typing :: Typed" in metadata
    # The dashboard ships with its pages; what it needs comes only with the web extra.
    assert {"pool/web/templates/jobs.html", "pool/web/static/dashboard.js"} <= set(names)
    core = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert sorted(line.split()[1].split(">")[0] for line in core) == ["click", "orjson", "rich", "watchdog"]


def test_the_installed_command_works_in_a_fresh_environment(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # pip installs the wheel into the fresh environment (console script and all); its
    # dependencies are borrowed from the test environment (a path, not a site dir: no
    # editable finder comes along), so this needs no network.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    str(wheel)], check=True, capture_output=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    top = {p.name for p in Path(site).iterdir() if not p.name.endswith((".dist-info", ".pth", "__pycache__"))}
    assert top == {"pool"}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "POOL_SPOOL")}
    for argv in ([str(env_dir / "bin" / "pool"), "--help"], [str(python), "-m", "pool", "--help"],
                 [str(python), "-m", "pool.cli", "--version"]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    where = subprocess.run([str(python), "-c", "import pool; print(pool.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, check=True).stdout
    assert where.startswith(site)


def test_python_m_pool_runs_the_command_line() -> None:
    result = subprocess.run([sys.executable, "-m", "pool", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Background jobs with tracking" in result.stdout
