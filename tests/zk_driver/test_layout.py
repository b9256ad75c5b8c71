"""How the ZK driver is laid out: what it re-exports, where pyzk's private state is touched, lazy pyzk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from punchgate.drivers.zk import driver, errors, parsing, pyzk_patches, session

ZK_PACKAGE = Path(driver.__file__).parent

# The names importers used from punchgate.drivers.zk.driver before it was split, and their homes.
REEXPORTED = {
    "ZkDriver": driver,
    "CountMismatchError": errors,
    "ClearRefusedError": errors,
    "map_error": errors,
    "INVALID_TIME_EPOCH": parsing,
    "invalid_time_sentinel": parsing,
    "detect_eight_byte_variant": parsing,
    "parse_attendance": parsing,
    "parse_users": parsing,
    "raw_punch_from_record": parsing,
    "PatchedZK": pyzk_patches,
    "configure_pool": session,
    "DEFAULT_POOL_SIZE": session,
}


def test_driver_module_still_exports_what_importers_use() -> None:
    assert sorted(driver.__all__) == sorted(REEXPORTED)
    for name, home in REEXPORTED.items():
        assert getattr(driver, name) is getattr(home, name), name


def test_only_pyzk_patches_touches_pyzk_private_members() -> None:
    touching = sorted(path.name for path in ZK_PACKAGE.glob("*.py") if "_ZK__" in path.read_text())
    assert touching == ["pyzk_patches.py"]


def test_the_zk_package_does_not_load_pyzk_until_a_driver_is_built() -> None:
    check = (
        "import sys, punchgate.drivers.zk as zk\n"
        "assert 'zk' not in sys.modules and 'punchgate.drivers.zk.driver' not in sys.modules\n"
        "assert zk.DESCRIPTION.type_name == 'zk'\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)
