"""`python -m inferia_sim`."""

from __future__ import annotations

from inferia_sim.cli import main

if __name__ == "__main__":
    main()
