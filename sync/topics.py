"""Every MQTT topic name the gateway uses, built in one place (docs/mqtt-contract.md, "Topics").

Device names are validated by the config (letters, digits, `_`, `.`, `-`), so they never
contain `/`, `+` or `#` and can be used as a topic level as they are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under `{prefix}/{gateway_id}`."""

    prefix: str
    gateway_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.gateway_id}"

    @property
    def gateway_state(self) -> str:
        """Retained online/offline state; also the last will's topic."""
        return f"{self.base}/state"

    def device_state(self, device: str) -> str:
        """Retained health snapshot of one terminal."""
        return f"{self.base}/devices/{device}/state"

    def device_punches(self, device: str) -> str:
        """Batches of punch records from one terminal (QoS 1, not retained)."""
        return f"{self.base}/devices/{device}/punches"

    def device_events(self, device: str) -> str:
        """Fault raised/cleared and clock events of one terminal (QoS 1, not retained)."""
        return f"{self.base}/devices/{device}/events"

    @property
    def gateway_events(self) -> str:
        """Fault raised/cleared events of the gateway itself (broker, buffer, disk; QoS 1, not retained)."""
        return f"{self.base}/events"

    @property
    def audit(self) -> str:
        """Retained head of the buffer's audit chain (docs/audit.md)."""
        return f"{self.base}/audit"

    @property
    def confirm(self) -> str:
        """Confirmations from central consumers of what they stored (QoS 1; the gateway subscribes
        in central delivery mode)."""
        return f"{self.base}/confirm"

    @property
    def command_request(self) -> str:
        """Remote commands for this gateway, published by central (QoS 1; the gateway subscribes
        when `[commands]` is enabled; docs/mqtt-contract.md, "Remote commands")."""
        return f"{self.base}/commands/request"

    @property
    def command_response(self) -> str:
        """The gateway's answers to remote commands, unless a request names its own MQTT 5
        response topic (QoS 1, not retained)."""
        return f"{self.base}/commands/response"

    def device_digests(self, device: str) -> str:
        """Retained reconciliation digests of one terminal: count and id digest per local day."""
        return f"{self.base}/devices/{device}/digests"

    @property
    def all_devices_wildcard(self) -> str:
        """A subscription filter matching every device topic of this gateway."""
        return f"{self.base}/devices/#"

    @property
    def everything_wildcard(self) -> str:
        return f"{self.base}/#"
