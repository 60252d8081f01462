"""Padding policies."""

from __future__ import annotations

import pytest

from sanctorum.mail.policy import MinSizePolicy


def test_fixed_pads_up_to_its_size_only() -> None:
    policy = MinSizePolicy.fixed(100)
    assert [policy.padded_size(n) for n in (0, 99, 100, 150)] == [100, 100, 100, 150]


def test_largest_seen_remembers_the_largest() -> None:
    policy = MinSizePolicy.largest_seen()
    assert [policy.padded_size(n) for n in (10, 50, 20, 5, 60)] == [10, 50, 50, 50, 60]


def test_moving_average_over_its_window() -> None:
    policy = MinSizePolicy.moving_average(window=2)
    assert [policy.padded_size(n) for n in (10, 30, 0, 0, 7)] == [10, 30, 15, 0, 7]


def test_default_window_smooths_sizes() -> None:
    policy = MinSizePolicy.moving_average()
    for _ in range(16):
        policy.padded_size(1000)
    assert policy.padded_size(10) == 939  # ceil((15*1000 + 10) / 16)


@pytest.mark.parametrize(
    "factory", [lambda: MinSizePolicy.fixed(-1), lambda: MinSizePolicy.moving_average(0)]
)
def test_bad_parameters_are_refused(factory: object) -> None:
    with pytest.raises(ValueError, match="must be"):
        factory()  # type: ignore[operator]
