"""split_blocks: which transformer blocks each pipeline stage holds."""

from __future__ import annotations

import pytest

from mpcli.parallel.pipeline import split_blocks


def counts(stages: list[list[int]]) -> list[int]:
    return [len(blocks) for blocks in stages]


@pytest.mark.parametrize(
    ("n_blocks", "pp", "expected"),
    [
        (12, 2, [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]),
        (4, 4, [[0], [1], [2], [3]]),
        (4, 1, [[0, 1, 2, 3]]),
    ],
)
def test_even_split(n_blocks: int, pp: int, expected: list[list[int]]) -> None:
    assert split_blocks(n_blocks, pp) == expected


def test_uneven_split_puts_extras_first() -> None:
    assert split_blocks(7, 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert counts(split_blocks(12, 5)) == [3, 3, 2, 2, 2]


@pytest.mark.parametrize("n_blocks", [1, 5, 12, 48])
def test_default_split_covers_all_blocks_in_order(n_blocks: int) -> None:
    for pp in range(1, n_blocks + 1):
        stages = split_blocks(n_blocks, pp)
        assert [b for stage in stages for b in stage] == list(range(n_blocks))
        assert len(stages) == pp
        assert max(counts(stages)) - min(counts(stages)) <= 1


def test_explicit_split() -> None:
    assert split_blocks(12, 2, [5, 7]) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11]]
    assert split_blocks(4, 3, [1, 2, 1]) == [[0], [1, 2], [3]]


@pytest.mark.parametrize(
    ("n_blocks", "pp", "split"),
    [
        pytest.param(4, 2, [1, 2], id="drops-blocks"),
        pytest.param(4, 2, [3, 3], id="repeats-blocks"),
        pytest.param(4, 2, [4, 0], id="empty-stage"),
        pytest.param(4, 2, [5, -1], id="negative-count"),
        pytest.param(4, 2, [1, 1, 2], id="too-many-counts"),
        pytest.param(4, 3, [4], id="too-few-counts"),
        pytest.param(3, 4, None, id="more-stages-than-blocks"),
    ],
)
def test_invalid_split_raises(n_blocks: int, pp: int, split: list[int] | None) -> None:
    with pytest.raises(ValueError, match="does not cover"):
        split_blocks(n_blocks, pp, split)
