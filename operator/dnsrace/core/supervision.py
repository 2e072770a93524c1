"""When to restart a component that exited, as the kubelet restarts a container.

The scenario lab (``components.scenarios.lab.Lab``) runs the local components as processes; nothing
would bring one back after a crash or a ``kill`` Fault, while in kind a Deployment does. The lab
asks ``Supervisor`` on every tick what to do with each component it started, on a clock it
passes in, so the policy is tested without processes or real time.

Back-off doubles from ``base`` to ``cap`` (the kubelet's CrashLoopBackOff, shortened for a lab
whose runs last minutes) and resets after ``reset_after`` seconds of uptime.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Exit:
    """One death of a component, as the run folder records it (``restarts.json``)."""

    component: str
    t: float
    """When the lab noticed it."""
    code: int | None
    """Exit code; negative: the signal that ended it; None: unknown (not the lab's child)."""
    restart_at: float
    restarts: int
    """How many times the component was restarted before, in this run."""

    @property
    def how(self) -> str:
        if self.code is None:
            return "exited"
        return f"killed by signal {-self.code}" if self.code < 0 else f"exited with {self.code}"


@dataclasses.dataclass
class _State:
    started: float
    restarts: int = 0
    pending: Exit | None = None


class Supervisor:
    def __init__(self, base: float = 0.5, cap: float = 10.0, reset_after: float = 30.0) -> None:
        self.base, self.cap, self.reset_after = base, cap, reset_after
        self._components: dict[str, _State] = {}
        self.exits: list[Exit] = []

    def started(self, name: str, now: float) -> None:
        state = self._components.get(name)
        if state is None:
            self._components[name] = _State(started=now)
        else:
            state.started, state.pending = now, None

    def forget(self, name: str) -> None:
        """The lab stopped it on purpose: no restart."""
        self._components.pop(name, None)

    def supervised(self) -> list[str]:
        return sorted(self._components)

    def delay(self, restarts: int) -> float:
        return float(min(self.cap, self.base * 2.0 ** restarts))

    def tick(self, name: str, alive: bool, code: int | None, now: float) -> bool:
        """Note ``name``'s state; True when it should be started again now."""
        state = self._components.get(name)
        if state is None or alive:
            if state is not None and now - state.started >= self.reset_after:
                state.restarts = 0
            return False
        if state.pending is None:
            state.pending = Exit(name, now, code, now + self.delay(state.restarts),
                                 state.restarts)
            self.exits.append(state.pending)
        if now < state.pending.restart_at:
            return False
        state.restarts += 1
        return True
