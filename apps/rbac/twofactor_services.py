"""Two-factor sign-in with TOTP authenticator apps (RFC 6238, through pyotp) and single-use recovery codes.

A user enrols in two steps: `totp_enrolment_start` creates an unconfirmed device and its secret (shown as a QR
code), `totp_enrolment_confirm` proves the authenticator with one valid code and issues recovery codes (shown
once, stored hashed). From then on sign-in asks for a code (`twofactor_verify`). Failed codes are counted in
Redis per user and lock the second step out after too many, like password sign-in. Every event is audited.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import pyotp
from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from apps.audit.actors import Actor
from apps.audit.models import AuditEvent
from apps.audit.services import AuditContext, audit_record
from apps.orgs.models import Membership, User
from apps.rbac.models import RecoveryCode, TotpDevice
from inferia_runtime.errors import DomainRefusal

RECOVERY_CODE_COUNT = 10
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz234567890"  # no o, 1/l/i: codes are read off paper
# Roles whose holders must use two-factor sign-in where the organisation requires it: the built-in owner and
# admin roles, and any custom role that can manage members (it can hand out every role it holds).
REQUIRED_BUILTIN_ROLES = ("owner", "admin")


class TwoFactorError(DomainRefusal):
    """A two-factor operation that cannot go ahead: a wrong code, nothing to confirm, already enrolled."""


class TwoFactorLocked(TwoFactorError):
    """Too many wrong codes for this user recently; the second step is refused until the window passes."""


class TwoFactorCodeReused(TwoFactorError):
    """A right code that was already spent: a recovery code used before, or an authenticator code whose time step
    already signed in. `kind` is "totp" or "recovery", so the person is told which and what to do."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class TotpEnrolment:
    """An authenticator being set up: the secret, and the `otpauth://` URI its QR code carries."""

    device: TotpDevice
    secret: str
    provisioning_uri: str


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in settings.INFERIA_FERNET_KEYS])


def _totp(device: TotpDevice) -> pyotp.TOTP:
    return pyotp.TOTP(_fernet().decrypt(device.secret_encrypted.encode()).decode())


def _issuer_name() -> str:
    return getattr(settings, "INFERIA_2FA_ISSUER", "Inferia")


def recovery_code_hash(code: str) -> str:
    """The stored form of a recovery code. Codes are random (50 bits), so a plain digest is enough; spacing,
    dashes and case are ignored so that a code read off paper still matches."""
    normal = "".join(ch for ch in code.lower() if ch.isalnum())
    return hashlib.sha256(f"inferia-recovery:{normal}".encode()).hexdigest()


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(10))  # 10 of 32 symbols: 50 bits
    return f"{raw[:5]}-{raw[5:]}"


# --- Reads -------------------------------------------------------------------------------------------------------


def totp_device_confirmed(*, user: User) -> TotpDevice | None:
    """The user's confirmed authenticator, if they have one (then sign-in asks for a code)."""
    return TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).first()


def twofactor_enabled(*, user: User) -> bool:
    return TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).exists()


def twofactor_required(*, user: User) -> bool:
    """Whether an organisation of the user's requires them to use two-factor sign-in: they are an owner or an
    admin (or hold a custom role that manages members) in an active organisation with `require_2fa` set."""
    manages_members = Q(
        role__organization__isnull=False,
        role__permissions__codename="change_membership",
        role__permissions__content_type__app_label="orgs",
    )
    builtin = Q(role__organization__isnull=True, role__slug__in=REQUIRED_BUILTIN_ROLES)
    return (
        Membership.objects.filter(user=user, organization__require_2fa=True, organization__is_active=True)
        .filter(builtin | manages_members)
        .exists()
    )


def recovery_codes_remaining(*, user: User) -> int:
    return RecoveryCode.objects.filter(user=user, used_at__isnull=True).count()


def totp_enrolment_pending(*, user: User) -> TotpEnrolment | None:
    """The authenticator the user started to set up and has not confirmed yet, so the page shows the same QR
    code again instead of a new secret on every load."""
    device = TotpDevice.objects.filter(user=user, confirmed_at__isnull=True).first()
    if device is None:
        return None
    totp = _totp(device)
    return TotpEnrolment(device, totp.secret, totp.provisioning_uri(name=user.email, issuer_name=_issuer_name()))


# --- Throttle ----------------------------------------------------------------------------------------------------


def _failure_key(user: User) -> str:
    return f"2fa-fail:user:{user.pk}"


def _limits() -> tuple[int, int]:
    return (
        getattr(settings, "INFERIA_2FA_MAX_FAILURES", 5),
        getattr(settings, "INFERIA_2FA_LOCKOUT_SECONDS", 15 * 60),
    )


def twofactor_is_locked(*, user: User) -> bool:
    """Whether the user has had too many wrong codes within the lockout window."""
    limit, _ = _limits()
    return int(cache.get(_failure_key(user), 0)) >= limit


def _failure_count(user: User) -> None:
    _, window = _limits()
    key = _failure_key(user)
    cache.add(key, 0, timeout=window)  # the window starts at the first failure
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window)


def _failure_record(user: User, *, purpose: str, reason: str, context: AuditContext | None) -> None:
    _failure_count(user)
    with transaction.atomic():
        audit_record(
            action="2fa.failure",
            actor=user,
            target=user,
            changes={"purpose": purpose, "reason": reason},
            outcome=AuditEvent.Outcome.DENIED if reason == "locked" else AuditEvent.Outcome.FAILURE,
            context=context,
        )


# --- Checking a code ---------------------------------------------------------------------------------------------


def _totp_accept(device: TotpDevice, code: str) -> str:
    """ "accepted" when `code` is the device's code for now or one step either side (clock drift) and newer than the
    last code accepted: the conditional update makes each code good once, even between concurrent requests.
    "reused" when it is such a code whose step was already accepted, else "wrong"."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return "wrong"
    totp = _totp(device)
    now_step = totp.timecode(timezone.now())
    outcome = "wrong"
    for step in (now_step - 1, now_step, now_step + 1):
        if not constant_time_compare(totp.generate_otp(step), code):
            continue
        if step > device.last_used_step:
            claimed = TotpDevice.objects.filter(pk=device.pk, last_used_step__lt=step).update(last_used_step=step)
            if claimed == 1:
                device.last_used_step = step
                return "accepted"
        outcome = "reused"
    return outcome


def _recovery_accept(user: User, code: str) -> str:
    """ "accepted" after spending the unused recovery code matching `code`; "reused" when the matching code was
    spent before; else "wrong"."""
    matching = RecoveryCode.objects.filter(user=user, code_hash=recovery_code_hash(code))
    if matching.filter(used_at__isnull=True).update(used_at=timezone.now()) == 1:
        return "accepted"
    return "reused" if matching.exists() else "wrong"


def _check_code(
    *, user: User, device: TotpDevice, code: str, purpose: str, allow_recovery: bool, context: AuditContext | None
) -> str:
    """Check a code for `purpose` (sign-in, confirm, disable, ...): "totp" or "recovery" for the kind that
    matched. Raises TwoFactorLocked or TwoFactorError (both counted and audited) otherwise."""
    if twofactor_is_locked(user=user):
        _failure_record(user, purpose=purpose, reason="locked", context=context)
        raise TwoFactorLocked("too many wrong codes; try again later")
    totp_outcome = _totp_accept(device, code)
    if totp_outcome == "accepted":
        cache.delete(_failure_key(user))
        return "totp"
    recovery_outcome = _recovery_accept(user, code) if allow_recovery else "wrong"
    if recovery_outcome == "accepted":
        cache.delete(_failure_key(user))
        with transaction.atomic():
            audit_record(
                action="2fa.recovery_used",
                actor=user,
                target=user,
                changes={"purpose": purpose, "remaining": recovery_codes_remaining(user=user)},
                context=context,
            )
        return "recovery"
    if recovery_outcome == "reused":
        _failure_record(user, purpose=purpose, reason="reused recovery code", context=context)
        raise TwoFactorCodeReused("this recovery code was already used", kind="recovery")
    if totp_outcome == "reused":
        _failure_record(user, purpose=purpose, reason="reused code", context=context)
        raise TwoFactorCodeReused("this code was already used", kind="totp")
    _failure_record(user, purpose=purpose, reason="wrong code", context=context)
    raise TwoFactorError("that code is not valid")


def twofactor_verify(*, user: User, code: str, context: AuditContext | None = None) -> str:
    """The second step of sign-in: check a TOTP or recovery code for `user`'s confirmed device. Returns how
    the user proved it ("totp" or "recovery"); raises TwoFactorError / TwoFactorLocked."""
    device = totp_device_confirmed(user=user)
    if device is None:
        raise TwoFactorError("two-factor sign-in is not set up")
    method = _check_code(user=user, device=device, code=code, purpose="sign-in", allow_recovery=True, context=context)
    with transaction.atomic():
        audit_record(action="2fa.verify", actor=user, target=user, changes={"method": method}, context=context)
    return method


# --- Writes ------------------------------------------------------------------------------------------------------


@transaction.atomic
def totp_enrolment_start(*, user: User, actor: Actor, context: AuditContext | None = None) -> TotpEnrolment:
    """Begin setting up an authenticator: a fresh secret on an unconfirmed device (replacing an earlier
    unconfirmed one). Refused while a confirmed device exists: disable it first."""
    if TotpDevice.objects.select_for_update().filter(user=user, confirmed_at__isnull=False).exists():
        raise TwoFactorError("two-factor sign-in is already set up")
    TotpDevice.objects.filter(user=user).delete()
    secret = pyotp.random_base32(length=32)
    device = TotpDevice.objects.create(user=user, secret_encrypted=_fernet().encrypt(secret.encode()).decode())
    audit_record(action="2fa.enrol", actor=actor, target=user, context=context)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=_issuer_name())
    return TotpEnrolment(device, secret, uri)


def _recovery_codes_issue(user: User) -> list[str]:
    RecoveryCode.objects.filter(user=user).delete()
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    RecoveryCode.objects.bulk_create([RecoveryCode(user=user, code_hash=recovery_code_hash(c)) for c in codes])
    return codes


def totp_enrolment_confirm(*, user: User, code: str, actor: Actor, context: AuditContext | None = None) -> list[str]:
    """Finish setting up the authenticator with one valid code from it; returns the new recovery codes (the
    only time they exist in clear). A wrong code is counted towards the lockout and audited."""
    device = TotpDevice.objects.filter(user=user, confirmed_at__isnull=True).first()
    if device is None:
        raise TwoFactorError("there is no authenticator waiting to be confirmed")
    # Checked outside the confirming transaction, so that a wrong code's audit event and count are kept.
    _check_code(user=user, device=device, code=code, purpose="confirm", allow_recovery=False, context=context)
    with transaction.atomic():
        device.confirmed_at = timezone.now()
        device.save(update_fields=["confirmed_at"])
        codes = _recovery_codes_issue(user)
        audit_record(
            action="2fa.confirm", actor=actor, target=user, changes={"recovery_codes": len(codes)}, context=context
        )
    return codes


def totp_disable(*, user: User, code: str, actor: Actor, context: AuditContext | None = None) -> None:
    """Turn two-factor sign-in off, proven by a current TOTP or recovery code; the device and every recovery
    code go. (Whether the user may go without it is the caller's question: see `twofactor_required`.)"""
    device = totp_device_confirmed(user=user)
    if device is None:
        raise TwoFactorError("two-factor sign-in is not set up")
    method = _check_code(user=user, device=device, code=code, purpose="disable", allow_recovery=True, context=context)
    with transaction.atomic():
        TotpDevice.objects.filter(user=user).delete()
        RecoveryCode.objects.filter(user=user).delete()
        audit_record(action="2fa.disable", actor=actor, target=user, changes={"method": method}, context=context)


def recovery_codes_regenerate(*, user: User, code: str, actor: Actor, context: AuditContext | None = None) -> list[str]:
    """Replace every recovery code with a new set, proven by a current TOTP code; returns the new codes."""
    device = totp_device_confirmed(user=user)
    if device is None:
        raise TwoFactorError("two-factor sign-in is not set up")
    _check_code(user=user, device=device, code=code, purpose="regenerate", allow_recovery=False, context=context)
    with transaction.atomic():
        codes = _recovery_codes_issue(user)
        audit_record(
            action="2fa.recovery_regenerate",
            actor=actor,
            target=user,
            changes={"recovery_codes": len(codes)},
            context=context,
        )
    return codes
