"""A fleet's logs copied from a few generated ones: each terminal holds its own copy."""

from __future__ import annotations

import pytest

from punchgate.drivers.zk.emulator import ZkEmulator


def test_copy_log_gives_the_same_users_and_records_as_a_copy_of_its_own() -> None:
    template = ZkEmulator(profile="tft", serial_number="T1", transports=("tcp",))
    template.generate_log(records=300, days=3, users=20, seed=4)
    fleet = ZkEmulator(profile="tft", serial_number="F1", transports=("tcp",))
    fleet.copy_log_from(template)
    assert fleet.record_count == template.record_count == 300
    assert fleet.records == template.records
    assert [u.user_id for u in fleet.users] == [u.user_id for u in template.users]
    # The copy grows on its own, and so does the template.
    assert fleet.add_punch("3") is not None
    assert (fleet.record_count, template.record_count) == (301, 300)
    template.add_user("999", name="New")
    assert fleet.data.user_by_id("999") is None


def test_copy_log_refuses_other_layouts_and_too_small_a_log() -> None:
    template = ZkEmulator(profile="tft", serial_number="T1", transports=("tcp",))
    template.generate_log(records=50, days=2, users=5, seed=1)
    with pytest.raises(ValueError, match="layouts"):
        ZkEmulator(profile="bw", serial_number="B1", transports=("udp",)).copy_log_from(template)
    with pytest.raises(ValueError, match="capacity"):
        ZkEmulator(profile="tft", serial_number="S1", transports=("tcp",), record_capacity=10).copy_log_from(
            template
        )
