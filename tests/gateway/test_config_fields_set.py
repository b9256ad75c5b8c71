"""Terminal entries setting the same keys share one `model_fields_set` (drivers/config.py,
issue 18); each still reports the keys its own entry set, and nothing can change a shared one."""

from __future__ import annotations

import copy

import pydantic
import pytest

from punchgate.drivers.zk.config import ZkTerminal


def _entry(n: int, **more: object) -> dict[str, object]:
    return {"name": f"t{n}", "type": "zk", "host": "10.0.0.1", "port": 4370 + n, **more}


def test_entries_with_the_same_keys_share_one_set_and_report_their_own_keys() -> None:
    first, second = ZkTerminal.model_validate(_entry(1)), ZkTerminal.model_validate(_entry(2))
    other = ZkTerminal.model_validate(_entry(3, timeout=5.0))
    assert first.model_fields_set is second.model_fields_set
    assert first.model_fields_set == {"name", "type", "host", "port"}
    assert other.model_fields_set == {"name", "type", "host", "port", "timeout"}
    assert first.model_dump(exclude_unset=True) == _entry(1)
    assert other.model_dump(exclude_unset=True) == _entry(3, timeout=5.0)


def test_a_shared_set_cannot_be_changed_through_one_model() -> None:
    first, second = ZkTerminal.model_validate(_entry(1)), ZkTerminal.model_validate(_entry(2))
    with pytest.raises(pydantic.ValidationError):
        first.timeout = 3.0  # frozen: what would have added to the set
    changed = first.model_copy(update={"timeout": 3.0})
    deep = first.model_copy(update={"live": False}, deep=True)
    plain = copy.copy(first)
    assert changed.model_fields_set == {"name", "type", "host", "port", "timeout"}
    assert deep.model_fields_set == {"name", "type", "host", "port", "live"}
    assert plain.model_fields_set == first.model_fields_set
    assert second.model_fields_set == {"name", "type", "host", "port"}
    assert first.model_fields_set == {"name", "type", "host", "port"}
