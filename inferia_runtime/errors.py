"""The one exception a domain service raises to refuse a request: the caller asked for something the rules do not
allow (a team of another organisation, a role still held, a name already used). Entry points show it to the caller
(REST: a 400, admin and console: a message, CLI: an error line); any other exception is a bug and stays a 500.

It lives here, below every app, so that each may raise it and each entry point may catch it."""

from __future__ import annotations


class DomainRefusal(ValueError):
    """A service's refusal, its message written for the person who asked. A ValueError, so that callers written
    before it existed still catch it."""
