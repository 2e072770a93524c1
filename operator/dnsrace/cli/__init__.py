"""The ``dnsrace`` command line: one module per command group; rich output lives in ``console``."""
