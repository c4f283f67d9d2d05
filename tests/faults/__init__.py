"""Fault-injection tools: private servers, network-namespace hosts, the recording app and the ledger that compares
what handlers did with what the store recorded. Used by tests/faults/test_*.py and by scripts/faultrun.py."""
