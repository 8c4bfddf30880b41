"""Runtime infrastructure any layer may import: environment parsing, Redis URLs and clients, the trusted-proxy
client address, the embedded PostgreSQL/Redis servers, and the in-process event publisher apps announce their changes
through. It imports no app and no Django project module."""
