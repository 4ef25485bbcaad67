"""Salted password hashes for control-API users (scrypt by default, PBKDF2-SHA256 accepted).

Format: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` or
``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` — self-describing, so the cost can be raised
later without invalidating stored hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = ["hash_password", "verify_password"]

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_PBKDF2_ITERATIONS = 600_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, scheme: str = "scrypt") -> str:
    """Hash ``password`` with a fresh 16-octet salt (``scheme``: ``scrypt`` or ``pbkdf2_sha256``)."""
    salt = os.urandom(16)
    secret = password.encode("utf-8")
    if scheme == "scrypt":
        digest = hashlib.scrypt(secret, salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
        return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"
    if scheme == "pbkdf2_sha256":
        digest = hashlib.pbkdf2_hmac("sha256", secret, salt, _PBKDF2_ITERATIONS, dklen=32)
        return f"pbkdf2_sha256${_PBKDF2_ITERATIONS}${_b64(salt)}${_b64(digest)}"
    raise ValueError(f"unknown password hash scheme {scheme!r} (use 'scrypt' or 'pbkdf2_sha256')")


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; malformed hashes never match."""
    secret = password.encode("utf-8")
    parts = encoded.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            expected = _unb64(parts[5])
            digest = hashlib.scrypt(
                secret, salt=_unb64(parts[4]), n=n, r=r, p=p, dklen=len(expected), maxmem=2**28
            )
        elif parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            expected = _unb64(parts[3])
            digest = hashlib.pbkdf2_hmac(
                "sha256", secret, _unb64(parts[2]), int(parts[1]), dklen=len(expected)
            )
        else:
            return False
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)
