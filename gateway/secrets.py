"""Secrets that may live outside the config file.

Precedence, highest first: a systemd credential (`$CREDENTIALS_DIRECTORY/<name>`, from
`LoadCredential=`), an environment variable, then the file itself. Credential and variable
names:

* MQTT password: credential `mqtt_password`, variable `PUNCHGATE_MQTT_PASSWORD`
* a terminal's comm key: credential `comm_key_<terminal>`, variable `PUNCHGATE_COMM_KEY_<TERMINAL>`
  (terminal name upper-cased, `-` and `.` turned into `_`)
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any


def _env_name(terminal: str) -> str:
    return "PUNCHGATE_COMM_KEY_" + terminal.upper().replace("-", "_").replace(".", "_")


def read_secret(credential: str, env_var: str) -> str | None:
    """The secret from systemd's credentials directory or the environment, if either has it."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        candidate = Path(cred_dir) / credential
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8").strip()
    value = os.environ.get(env_var)
    return value if value else None


def apply_secrets(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw config with secrets from outside the file filled in."""
    data = copy.deepcopy(data)
    password = read_secret("mqtt_password", "PUNCHGATE_MQTT_PASSWORD")
    if password is not None:
        mqtt = data.setdefault("mqtt", {})
        if isinstance(mqtt, dict):
            mqtt["password"] = password
    terminals = data.get("terminals")
    if isinstance(terminals, list):
        for terminal in terminals:
            if not isinstance(terminal, dict) or not isinstance(terminal.get("name"), str):
                continue
            key = read_secret(f"comm_key_{terminal['name']}", _env_name(terminal["name"]))
            if key is not None:
                terminal["comm_key"] = key
    return data
