"""Short fuzz runs of every ``make fuzz`` target inside ``make test`` (hypothesis as the engine).

Each target gets random octets and mutated valid encodings (bit flips, cuts, insertions,
duplications); only the typed errors the target allows may escape (see ``tests/fuzz/targets.py``).
The long libFuzzer runs are ``make fuzz``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import TARGETS, seeds

#: examples per target: the cheap decoders get more
EXAMPLES = {
    "stb": 2000,
    "commands": 2000,
    "data": 2000,
    "relay": 2000,
    "auth": 1000,
    "session": 1500,
    "cms": 600,
}


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """A seed of target ``name`` with 1–4 random edits."""
    data = bytearray(draw(st.sampled_from(seeds(name))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "dup", "set"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        elif kind == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
        elif data:
            data[pos] = draw(st.sampled_from([0x00, 0x0D, 0x20, 0x30, 0x39, 0x7F, 0x80, 0xFF]))
    return bytes(data)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """Refusals are logged at WARNING on every input; keep the run fast."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("name", list(TARGETS))
def test_target_raises_only_typed_errors(name: str) -> None:
    """Random and mutated inputs: no exception besides the target's typed errors."""
    target = TARGETS[name]

    @settings(
        max_examples=EXAMPLES[name],
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.one_of(mutated(name), st.binary(max_size=600)))
    def run(data: bytes) -> None:
        target.run(data)

    run()
