"""Generates docs/configuration.md from the settings models, so the doc cannot drift from the code.

`python -m punchgate.gateway.config_doc` rewrites the file; a test checks the checked-in copy is current.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

HEADER = """# Configuration reference

punchgate reads one TOML file (`punchgate run --config FILE`; check it with
`punchgate check-config FILE`). Unknown keys are errors. Secrets can stay out of the file:
the MQTT password in `PUNCHGATE_MQTT_PASSWORD` or the systemd credential `mqtt_password`; a
terminal's comm key in `PUNCHGATE_COMM_KEY_<NAME>` (upper case, `-`/`.` as `_`) or the
credential `comm_key_<name>`.

Values are strictly typed, as TOML writes them: numbers and `true`/`false` without quotes
(`port = 4370`, not `port = "4370"`), strings in quotes (`protocol = "5"`), times and dates
without quotes (`work_start = 08:00:00`). Host keys take an IPv4 or IPv6 address or a host name,
never a port or a URL. `punchgate check-config` also refuses two terminals on one address (or
one device id on one serial line), terminal names that differ only in case or `-`/`.`/`_`
(their comm-key variables would collide) and TLS files it cannot read; every message names
the key and what to write instead.

This page is generated from the code (`python -m punchgate.gateway.config_doc`).
"""


def _type_name(annotation: object) -> str:
    if "discriminator='type'" in str(annotation):
        return "array of tables, by `type`"
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")
    for prefix in ("<class '", "'>"):
        text = text.replace(prefix, "")
    # A `|` inside a cell would end it: `str | None` must not split the table's columns.
    return re.sub(r"punchgate\.[a-z_.]+\.([A-Z])", r"\1", text).replace(" | ", " \\| ")


def _bounds(field: FieldInfo) -> str:
    """The field's numeric range as people write it: `1..65535`, `> 0`, `<= 3650`."""
    found: dict[str, object] = {}
    for item in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            value = getattr(item, name, None)
            if value is not None:
                found[name] = value
    low = f"{found['ge']}" if "ge" in found else None
    high = f"{found['le']}" if "le" in found else None
    if low is not None and high is not None:
        return f", {low}..{high}"
    parts = [
        f"{symbol} {found[name]}"
        for name, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
        if name in found
    ]
    return ", " + " and ".join(parts) if parts else ""


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return "(section)"
    return f"`{field.default!r}`" if field.default is not None else "—"


def _table(title: str, model: type[BaseModel]) -> list[str]:
    lines = [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        lines.append(
            f"| `{name}` | {_type_name(field.annotation)}{_bounds(field)} | {_default(field)} "
            f"| {field.description or ''} |"
        )
    return [*lines, ""]


def render() -> str:
    from punchgate.gateway import settings as s
    from punchgate.gateway.commands.settings import CommandsSettings
    from punchgate.gateway.roster import RosterSettings
    from punchgate.sync import settings as sync_settings
    from punchgate.sync.audit import AuditSettings
    from punchgate.sync.manual import ManualSettings

    sections: list[tuple[str, type[BaseModel]]] = [
        ("top level", s.Settings),
        ("[mqtt]", sync_settings.MqttSettings),
        ("[mqtt.tls]", sync_settings.TlsSettings),
        ("[buffer]", sync_settings.BufferSettings),
        ("[http]", s.HttpSettings),
        ("[health] (and [terminals.health])", s.HealthSettings),
        ("[push]", s.PushSettings),
        ("[manual]", ManualSettings),
        ("[audit]", AuditSettings),
        ("[commands]", CommandsSettings),
        ("[roster]", RosterSettings),
    ]
    sections += [(f'[[terminals]] type = "{kind}"', model) for kind, model in s.TERMINAL_MODELS.items()]
    out = [HEADER]
    for title, model in sections:
        out.extend(_table(title, model))
    return "\n".join(out)


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/configuration.md")
    target.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    main()
