"""What a config file that cannot be used raises: `ConfigError`, and the messages that span the file."""

from __future__ import annotations

from pathlib import Path

NO_TERMINALS = "terminals: no [[terminals]]: add one (see config/punchgate.example.toml)"
NESTED_TOO_DEEPLY = (
    "(file): nested too deeply (arrays or tables inside each other hundreds of levels deep); "
    "no punchgate key nests more than four levels: is this the right file?"
)


class ConfigError(Exception):
    """A config file that cannot be used. `problems` lists `key.path: message` lines."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))
