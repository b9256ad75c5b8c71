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

This page is generated from the code (`python -m punchgate.gateway.config_doc`).
"""


def _type_name(annotation: object) -> str:
    if "discriminator='type'" in str(annotation):
        return "array of tables, by `type`"
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")
    for prefix in ("<class '", "'>"):
        text = text.replace(prefix, "")
    return re.sub(r"punchgate\.[a-z_.]+\.([A-Z])", r"\1", text)


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
            f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {field.description or ''} |"
        )
    return [*lines, ""]


def render() -> str:
    from punchgate.gateway import settings as s
    from punchgate.sync import settings as sync_settings

    sections: list[tuple[str, type[BaseModel]]] = [
        ("top level", s.Settings),
        ("[mqtt]", sync_settings.MqttSettings),
        ("[mqtt.tls]", sync_settings.TlsSettings),
        ("[buffer]", sync_settings.BufferSettings),
        ("[http]", s.HttpSettings),
        ("[health] (and [terminals.health])", s.HealthSettings),
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
