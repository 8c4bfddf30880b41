"""`python -m inferia_cli`, the same as the `inferia` console script."""

from __future__ import annotations

from inferia_cli import main

if __name__ == "__main__":
    main()
