"""Runtime infrastructure any layer may import: environment parsing, Redis URLs and clients, the trusted-proxy
client address, the embedded PostgreSQL/Redis servers, the in-process event publisher apps announce their changes
through, and the tenancy door tenant models offer. It imports no app and no Django project module."""
