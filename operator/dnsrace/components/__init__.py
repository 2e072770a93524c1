"""The lab's running parts: planner, enactors, faults, prober, scenarios, one module each."""
