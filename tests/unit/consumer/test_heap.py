"""The cyclic GC's thresholds for the long-running loops (consumer/heap.py): raised while the
loop runs, given back after it, and set by `convmetrics serve` around its API server."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import consumer.serve.server
from consumer.heap import GEN0_THRESHOLD, rare_collections
from convmetrics.cli import main


@pytest.fixture(autouse=True)
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*before)


def test_raises_the_young_generation_only_while_the_block_runs() -> None:
    with rare_collections():
        assert gc.get_threshold() == (GEN0_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_gives_the_thresholds_back_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError), rare_collections():
        raise RuntimeError("the loop failed")
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("first", [0, GEN0_THRESHOLD + 1])
def test_leaves_collection_turned_off_or_rarer_alone(first: int) -> None:
    gc.set_threshold(first, 10, 10)
    with rare_collections():
        assert gc.get_threshold() == (first, 10, 10)


def test_serve_runs_the_api_with_rare_collections(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple[int, ...]] = []

    class Server:
        def run(self) -> None:
            seen.append(gc.get_threshold())

    def api_server(*args: Any, **kwargs: Any) -> Server:
        return Server()

    monkeypatch.setattr(consumer.serve.server, "api_server", api_server)
    assert main(["serve", "--store", f"sqlite:///{tmp_path / 'm.db'}", "--port", "8999"]) == 0
    assert seen == [(GEN0_THRESHOLD, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10)
