"""The wheel installs one top-level name, `punchgate`, and works outside the checkout.

Builds the wheel from this checkout, installs it into a fresh venv in a temporary folder that
borrows the test venv's third-party packages (so nothing is downloaded), and runs the
installed command from a folder outside the checkout.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "punchgate.example.toml"


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        out,
        ROOT,
        cwd=out,
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("punchgate-*.whl")
    return path


def test_the_wheel_holds_only_the_punchgate_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"punchgate"}
    packages = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    checkout = {
        "punchgate." + str(p.parent.relative_to(ROOT)).replace("/", ".")
        for folder in ("gateway", "drivers", "sync")
        for p in (ROOT / folder).rglob("__init__.py")
    }
    assert checkout <= packages, f"package folders missing from pyproject's list: {checkout - packages}"


def test_the_wheel_holds_the_consoles_templates_and_scripts(wheel: Path) -> None:
    """Not Python, so only [tool.setuptools.package-data] puts them in: without them every page is a 500."""
    names = set(zipfile.ZipFile(wheel).namelist())
    console = ROOT / "gateway" / "console"
    shipped = {
        "punchgate/gateway/console/" + str(p.relative_to(console))
        for folder in ("templates", "static")
        for p in (console / folder).iterdir()
        if p.is_file()
    }
    assert any(name.endswith(".html") for name in shipped) and any(name.endswith(".js") for name in shipped)
    assert shipped <= names, (
        f"missing from the wheel (package-data in pyproject.toml): {sorted(shipped - names)}"
    )


def test_the_installed_wheel_runs_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path).returncode == 0
    python = venv / "bin" / "python"
    target = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
    site = Path(target.stdout.strip())
    # Borrow the test venv's dependencies. A plain .pth line adds the folder without running
    # the .pth files inside it, so the checkout's editable hook stays out.
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel, cwd=tmp_path
    )
    assert installed.returncode == 0, installed.stderr

    version = _run(venv / "bin" / "punchgate", "--version", cwd=tmp_path)
    assert version.returncode == 0 and "punchgate" in version.stdout, version.stderr
    where = _run(python, "-c", "import punchgate.gateway as g; print(g.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(site)), where.stdout
    checked = _run(venv / "bin" / "punchgate", "check-config", EXAMPLE, cwd=tmp_path)
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stderr
    for generic in ("gateway", "drivers", "sync"):
        bare = _run(python, "-c", f"import {generic}", cwd=tmp_path)
        assert bare.returncode != 0 and "ModuleNotFoundError" in bare.stderr
