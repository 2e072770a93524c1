"""dnsrace: a Kubernetes operator lab that reproduces the DNS Planner/Enactor race.

The package is layered: ``cli`` parses options and calls ``components`` (planner, enactors,
prober, scenarios) which run on the platform modules (``localplane``, ``kube``, ``dnsstore``);
all decisions live in the pure ``core`` package. ``make lint`` checks the layering.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
