"""``python -m dnsrace``: the same as the ``dnsrace`` command (the scenario runner uses it so
the processes it starts are recognisably Python's)."""

from dnsrace.cli.main import main

main()
