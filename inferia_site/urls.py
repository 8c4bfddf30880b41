"""URLs Django serves: admin, console, REST API, health and metrics. `/v1` is served by the gateway (asgi.py)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from apps.gateway.metrics_export import metrics_scrape
from apps.gateway.ollama_openapi import api as ollama_openapi
from apps.gateway.openapi import api as inference_openapi
from inferia_site import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("livez", health.livez, name="livez"),
    # Admin's own login form would skip the second factor: every sign-in goes through the console's.
    path("admin/login/", RedirectView.as_view(pattern_name="console:login", query_string=True), name="admin-login"),
    path("admin/", admin.site.urls),
    path("console/", include("apps.console.urls")),
    path("api/", include("inferia_site.api_urls")),
    path("v1/", inference_openapi.urls),  # only /v1/openapi.json and /v1/docs reach Django (see asgi.py)
    path("ollama/", ollama_openapi.urls),  # only /ollama/openapi.json and /ollama/docs, likewise
    path("metrics", metrics_scrape, name="prometheus-django-metrics"),
]

admin.site.site_header = "Inferia administration"
admin.site.site_title = "Inferia"
admin.site.index_title = "Platform"

# Under /api/ a missing route or an error outside any view answers JSON, as the API's own errors do.
handler404 = "apps.rbac.drf_input.page_not_found"
handler500 = "apps.rbac.drf_input.server_error"
