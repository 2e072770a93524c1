"""Scenarios: the lab they share (``lab``) and one module per scenario (``race``)."""
