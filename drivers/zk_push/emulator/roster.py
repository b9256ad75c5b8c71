"""Generated users and an attendance backlog for an emulated push terminal, reproducible by seed.

Names are Chinese, as on the GB18030 firmware the emulator defaults to. The first ones are
fixed and chosen to catch decoders that are not really GB18030: 王喆 and 李堃 use characters
outside GB2312 (GBK two-byte codes), 𠮷祥 one outside the BMP (a four-byte GB18030 code).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Final

from punchgate.drivers.zk_push.emulator.wire import PushUser

FIXED_NAMES: Final = ("王喆", "李堃", "𠮷祥", "张伟", "刘芳")
_SURNAMES: Final = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
_GIVEN: Final = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂英华玉兰萍红鹏辉建国文斌宇浩凯晨瑶婷"


def generated_name(rng: random.Random, index: int) -> str:
    if index < len(FIXED_NAMES):
        return FIXED_NAMES[index]
    given = "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2))))
    return rng.choice(_SURNAMES) + given


def generate_users(count: int, rng: random.Random) -> list[PushUser]:
    """Users 1..count, the first few with the fixed names above; every fifth has a card."""
    users: list[PushUser] = []
    for n in range(count):
        card = str(rng.randint(1_000_000, 99_999_999)) if n % 5 == 4 else ""
        users.append(PushUser(pin=str(n + 1), name=generated_name(rng, n), card=card))
    return users


def generate_backlog(
    count: int, *, pins: list[str], days: int, now: datetime, rng: random.Random
) -> list[tuple[str, datetime, int, int]]:
    """`count` punches (pin, local time, state, verify) on working days' hours over the last
    `days` days, oldest first, no two of a user at the same second."""
    if count <= 0 or not pins:
        return []
    start = (now - timedelta(days=max(days, 1))).replace(hour=0, minute=0, second=0, microsecond=0)
    span_days = max((now - start).days, 1)
    seen: set[tuple[str, datetime]] = set()
    punches: list[tuple[str, datetime, int, int]] = []
    while len(punches) < count:
        day = start + timedelta(days=rng.randrange(span_days))
        when = day + timedelta(seconds=rng.randint(7 * 3600, 19 * 3600))
        pin = rng.choice(pins)
        if when >= now or (pin, when) in seen:
            continue
        seen.add((pin, when))
        state = 0 if when.hour < 13 else 1
        punches.append((pin, when, state, rng.choice((1, 1, 1, 15, 2))))
    punches.sort(key=lambda p: p[1])
    return punches
