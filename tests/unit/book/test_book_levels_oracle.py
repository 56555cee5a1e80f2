"""Level application against a plain dict book: wide updates in any order (best first, worst
first, shuffled), repeated prices inside one message, removals of absent levels, books that
grow past their arrays' capacity."""

from __future__ import annotations

import random

import pytest

from fluxforge.book import BookEngine
from fluxforge.events import BookMessage


def _msg(i: int, snap: bool, bids: list, asks: list) -> BookMessage:
    return BookMessage("x", "A-B", "AB", "book", i, i + 1, i, snap, bids, asks)


def _dict_book(book: dict[str, str], levels: list[tuple[str, str]]) -> None:
    for price, size in levels:
        if float(size) == 0.0:
            book.pop(price, None)
        else:
            book[price] = size


@pytest.mark.parametrize("order", ["best_first", "worst_first", "shuffled"])
def test_wide_updates_give_the_dict_book(order: str) -> None:
    rng = random.Random(hash(order) % 1000)
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    engine = BookEngine("x", "A-B")
    msgs = []
    for i in range(300):
        sides = []
        for book, lo, hi in ((bids, 1000, 2000), (asks, 2001, 3000)):
            width = rng.choice([1, 2, 5, 40, 150])
            levels = []
            for _ in range(width):
                price = f"{rng.randrange(lo, hi)}.{rng.randrange(0, 4)}"
                size = "0" if rng.random() < 0.35 else f"{rng.randrange(1, 9)}.{rng.randrange(9)}"
                levels.append((price, size))
            if order == "best_first":
                levels.sort(key=lambda lv: float(lv[0]), reverse=book is bids)
            elif order == "worst_first":
                levels.sort(key=lambda lv: float(lv[0]), reverse=book is asks)
            sides.append(levels)
        snap = i == 0
        if snap:  # a snapshot lists each price once, without removals
            sides = [[(p, s) for p, s in dict(lv).items() if s != "0"] for lv in sides]
        _dict_book(bids, sides[0])
        _dict_book(asks, sides[1])
        msgs.append(_msg(i, snap, sides[0], sides[1]))
    for lo in range(0, len(msgs), 37):  # several batches: the book's arena carries over
        engine.apply(msgs[lo : lo + 37])
    got_bids, got_asks = engine.levels()
    assert got_bids == sorted(bids.items(), key=lambda lv: -float(lv[0]))
    assert got_asks == sorted(asks.items(), key=lambda lv: float(lv[0]))
    assert len(got_bids) > 300 and len(got_asks) > 300  # past the initial capacity
