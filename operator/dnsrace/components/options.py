"""What the cascade's commands share in reading their options: ``--safeguards`` and the core's
parameters, with errors that name the option as the command spells it.

Who calls it: ``components.dwfm``, ``launcher``, ``netmanager`` and ``nlbctl`` (their
``throttle_on`` / ``velocity_on`` and ``params``), so that ``dnsrace dwfm --lease-ttl 4`` says
``--lease-ttl (4.0 s) must be longer than --check-interval (5.0 s)``, not the core's field names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from dnsrace.core.safeguards import Safeguards

T = TypeVar("T")


def safeguards(text: str) -> Safeguards:
    """``--safeguards`` / ``DNSRACE_SAFEGUARDS``: ``off`` (``none``, nothing), ``on`` (``all``)
    or a comma list of any of ``core.safeguards.NAMES``; a ValueError names the option and the
    unknown name. Each component acts on its own safeguard and leaves the others be."""
    try:
        return Safeguards.parse(text)
    except ValueError as exc:
        raise ValueError(f"--safeguards: {exc}") from None


def core_params(make: Callable[..., T], flags: Mapping[str, str], values: Mapping[str, Any]) -> T:
    """``make(**values)`` without the None values (they keep the core's defaults); a ValueError
    from the core gets its field names replaced by the command's flags."""
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return make(**given)
    except ValueError as exc:
        message = str(exc)
        for name, flag in flags.items():
            message = re.sub(rf"\b{name}\b", flag, message)
        raise ValueError(message) from None
