"""URLs Django serves: admin, console, REST API, health and metrics. `/v1` is served by the gateway (asgi.py)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from inferia_site import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/", include("inferia_site.api_urls")),
    path("", include("django_prometheus.urls")),
]

admin.site.site_header = "Inferia administration"
admin.site.site_title = "Inferia"
admin.site.index_title = "Platform"
