"""Secrets that may live outside the config file.

Precedence, highest first: a systemd credential (`$CREDENTIALS_DIRECTORY/<name>`, from
`LoadCredential=`), an environment variable, then the file itself. Credential and variable
names:

* MQTT password: credential `mqtt_password`, variable `PUNCHGATE_MQTT_PASSWORD`
* a terminal's comm key: credential `comm_key_<terminal>`, variable `PUNCHGATE_COMM_KEY_<TERMINAL>`
  (terminal name upper-cased, `-` and `.` turned into `_`; so `gate-north` and `GATE.NORTH`
  share one variable, and the config refuses two such names)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from punchgate.drivers.config import NAME_PATTERN


class SecretError(Exception):
    """A credential that exists but cannot be read. `key` is the config key it stands for."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


def comm_key_env_name(terminal: str) -> str:
    """The environment variable holding the comm key of the terminal named `terminal`."""
    return "PUNCHGATE_COMM_KEY_" + terminal.upper().replace("-", "_").replace(".", "_")


def read_secret(credential: str, env_var: str, *, key: str = "(secret)") -> str | None:
    """The secret from systemd's credentials directory or the environment, if either has it."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        candidate = Path(cred_dir) / credential
        try:
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SecretError(key, f"cannot read the systemd credential {candidate}: {reason}") from None
    value = os.environ.get(env_var)
    return value if value else None


def apply_secrets(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw config with secrets from outside the file filled in.

    Copies only the tables it changes (never a deep copy: a hostile file nested thousands of
    levels deep must fail validation with a message, not recurse here).
    """
    data = dict(data)
    password = read_secret("mqtt_password", "PUNCHGATE_MQTT_PASSWORD", key="mqtt.password")
    if password is not None:
        mqtt = data.get("mqtt", {})
        if isinstance(mqtt, dict):
            data["mqtt"] = {**mqtt, "password": password}
    terminals = data.get("terminals")
    if isinstance(terminals, list):
        data["terminals"] = [_with_comm_key(i, terminal) for i, terminal in enumerate(terminals)]
    return data


def _with_comm_key(index: int, terminal: Any) -> Any:
    if not isinstance(terminal, dict):
        return terminal
    name = terminal.get("name")
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        return terminal  # validation names the bad name; never build a file path from it
    key = read_secret(f"comm_key_{name}", comm_key_env_name(name), key=f"terminals[{index}].comm_key")
    return terminal if key is None else {**terminal, "comm_key": key}
