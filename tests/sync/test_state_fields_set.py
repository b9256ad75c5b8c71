"""Device states that set the same fields share one `model_fields_set` (sync/contract_states.py,
issue 18): each still reports its own fields and serialises as before."""

from __future__ import annotations

import copy
import datetime as dt

import pydantic
import pytest

from punchgate.sync.contract import DeviceState

_AT = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _state(device: str, **more: object) -> DeviceState:
    return DeviceState.model_validate(
        {
            "device": device,
            "state": "online",
            "faults": [],
            "last_contact": _AT,
            "clock_drift_seconds": None,
            "serial_number": "SN1",
            "as_of": _AT,
            **more,
        }
    )


def test_states_with_the_same_fields_share_one_set_and_dump_as_their_own() -> None:
    first, second, other = _state("a"), _state("b"), _state("c", firmware="Ver 6")
    assert first.model_fields_set is second.model_fields_set
    assert other.model_fields_set == first.model_fields_set | {"firmware"}
    assert first.model_dump(exclude_unset=True)["device"] == "a"
    assert "firmware" not in first.model_dump(exclude_unset=True)
    assert other.model_dump(exclude_unset=True)["firmware"] == "Ver 6"
    assert first.model_dump_json() == _state("a").model_dump_json()


def test_a_shared_set_cannot_be_changed_through_one_state() -> None:
    first, second = _state("a"), _state("b")
    expected = set(first.model_fields_set)
    with pytest.raises(pydantic.ValidationError):
        first.model = "F18"  # frozen: what would have added to the set
    changed = first.model_copy(update={"model": "F18"})
    plain = copy.copy(first)
    assert changed.model_fields_set == expected | {"model"}
    assert plain.model_fields_set == expected
    assert first.model_fields_set == second.model_fields_set == expected
