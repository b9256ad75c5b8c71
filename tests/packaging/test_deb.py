"""The Debian package that `./dev package` builds: what it holds, and that it installs, runs and purges.

The short tests (default run) build the package once and read it with dpkg-deb. The long test
(`./dev test-long`, as root, as CI runs) installs it on this machine with dpkg, checks the
user, directories and unit it set up, runs the installed daemon as the `punchgate` user
against `punchgate emulate zk` and a test broker until the punches reach a subscriber, then
purges it: once the default way (everything goes but /var/lib/punchgate) and, after a
reinstall, with PUNCHGATE_PURGE_DATA=1 (the data directory goes too).
"""

from __future__ import annotations

import io
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.broker import Broker, free_port
from tests.support.config import write_config, zk_terminal
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_until

# Building the package fetches every dependency's wheel (about two minutes): the long run's.
# The short run keeps tests/packaging/test_wheel.py, which builds and installs the wheel.
pytestmark = pytest.mark.long

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION: str = PROJECT["version"]
PREFIX = Path("/opt/punchgate")
STATE = Path("/var/lib/punchgate")
INSTALLED = {
    "/opt/punchgate",
    "/etc/punchgate",
    "/usr/bin/punchgate",
    "/lib/systemd/system/punchgate.service",
    "/usr/share/doc/punchgate",
}


def _run(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def deb_version(version: str) -> str:
    """The Debian version ./dev package gives a PEP 440 version (pre-releases sort first with ~)."""
    return re.sub(r"^(\d+(?:\.\d+)*)\.?(a|b|rc|dev)(\d*)", r"\1~\2\3", version)


@dataclass(frozen=True)
class Built:
    deb: Path
    wheel: Path
    sdist: Path
    members: dict[str, tarfile.TarInfo]  # the data archive's entries by absolute path
    tree: Path  # the data archive unpacked (dpkg-deb --extract)

    def field(self, name: str) -> str:
        result = _run("dpkg-deb", "--field", self.deb, name)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def read(self, path: str) -> bytes:
        return (self.tree / path.lstrip("/")).read_bytes()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`./dev package --out DIR`, run once for the module, with the venv running these tests."""
    out = tmp_path_factory.mktemp("package")
    env = {**os.environ, "PUNCHGATE_VENV": sys.prefix}
    result = subprocess.run(
        [str(ROOT / "dev"), "package", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (deb,) = out.glob("punchgate_*.deb")
    assert result.stdout.strip().splitlines()[-1] == str(deb), result.stdout
    fsys = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True, timeout=120
    )
    with tarfile.open(fileobj=io.BytesIO(fsys.stdout)) as tar:
        members = {"/" + m.name.removeprefix("./").rstrip("/"): m for m in tar.getmembers() if m.name != "./"}
    tree = out / "tree"
    assert _run("dpkg-deb", "--extract", deb, tree).returncode == 0
    return Built(
        deb=deb,
        wheel=out / f"punchgate-{VERSION}-py3-none-any.whl",
        sdist=out / f"punchgate-{VERSION}.tar.gz",
        members=members,
        tree=tree,
    )


# --- short: the package as built -----------------------------------------------------------------


def test_package_builds_the_versioned_wheel_sdist_and_deb(built: Built) -> None:
    assert built.wheel.is_file() and built.sdist.is_file()
    assert built.deb.name == f"punchgate_{deb_version(VERSION)}_{built.field('Architecture')}.deb"
    assert built.field("Package") == "punchgate"
    assert built.field("Version") == deb_version(VERSION)


def test_control_depends_on_the_interpreter_the_wheels_were_fetched_for(built: Built) -> None:
    minor = sys.version_info[1]
    depends = [d.strip() for d in built.field("Depends").split(",")]
    assert f"python3 (>= 3.{minor})" in depends and f"python3 (<< 3.{minor + 1})" in depends, depends
    assert {"python3-venv", "adduser"} <= set(depends), depends
    assert "mosquitto" not in built.field("Depends") + built.field("Recommends")
    # Compiled wheels (pydantic-core, aiohttp, ...) make the package architecture-specific.
    arch = _run("dpkg", "--print-architecture").stdout.strip()
    assert built.field("Architecture") == arch


def test_package_contents(built: Built) -> None:
    members = built.members
    link = members["/usr/bin/punchgate"]
    assert link.issym() and link.linkname == "/opt/punchgate/venv/bin/punchgate"
    assert (
        built.read("/lib/systemd/system/punchgate.service")
        == (ROOT / "systemd/punchgate.service").read_bytes()
    )
    assert (
        built.read("/etc/punchgate/punchgate.toml") == (ROOT / "config/punchgate.example.toml").read_bytes()
    )
    assert stat.S_IMODE(members["/etc/punchgate/credentials"].mode) == 0o700
    assert "/usr/share/doc/punchgate/install.md" in members
    assert "/usr/share/doc/punchgate/copyright" in members
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    # No virtualenv and no data directory: the postinst makes those on the target.
    assert not [p for p in members if p.startswith(("/opt/punchgate/venv", "/var/"))]
    wheels = {Path(p).name for p in members if p.startswith("/opt/punchgate/wheels/")}
    assert f"punchgate-{VERSION}-py3-none-any.whl" in wheels
    normalized = {re.split(r"-\d", w, maxsplit=1)[0].lower().replace("_", "-") for w in wheels}
    for requirement in PROJECT["dependencies"]:
        name = re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in normalized, f"no wheel for {requirement} in {sorted(wheels)}"


def test_maintainer_scripts(built: Built, tmp_path: Path) -> None:
    control = tmp_path / "DEBIAN"
    assert _run("dpkg-deb", "--control", built.deb, control).returncode == 0
    assert (control / "conffiles").read_text().split() == ["/etc/punchgate/punchgate.toml"]
    for script in ("postinst", "prerm", "postrm"):
        path = control / script
        assert path.stat().st_mode & 0o111, f"{script} is not executable"
        checked = _run("sh", "-n", path)
        assert checked.returncode == 0, checked.stderr
        assert "@" not in re.sub(r"#.*", "", path.read_text()), f"{script} has an unfilled placeholder"
    assert f"PYPI_VERSION={VERSION}\n" in (control / "postinst").read_text()


def test_the_shipped_wheels_install_without_the_network(built: Built, tmp_path: Path) -> None:
    """What the postinst does, as a dry run: resolve punchgate from the shipped wheels alone."""
    wheels = built.tree / "opt/punchgate/wheels"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull}
    result = _run(
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
        "--find-links", wheels, f"punchgate=={VERSION}", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"punchgate-{VERSION}" in result.stdout


# --- long: install, run, purge on this machine ----------------------------------------------------


def _require_a_machine_we_may_install_on() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "this test installs the .deb with dpkg and needs root (CI runs as root): run it as root, "
            "e.g. `sudo ./dev test-long -k test_deb`",
            pytrace=False,
        )
    for tool in ("dpkg", "apt-get", "setpriv", "systemd-analyze"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"this test needs {tool} (a Debian system; ./dev setup installs systemd)", pytrace=False
            )
    status = _run("dpkg-query", "--show", "--showformat=${db:Status-Status}", "punchgate").stdout
    present = [p for p in (*INSTALLED, str(STATE)) if os.path.lexists(p)]
    if status not in ("", "not-installed") or present or _user_exists():
        pytest.fail(
            "this test installs and purges the punchgate package and deletes /var/lib/punchgate; it "
            f"refuses to run on a machine that has punchgate already (dpkg status {status!r}, "
            f"paths {present}, user punchgate: {_user_exists()}). Use a throwaway machine or container.",
            pytrace=False,
        )


def _user_exists() -> bool:
    try:
        pwd.getpwnam("punchgate")
    except KeyError:
        return False
    return True


def _dpkg_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PUNCHGATE_PURGE_DATA"}
    return {**env, "DEBIAN_FRONTEND": "noninteractive", **extra}


def _install(deb: Path) -> None:
    installed = _run("dpkg", "-i", deb, env=_dpkg_env(), timeout=600)
    if installed.returncode != 0:  # missing dependencies: let apt fetch them and finish configuring
        fixed = _run("apt-get", "-f", "install", "-y", "-q", env=_dpkg_env(), timeout=900)
        assert fixed.returncode == 0, installed.stderr + fixed.stdout + fixed.stderr
    status = _run("dpkg-query", "--show", "--showformat=${Status}", "punchgate").stdout
    assert status == "install ok installed", status + installed.stdout + installed.stderr


def _purge(**extra: str) -> subprocess.CompletedProcess[str]:
    purged = _run("dpkg", "--purge", "punchgate", env=_dpkg_env(**extra), timeout=300)
    assert purged.returncode == 0, purged.stdout + purged.stderr
    return purged


def _leave_no_punchgate() -> None:
    """Whatever happened: the machine as it was before (checked free of punchgate)."""
    _run("dpkg", "--purge", "punchgate", env=_dpkg_env(PUNCHGATE_PURGE_DATA="1"))
    shutil.rmtree(STATE, ignore_errors=True)


def _run_installed_daemon(broker: Broker, subscriber: Subscriber, workdir: Path) -> None:
    """`punchgate emulate zk` and the installed daemon (as user punchgate, buffer in /var/lib/punchgate)
    until the emulated terminal's punches reach the subscriber; then a clean SIGTERM stop."""
    port = free_port()
    emulator_log = (workdir / "emulator.log").open("wb")
    emulator = subprocess.Popen(
        ["/usr/bin/punchgate", "emulate", "zk", "--port", str(port), "--records", "5"],
        stdout=emulator_log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True,
    )  # fmt: skip
    daemon: subprocess.Popen[bytes] | None = None
    log = workdir / "gateway.log"
    try:
        wait_until(
            lambda: "zk_emulators_running" in (workdir / "emulator.log").read_text(),
            timeout=60,
            message="the emulated terminal",
            abort=lambda: (
                None if emulator.poll() is None else f"the emulator exited with {emulator.returncode}"
            ),
        )
        config = write_config(
            workdir / "gateway.toml",
            gateway_id="gw-deb",
            broker_port=broker.port,
            buffer_path=STATE / "buffer.db",
            terminals=[zk_terminal("deb-zk", port, poll_interval=5)],
        )
        config.chmod(0o644)
        checked = _run("/usr/bin/punchgate", "check-config", config)
        assert checked.returncode == 0, checked.stderr
        with log.open("wb") as out:
            daemon = subprocess.Popen(
                ["setpriv", "--reuid=punchgate", "--regid=punchgate", "--init-groups",
                 str(PREFIX / "venv/bin/punchgate"), "run", "--config", str(config), "--log-format", "json"],
                stdout=out, stderr=subprocess.STDOUT, cwd="/", start_new_session=True,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )  # fmt: skip
        running = daemon
        wait_until(
            lambda: subscriber.wait_records(5, timeout=0),
            timeout=90,
            message=lambda: (
                f"5 punches at the subscriber (got {len(subscriber.reconciler.seen)}); log:\n{log.read_text()[-3000:]}"
            ),
            abort=lambda: None if running.poll() is None else f"the daemon exited with {running.returncode}",
        )
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, log.read_text()[-3000:]
        buffer = STATE / "buffer.db"
        assert buffer.is_file() and pwd.getpwuid(buffer.stat().st_uid).pw_name == "punchgate"
    finally:
        for process in (daemon, emulator):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
        emulator_log.close()


@pytest.mark.long
@pytest.mark.timeout(1200)
def test_install_run_and_purge(built: Built, broker: Broker, subscriber: Subscriber) -> None:
    _require_a_machine_we_may_install_on()
    try:
        _install_run_and_purge(built, broker, subscriber)
    finally:
        _leave_no_punchgate()


def _install_run_and_purge(built: Built, broker: Broker, subscriber: Subscriber) -> None:
    _install(built.deb)

    version = _run("/usr/bin/punchgate", "--version")
    assert version.returncode == 0 and VERSION in version.stdout, version.stdout + version.stderr
    user = pwd.getpwnam("punchgate")
    assert user.pw_uid < 1000 and user.pw_shell.endswith("nologin"), user
    assert "dialout" in _run("id", "-nG", "punchgate").stdout.split()
    state = STATE.stat()
    assert stat.S_IMODE(state.st_mode) == 0o700 and state.st_uid == user.pw_uid
    checked = _run("/usr/bin/punchgate", "check-config", "/etc/punchgate/punchgate.toml")
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stderr
    unit = "/lib/systemd/system/punchgate.service"
    verified = _run("systemd-analyze", "verify", "--man=no", unit)
    problems = [
        line for line in (verified.stdout + verified.stderr).splitlines() if "punchgate.service" in line
    ]
    assert problems == [], problems

    workdir = Path(tempfile.mkdtemp(prefix="punchgate-deb-"))
    try:
        workdir.chmod(0o755)  # the daemon runs as punchgate and reads its config here
        _run_installed_daemon(broker, subscriber, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    purged = _purge()
    assert "kept /var/lib/punchgate" in purged.stderr
    assert [p for p in INSTALLED if os.path.lexists(p)] == []
    assert not _user_exists() and _run("getent", "group", "punchgate").returncode == 2
    assert _run("dpkg-query", "--show", "--showformat=${db:Status-Status}", "punchgate").stdout in (
        "",
        "not-installed",
    )
    assert (STATE / "buffer.db").is_file(), "the purge deleted the buffer"

    # Reinstalled, the kept buffer belongs to the (new) punchgate user; purging with
    # PUNCHGATE_PURGE_DATA=1 deletes it as well.
    _install(built.deb)
    assert pwd.getpwuid((STATE / "buffer.db").stat().st_uid).pw_name == "punchgate"
    _purge(PUNCHGATE_PURGE_DATA="1")
    assert [p for p in (*INSTALLED, str(STATE)) if os.path.lexists(p)] == []
