"""What every test package uses to run real processes and wait on them: reserved ports, one process harness and
`eventually()`. Domain objects come from `tests/factories.py`."""
