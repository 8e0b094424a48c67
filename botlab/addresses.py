"""Checks of the addresses a team file names: email addresses, hosts, Nostr keys and relay URLs.

Used by the notifier sections of botlab/config.py, so `botlab validate` catches a wrong value before a run does.
Each check raises ValueError with a message meant for the user, or returns the value.
"""

from __future__ import annotations

import ipaddress
import re

# local-part@domain: what SMTP servers accept in practice (no display names, no comments, no quoted local parts).
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*"
                    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")


def email_address(value: str) -> str:
    if "<" in value or " " in value.strip():
        raise ValueError(f"{value!r} is not an email address: write only the address, like bot@example.org")
    if not _EMAIL.match(value.strip()):
        raise ValueError(f"{value!r} is not an email address (like bot@example.org)")
    return value.strip()


def host(value: str) -> str:
    try:
        ipaddress.ip_address(value.strip("[]"))
        return value
    except ValueError:
        pass
    if not _HOST.match(value):
        raise ValueError(f"{value!r} is not a host name or IP address (like smtp.example.org or 127.0.0.1)")
    return value


def is_loopback(value: str) -> bool:
    if value.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(value.strip("[]")).is_loopback
    except ValueError:
        return False


def nostr_public_key(value: str) -> str:
    """An npub or 64-hex public key, checked by nostr-sdk (bech32 checksum included)."""
    if value.startswith("nsec1"):
        raise ValueError("is a secret key (nsec); give the public key (npub) here, and never an nsec in team.yaml")
    from nostr_sdk import PublicKey  # loaded only for teams with a Nostr section

    try:
        PublicKey.parse(value)
    except Exception:
        raise ValueError(f"{_short(value)} is not an npub or hex public key") from None
    return value


def pubkey_hex(value: str) -> str:
    from nostr_sdk import PublicKey

    return PublicKey.parse(value).to_hex()


def no_repeats(field: str, values: list[str], key) -> None:
    """Raise naming the field when two values are the same address (an npub and its hex count as the same)."""
    seen: dict[str, str] = {}
    for value in values:
        if key(value) in seen:
            same = "" if seen[key(value)] == value else f" (as {seen[key(value)]!r})"
            raise ValueError(f"{field}: {value!r} is listed twice{same}")
        seen[key(value)] = value


def relay_url(value: str) -> str:
    if not value.startswith(("ws://", "wss://")):
        raise ValueError(f"relay {value!r} must start with ws:// or wss://")
    from nostr_sdk import RelayUrl

    try:
        RelayUrl.parse(value)
    except Exception as err:
        raise ValueError(f"relay {value!r} is not a valid URL ({err})") from None
    return value


def _short(value: str) -> str:
    return repr(value if len(value) <= 24 else value[:20] + "…")
