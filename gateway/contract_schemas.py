"""Generates the MQTT contract's JSON Schemas (docs/schemas/) with every name vocabulary as enums.

The payload models live in `punchgate.sync.contract`; the names their fields carry are defined
across the layers: state and verify names by each driver family's description, device fault
codes in `punchgate.drivers.faults`, time flags and gateway fault codes in `punchgate.sync`,
severities in `punchgate.gateway.faults`. sync may not import drivers or gateway, so this module,
which may see all of them, collects the vocabularies and hands them to the generator.

    python -m punchgate.gateway.contract_schemas           # rewrite docs/schemas and docs/schemas/strict
    python -m punchgate.gateway.contract_schemas --check   # exit 1 if a checked-in file is stale

With the default folder it also (re)writes or checks docs/asyncapi.yaml, the AsyncAPI document
that embeds these schemas (punchgate.gateway.contract_asyncapi).

The test suite runs the check too (tests/sync/test_security_and_contract.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.registry import DRIVERS
from punchgate.gateway import contract_asyncapi
from punchgate.gateway.faults import Severity
from punchgate.sync import records
from punchgate.sync.contract import SCHEMA_DIR, Vocabulary, schema_files, write_schemas
from punchgate.sync.faults import GatewayFault


def _names(tables: Iterable[Mapping[int, str]]) -> list[str]:
    """The union of several code->name tables, in code order (first family first), no repeats."""
    return list(dict.fromkeys(name for table in tables for _code, name in sorted(table.items())))


def vocabulary() -> Vocabulary:
    """Every name and code the payloads carry, collected from the code that defines them."""
    return Vocabulary(
        state_names=_names(d.state_names for d in DRIVERS),
        verify_names=_names(d.verify_names for d in DRIVERS),
        time_flags=[value for key, value in vars(records).items() if key.startswith("FLAG_")],
        device_faults=[fault.value for fault in DeviceFault],
        gateway_faults=[fault.value for fault in GatewayFault],
        severities=[severity.value for severity in Severity],
    )


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Schema files under `directory` that differ from what the generator writes, or are missing
    or left over (relative paths, sorted); empty when everything is current."""
    wanted = schema_files(vocabulary())
    present = {p.relative_to(directory).as_posix() for p in directory.glob("**/*.json")}
    stale = {
        relative
        for relative, text in wanted.items()
        if not (directory / relative).is_file() or (directory / relative).read_text(encoding="utf-8") != text
    }
    return sorted(stale | (present - set(wanted)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    parser.add_argument("directory", nargs="?", type=Path, default=SCHEMA_DIR)
    args = parser.parse_args(argv)
    asyncapi = args.directory.resolve() == SCHEMA_DIR  # docs/asyncapi.yaml embeds docs/schemas
    if args.check:
        stale = stale_files(args.directory)
        for relative in stale:
            print(f"stale: {args.directory / relative}", file=sys.stderr)
        if asyncapi and contract_asyncapi.is_stale(vocabulary()):
            print(f"stale: {contract_asyncapi.ASYNCAPI_PATH}", file=sys.stderr)
            stale.append(contract_asyncapi.ASYNCAPI_PATH.name)
        return 1 if stale else 0
    for path in write_schemas(vocabulary(), args.directory):
        print(path)
    if asyncapi:
        print(contract_asyncapi.write(vocabulary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
