"""Reading one incoming mail: is it a human's reply we may act on, and what did they write above the quote?

Accepted only when the From address is allowlisted, the mail is not automatic (vacation replies, bounces, lists),
it answers a digest (In-Reply-To/References, or the team's subject tag) and, where configured, it carries a valid
DKIM signature of the sender's domain. Anything else gets a reason, for the events log.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from typing import Callable

from mailparser_reply import EmailReplyParser

REPLY_LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "pl", "sv", "da", "cs", "ja", "ko", "zh"]
MAX_TEXT = 4000
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


@dataclass
class Incoming:
    """A message a human sent to the team, already authenticated."""

    channel: str
    external_id: str  # dedupe key: Message-ID, rumor id, ...
    sender: str
    text: str
    digest_id: int | None = None


@dataclass
class MailRules:
    allowed_senders: set[str]
    own_addresses: set[str]
    subject_tag: str  # "[botlab TEAM]": accepted as a reply even when a client drops In-Reply-To
    dkim_required: bool = False
    dkim_dns: Callable | None = None  # dkimpy's dnsfunc; None = real DNS


def message_ids(value: str | None) -> list[str]:
    """Message-IDs in a header; folded or padded headers come back clean ('<a@b>')."""
    return _MESSAGE_ID.findall(value or "")


def read_reply(raw: bytes, rules: MailRules, find_digest: Callable[[list[str]], int | None]) -> Incoming | str:
    """The reply, or the reason it is ignored."""
    msg: EmailMessage = message_from_bytes(raw, policy=policy.default)
    automatic = _automatic(msg)
    if automatic:
        return f"automatic mail ({automatic})"
    sender = parseaddr(str(msg.get("From", "")))[1].lower()
    if not sender:
        return "no sender address"
    if sender in rules.own_addresses:
        return f"sent by the team itself ({sender})"
    if sender not in rules.allowed_senders:
        return f"sender {sender} is not allowed to steer this team"
    if len(getaddresses([str(v) for v in msg.get_all("From", [])])) != 1:
        return "more than one From address"
    if rules.dkim_required:
        problem = _dkim_problem(raw, sender, rules.dkim_dns)
        if problem:
            return f"{sender}: {problem}"
    refs = message_ids(msg.get("In-Reply-To")) + message_ids(msg.get("References"))
    digest_id = find_digest(refs) if refs else None
    if digest_id is None and rules.subject_tag.lower() not in str(msg.get("Subject", "")).lower():
        return "not a reply to a digest of this team"
    text = reply_text(msg)
    if not text:
        return "the reply is empty once the quoted digest is removed"
    ids = message_ids(msg.get("Message-ID"))
    external_id = ids[0] if ids else "sha256:" + hashlib.sha256(raw).hexdigest()
    return Incoming(channel="email", external_id=external_id, sender=sender, text=text, digest_id=digest_id)


def _automatic(msg: EmailMessage) -> str:
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    if auto != "no":
        return f"Auto-Submitted: {auto}"
    precedence = str(msg.get("Precedence", "")).strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"Precedence: {precedence}"
    for header in ("X-Autoreply", "X-Autorespond", "List-Id", "List-Unsubscribe"):
        if msg.get(header) is not None:
            return header
    if not str(msg.get("Return-Path", "x")).strip("<> "):
        return "empty Return-Path (a bounce)"
    return ""


def _dkim_problem(raw: bytes, sender: str, dnsfunc: Callable | None) -> str:
    """'' when some DKIM signature verifies and its d= domain aligns with the sender's domain."""
    import dkim

    count = len(re.findall(rb"(?im)^DKIM-Signature:", raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]))
    if count == 0:
        return "no DKIM signature"
    sender_domain = sender.rsplit("@", 1)[-1]
    checker = dkim.DKIM(raw)
    for idx in range(count):
        try:
            ok = checker.verify(idx=idx, dnsfunc=dnsfunc) if dnsfunc else checker.verify(idx=idx)
        except Exception:  # malformed signature or DNS failure: this signature does not count
            continue
        domain = (checker.domain or b"").decode().lower()
        if ok and (sender_domain == domain or sender_domain.endswith("." + domain)):
            return ""
    return "no valid DKIM signature of the sender's domain"


def reply_text(msg: EmailMessage) -> str:
    """What the human wrote: the plain part (or HTML as text), without the quoted digest and the signature."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    body = part.get_content()
    if part.get_content_subtype() == "html":
        body = _html_to_text(body)
    # The latest reply without quotes. Its signature detection is not used: it took a last "/command" line for one.
    text = EmailReplyParser(languages=REPLY_LANGUAGES).read(text=body).latest_reply or ""
    lines = []
    for line in text.splitlines():
        if line.rstrip() == "--":  # the standard signature separator ("-- ")
            break
        if not line.lstrip().startswith(">"):  # inline quoting the parser kept is the digest, not the human
            lines.append(line)
    return "\n".join(lines).strip()[:MAX_TEXT]


def _html_to_text(body: str) -> str:
    body = re.sub(r"(?is)<(script|style|blockquote).*?</\1>", "", body)
    body = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", body)
    return html.unescape(re.sub(r"<[^>]+>", "", body))
