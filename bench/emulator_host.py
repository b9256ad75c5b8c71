"""Emulated ZK terminals in a child process, so they never share the gateway's (or pyzk's) CPU.

    python -m bench.emulator_host --count 500 --records 200 --ready-file PATH [--punch-rate R]

Binds every terminal on a free loopback port, writes {"ports": [...], "serials": [...]} to
the ready file (atomically: written whole, then renamed), and serves until SIGTERM. With
`--punch-rate`, people punch at random terminals at that many punches a second in all
(Poisson arrivals), so the logs grow as a site's do. The first `TEMPLATES` logs are drawn,
the rest are copies of them (drawing 5,000 logs of 3,000 records took 15 minutes).
`EmulatorHost` is the parent's handle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from punchgate.drivers.zk.emulator import ZkEmulator
from tests.support.waiting import WaitTimeout, wait_until

TEMPLATES = 50  # distinct generated logs; the other terminals hold copies of them


async def _punch(emulators: list[ZkEmulator], rate: float, users: int) -> None:
    """Punches at random terminals by random enrolled people, `rate` a second in all."""
    rng = random.Random(11)
    while True:
        await asyncio.sleep(rng.expovariate(rate))
        emulator = rng.choice(emulators)
        emulator.add_punch(str(rng.randint(1, users)), state=rng.randint(0, 1))


async def _serve(
    count: int, records: int, users: int, profile: str, ready_file: Path, punch_rate: float = 0.0
) -> None:
    emulators: list[ZkEmulator] = []
    for n in range(count):
        emulator = ZkEmulator(
            profile=profile,
            serial_number=f"HOST{n:05d}",
            transports=("tcp",),
            record_capacity=max(100_000, records),
            name=f"e{n:03d}",
        )
        if records and n < TEMPLATES:
            emulator.generate_log(records=records, days=30, users=users, seed=n)
        elif records:
            # Drawing every log costs 0.2 s per 3,000 records (15 min for 5,000 terminals):
            # past the first TEMPLATES terminals, each takes a copy of one of theirs. The gateway
            # sees them as different logs all the same (each record's id names its terminal).
            emulator.copy_log_from(emulators[n % TEMPLATES])
        await emulator.start()
        emulators.append(emulator)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    partial = ready_file.with_suffix(".partial")
    partial.write_text(
        json.dumps(
            {"ports": [e.tcp_port for e in emulators], "serials": [e.serial_number for e in emulators]}
        )
    )
    partial.rename(ready_file)
    puncher = asyncio.create_task(_punch(emulators, punch_rate, max(1, users))) if punch_rate > 0 else None
    await stop.wait()
    if puncher is not None:
        puncher.cancel()
    for emulator in emulators:
        await emulator.stop()


class EmulatorHost:
    """Start the child, wait for its ports, stop it by pid."""

    def __init__(
        self,
        workdir: Path,
        *,
        count: int,
        records: int,
        users: int = 200,
        profile: str = "tft",
        punch_rate: float = 0.0,
    ) -> None:
        self.ready_file = workdir / f"emulators-{count}-{records}.json"
        self.log_path = workdir / "emulators.log"
        self.args = [
            "--count",
            str(count),
            "--records",
            str(records),
            "--users",
            str(users),
            "--profile",
            profile,
            "--punch-rate",
            str(punch_rate),
        ]
        self.ports: list[int] = []
        self.serials: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def pin(self, cpus: set[int]) -> None:
        """Keep the emulators on these CPUs (os.sched_setaffinity), apart from the gateway's."""
        os.sched_setaffinity(self.pid, cpus)

    def start(self, timeout: float = 300.0) -> EmulatorHost:
        self.ready_file.unlink(missing_ok=True)
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.emulator_host",
                    *self.args,
                    "--ready-file",
                    str(self.ready_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        process = self._process
        try:
            wait_until(
                self.ready_file.exists,
                timeout=timeout,
                interval=0.1,
                message=f"the emulator host's ports (see {self.log_path})",
                abort=lambda: None if process.poll() is None else f"it exited with {process.returncode}",
            )
        except WaitTimeout:
            self.stop()
            raise
        data = json.loads(self.ready_file.read_text())
        self.ports, self.serials = list(data["ports"]), list(data["serials"])
        return self

    def stop(self) -> None:
        """SIGTERM by pid and wait (SIGKILL if it takes longer than 10 s). Safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator_host")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--records", type=int, default=0)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--profile", default="tft")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--punch-rate", type=float, default=0.0, help="punches a second over all terminals")
    args = parser.parse_args(argv)
    from punchgate.gateway.logs import configure_logging

    configure_logging("warning")  # 500 terminals' session logs would cost more than they serve
    asyncio.run(_serve(args.count, args.records, args.users, args.profile, args.ready_file, args.punch_rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
