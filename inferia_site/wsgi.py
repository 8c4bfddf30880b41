"""WSGI entry point, for management tooling only: the product serves over ASGI (see asgi.py)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")
application = get_wsgi_application()
