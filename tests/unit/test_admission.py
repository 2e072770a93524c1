"""core.admission: an LB node's bounded in-flight, bounded queue and bounded wait, on a virtual
clock (times are plain numbers)."""

from __future__ import annotations

import pytest

from dnsrace.core.admission import Admission, Limits, Verdict


def test_admits_up_to_capacity_then_queues_then_throttles() -> None:
    adm = Admission(Limits(capacity=2, queue=1, wait=0.5))
    assert adm.try_acquire(0.0)[0] is Verdict.ADMIT
    assert adm.try_acquire(0.0)[0] is Verdict.ADMIT
    verdict, waiter = adm.try_acquire(0.1)
    assert verdict is Verdict.WAIT
    assert waiter is not None
    assert waiter.deadline == pytest.approx(0.6)
    assert adm.try_acquire(0.1) == (Verdict.THROTTLE, None), "queue full: throttled at once"
    assert adm.in_flight == 2
    assert adm.waiting == 1


def test_release_hands_the_slot_to_the_oldest_waiter() -> None:
    adm = Admission(Limits(capacity=1, queue=5, wait=1.0))
    adm.try_acquire(0.0)
    _, first = adm.try_acquire(0.1)
    _, second = adm.try_acquire(0.2)
    assert adm.release(0.3) is first
    assert adm.in_flight == 1, "the slot passed on, it was not freed"
    assert adm.release(0.4) is second
    assert adm.release(0.5) is None
    assert adm.in_flight == 0


def test_expired_waiters_are_skipped_and_throttled() -> None:
    adm = Admission(Limits(capacity=1, queue=5, wait=0.5))
    adm.try_acquire(0.0)
    _, late = adm.try_acquire(0.0)
    _, fresh = adm.try_acquire(0.4)
    assert adm.release(0.7) is fresh, "the waiter past its deadline does not get the slot"
    assert late is not None
    assert not adm.abandon(late), "already dropped by expiry"


def test_no_wait_means_throttle_when_full() -> None:
    adm = Admission(Limits(capacity=1, queue=10, wait=0.0))
    adm.try_acquire(0.0)
    assert adm.try_acquire(0.0)[0] is Verdict.THROTTLE


def test_abandon_tells_whether_a_slot_was_handed_over() -> None:
    adm = Admission(Limits(capacity=1, queue=2, wait=1.0))
    adm.try_acquire(0.0)
    _, waiter = adm.try_acquire(0.0)
    assert waiter is not None
    assert adm.release(0.1) is waiter
    assert not adm.abandon(waiter), "it holds the slot now and must release it"
    _, other = adm.try_acquire(0.2)
    assert other is not None
    assert adm.abandon(other)
    assert adm.waiting == 0


def test_newcomers_do_not_overtake_waiters() -> None:
    adm = Admission(Limits(capacity=1, queue=2, wait=1.0))
    adm.try_acquire(0.0)
    _, waiter = adm.try_acquire(0.0)
    assert adm.release(0.1) is waiter
    assert adm.try_acquire(0.1)[0] is Verdict.WAIT


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"capacity": 0, "queue": 1, "wait": 1.0}, "capacity"),
    ({"capacity": 1, "queue": -1, "wait": 1.0}, "queue"),
    ({"capacity": 1, "queue": 1, "wait": -0.1}, "wait"),
])
def test_bad_limits_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)  # type: ignore[arg-type]
