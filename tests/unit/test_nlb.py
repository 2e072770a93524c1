"""core.nlb on a virtual clock: health thresholds, flapping and AZ failover emerging when
instances come into service before their network state has propagated, ``velocity-control``
capping the healthy capacity removed per interval, and failover switched off keeping it.

The scene: 3 AZs with 10 old, reachable targets each; a burst of 30 new instances into
us-east-1a at 2/s from t = 30 s, another into us-east-1b from t = 120 s; the Network Manager
propagates 0.5 states a second, so the bursts' last instances wait about a minute. New targets
are in service from registration, as NLB did."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

from dnsrace.core import nlb, propagation

AZS = ("us-east-1a", "us-east-1b", "us-east-1c")
WAVES = ((30.0, 45.0, "us-east-1a"), (120.0, 135.0, "us-east-1b"))
CAP = nlb.VelocityControl(max_removed=5.0, per=60.0)


@dataclasses.dataclass
class Scene:
    lb: nlb.Nlb
    figures: list[nlb.Figures]
    changes: list[nlb.Published]
    removals: list[tuple[float, float]]
    """(time, healthy capacity removed) of every publication."""
    new: list[str]


def _scene(*, velocity: nlb.VelocityControl | None = None, auto_failover: bool = True,
           failover_off_at: float | None = None, until: float = 300.0) -> Scene:
    manager = propagation.NetworkManager(propagation.PropagationParams(rate=0.5), start=0.0)
    lb = nlb.Nlb(nlb.NlbParams(), random.Random(4), start=0.0, velocity=velocity,
                 auto_failover=auto_failover)
    for az in AZS:
        for i in range(10):
            name = f"old-{az}-{i}"
            manager.reachable_set.add(name)  # propagated long ago
            lb.register(name, az, 0.0)
    scene = Scene(lb, [], [], [], [])
    t = 0.0
    while t < until:
        t = round(t + 0.5, 6)
        for start, end, az in WAVES:
            if start <= t < end:
                name = f"new-{len(scene.new)}"
                scene.new.append(name)
                manager.enqueue(name, t)
                lb.register(name, az, t)
        if failover_off_at is not None and t == failover_off_at:
            lb.set_auto_failover(False)
        manager.advance(t)
        before = lb.removed_healthy
        published = lb.check(t, lambda name, _t: manager.reachable(name))
        if published.removed or published.added:
            scene.changes.append(published)
        scene.removals.append((t, lb.removed_healthy - before))
        scene.figures.append(lb.figures(t))
    return scene


def _lowest(scene: Scene, az: str) -> float:
    return min(f.healthy[az] for f in scene.figures)


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="unhealthy_threshold must be at least 1"):
        nlb.NlbParams(unhealthy_threshold=0)
    with pytest.raises(ValueError, match="failover_share must be in"):
        nlb.NlbParams(failover_share=1.0)
    with pytest.raises(ValueError, match="max_removed must be more than 0"):
        nlb.VelocityControl(max_removed=0)
    lb = nlb.Nlb(nlb.NlbParams(), random.Random(1), start=0.0)
    lb.register("a", "us-east-1a", 0.0)
    with pytest.raises(ValueError, match="already registered"):
        lb.register("a", "us-east-1a", 0.0)


def test_thresholds_and_flips() -> None:
    lb = nlb.Nlb(nlb.NlbParams(unhealthy_threshold=2, healthy_threshold=3), random.Random(1),
                 start=0.0)
    lb.register("t", "us-east-1a", 0.0)
    assert lb.publish(0.0).targets == {"t"}, "in service before any check"
    results = [False, True, False, False, True, True, False, True, True, True]
    flips = [lb.observe("t", float(i), ok) for i, ok in enumerate(results)]
    assert flips == [False, False, False, True, False, False, False, False, False, True]
    assert lb.targets["t"].flips == lb.flips == 2


def test_flapping_and_az_failover_emerge_without_safeguards() -> None:
    scene = _scene()
    last = scene.figures[-1]
    flips = {name: scene.lb.targets[name].flips for name in scene.new}
    assert sum(1 for f in flips.values() if f >= 2) > 0.8 * len(scene.new), \
        "most new targets failed their checks, then passed once propagated"
    old = [t for t in scene.lb.targets.values() if t.name.startswith("old-")]
    assert all(t.flips == 0 and t.healthy for t in old), "the old targets never failed"
    assert (last.az_failovers, last.az_restores) == (2, 2), "1a, then 1b, out and back"
    assert _lowest(scene, "us-east-1a") == 0.0
    assert _lowest(scene, "us-east-1b") == 0.0
    assert _lowest(scene, "us-east-1c") == 10.0
    assert last.removed_healthy >= 20.0, "healthy targets pulled from DNS by failover"
    assert len(scene.changes) > 100, "the record changed again and again"
    assert last.healthy == {"us-east-1a": 40.0, "us-east-1b": 40.0, "us-east-1c": 10.0}


def test_velocity_control_caps_healthy_capacity_removed_per_interval() -> None:
    scene = _scene(velocity=CAP)
    removals = [(t, c) for t, c in scene.removals if c]
    assert removals, "it did remove healthy capacity, within the cap"
    for t, _ in removals:
        window = sum(c for u, c in removals if t - CAP.per < u <= t)
        assert window <= CAP.max_removed
    assert max(f.removed_in_window for f in scene.figures) <= CAP.max_removed
    assert _lowest(scene, "us-east-1a") >= 10.0 - CAP.max_removed
    assert max(f.held for f in scene.figures) > 0
    assert scene.figures[-1].healthy == {"us-east-1a": 40.0, "us-east-1b": 40.0,
                                         "us-east-1c": 10.0}


def test_failover_off_keeps_healthy_capacity() -> None:
    scene = _scene(auto_failover=False)
    assert all(f.failed_over == () for f in scene.figures)
    assert _lowest(scene, "us-east-1a") >= 10.0
    assert scene.figures[-1].removed_healthy == 0.0
    assert scene.figures[-1].flips > 0, "targets still flap; only unhealthy ones leave"


def test_failover_off_as_the_manual_step_restores_the_az() -> None:
    on = _scene(until=60.0)
    out = [f.t for f in on.figures if "us-east-1a" in f.failed_over]
    assert out
    off_at = out[0] + 2.0
    scene = _scene(failover_off_at=off_at, until=60.0)
    after = [f for f in scene.figures if f.t >= off_at]
    assert after[0].failed_over == ()
    assert min(f.healthy["us-east-1a"] for f in after) >= 10.0


def test_fail_open_and_deregistration() -> None:
    lb = nlb.Nlb(nlb.NlbParams(unhealthy_threshold=1), random.Random(1), start=0.0,
                 velocity=nlb.VelocityControl(max_removed=1.0))
    for name in ("a", "b"):
        lb.register(name, "us-east-1a", 0.0)
        lb.observe(name, 1.0, False)
    published = lb.publish(1.0)
    assert published.fail_open
    assert published.targets == {"a", "b"}
    lb.register("c", "us-east-1b", 2.0)
    assert lb.publish(2.0).targets == {"c"}, "unhealthy targets leave whatever the cap"
    lb.deregister("c")
    assert lb.publish(3.0).targets == {"a", "b"}
    lb.register("c", "us-east-1b", 4.0)
    times = [t for t, name in lb.take_due(100.0) if name == "c"]
    assert times[0] >= 4.0, "the first registration's checks were dropped"
    assert all(b - a == pytest.approx(5.0) for a, b in itertools.pairwise(times))


def test_take_due_and_observe_give_what_check_gives() -> None:
    """The component's path (probe asynchronously, report each result) matches ``check``."""
    def probe(name: str, t: float) -> bool:
        return name != "b" or t > 20.0

    made = []
    for use_check in (True, False):
        lb = nlb.Nlb(nlb.NlbParams(), random.Random(9), start=0.0)
        for name in ("a", "b", "c"):
            lb.register(name, "us-east-1a", 0.0)
        t = 0.0
        while t < 40.0:
            t += 1.0
            if use_check:
                lb.check(t, probe)
            else:
                for due, name in lb.take_due(t):
                    lb.observe(name, due, probe(name, due))
                lb.publish(t)
        made.append((lb.flips, lb.published))
    assert made[0] == made[1]
    assert made[0][0] == 2
