"""Lifecycle rules: pure functions, nothing faked."""

import pytest

from nexusd.core.errors import InvalidTransition
from nexusd.core.lifecycle import LEGAL, TERMINAL, Stage, check_transition, is_legal, sources_of


def test_stage_strings_are_upstreams() -> None:
    assert [str(stage) for stage in Stage] == [
        "NEW",
        "BUFFERED",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "SCHEDULING_FAILED",
        "DEADLINE_EXCEEDED",
        "CANCELLED",
    ]


def test_terminal_set_matches_upstream_is_finished() -> None:
    assert {str(s) for s in TERMINAL} == {
        "COMPLETED",
        "FAILED",
        "SCHEDULING_FAILED",
        "DEADLINE_EXCEEDED",
        "CANCELLED",
    }
    assert all(stage.is_terminal for stage in TERMINAL)
    assert not any(stage.is_terminal for stage in set(Stage) - TERMINAL)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize("target", list(Stage))
def test_terminal_stages_are_never_left(terminal: Stage, target: Stage) -> None:
    assert not is_legal(terminal, target)
    with pytest.raises(InvalidTransition, match=f"from {terminal} to {target}"):
        check_transition(terminal, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Stage.NEW, Stage.BUFFERED),
        (Stage.BUFFERED, Stage.RUNNING),
        (Stage.BUFFERED, Stage.COMPLETED),  # dry run, or a report faster than RUNNING
        (Stage.BUFFERED, Stage.FAILED),
        (Stage.RUNNING, Stage.COMPLETED),
        (Stage.RUNNING, Stage.DEADLINE_EXCEEDED),
        (Stage.RUNNING, Stage.CANCELLED),
        (Stage.NEW, Stage.SCHEDULING_FAILED),  # submission lost
    ],
)
def test_forward_moves_are_legal(current: Stage, target: Stage) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [(Stage.RUNNING, Stage.BUFFERED), (Stage.BUFFERED, Stage.NEW), (Stage.RUNNING, Stage.RUNNING)],
)
def test_backward_moves_are_illegal(current: Stage, target: Stage) -> None:
    assert not is_legal(current, target)


def test_sources_of_is_the_inverse_of_legal() -> None:
    for target in Stage:
        assert sources_of(target) == {s for s, targets in LEGAL.items() if target in targets}
    assert sources_of(Stage.RUNNING) == {Stage.BUFFERED}
