"""The wheel carries the console's templates and static files, which live at the repository root, inside
inferia_site/: an installed Inferia has no checkout to find them in. It carries two compiled helpers of the hot
path too, where a C compiler is at hand (`inferia_runtime/json_copy.py` and `text_search.py` do the same work
without them). Everything else is in pyproject.toml."""

from __future__ import annotations

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ASSET_DIRS = ("templates", "static")


class BuildWithAssets(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads them from the checkout (settings.ASSETS_DIR)
            return
        for name in ASSET_DIRS:
            self.copy_tree(name, str(Path(self.build_lib) / "inferia_site" / name))


setup(
    cmdclass={"build_py": BuildWithAssets},
    ext_modules=[
        Extension("inferia_runtime._json_copy", ["inferia_runtime/_json_copy.c"], optional=True),
        Extension("inferia_runtime._text_search", ["inferia_runtime/_text_search.c"], optional=True),
    ],
)
