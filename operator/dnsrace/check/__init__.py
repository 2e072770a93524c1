"""The deterministic checker of the enactor protocol (``dnsrace check``).

``scheduler`` drives coroutines point by point, ``explore`` searches the interleavings, ``model``
runs ``core.enacting`` under them, ``properties`` says what must hold. It imports only
``dnsrace.core``; ``cli.check`` is its command.
"""
