"""Rendering a notification: pure, no I/O after start-up, `now` passed in.

One Jinja2 environment is built per `Renderer` (StrictUndefined, HTML autoescape, templates loaded from
the package and compiled once at construction). Each rule of the rule book has a text and an HTML
template under `templates/rules/`; both extend a shared layout (`templates/base.txt.j2`,
`templates/base.html.j2`); escalations use `templates/escalation.*.j2`.

Guarantees of a `RenderedMessage` (each failure is a `RenderError`, which the pipeline records as a
permanent failure with its reason):
- no CR or LF in the recipient, sender or subject (`HeaderInjectionRefused`): header injection is impossible;
- the subject is `<marking>: <fixed wording>[ at <site>], ref <rule>-<8 hex>`, e.g. `OFFICIAL-SENSITIVE: PPO in
  custody at HMP Leeds, ref A1-3f9c1a2e`: the wording is the template's `subject` block, rendered with only
  `court`, `rule`, `ref` and `site` defined (StrictUndefined), so no name, identifier, date or other payload
  value can reach the subject, a lock screen or a gateway log. `site` is a prison's or court's name from the
  reference data (`shared.places`, checked when loaded) looked up by the code in the facts, else the code
  itself when it is a plain code (`[A-Z0-9]{2,10}`), else nothing. `ref` is the rule and the first 8 hex digits
  of sha256 of the delivery key (`reference_for`), shown near the top of both bodies so a caller can quote it;
- the subject is plain ASCII and folded by `SubjectHeader` at spaces only, its first word on the `Subject:` line
  (Python's own folding would move a 70 to 77 character subject whole to a continuation line);
- every body carries the recipient's protective marking (`marking`: the renderer's, or the one configured for
  the recipient's domain) as its first and last line, and the email an `X-Classification` header;
- the key facts end with exactly one deadline line, the recipient's own: "Act by <when>" or "No action
  deadline" (a late notice says so once, in its banner); places are named from the reference data with their
  code ("HMP Leeds (LEI)"), a Common Platform court event with its case ("Case URN ..., hearing on ..., at ...");
  a recipient is told who it works with from where it sits (`partner`: an offender manager is never asked to
  agree things "with the offender manager");
- nothing over `max_message_bytes` (default 1 MB) (`MessageTooLarge`);
- for a court recipient (role `court`, or flagged by the caller), the words "PPO", "prolific" and
  "priority offender" appear nowhere in the subject, the bodies, the acknowledgement link, the From header or
  any other header (`CourtDisclosureRefused`): PPO status is never revealed to a sentencer (001 §6.3, §7.2);
- a Message-ID derived only from (delivery key, recipient), so a re-send is recognisably the same message.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.headerregistry import BaseHeader, HeaderRegistry, UniqueUnstructuredHeader
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime
from typing import Any, cast

import jinja2
from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

from services.notifier.digest_context import RELEASE_KINDS, digest_context
from shared.clock import LONDON
from shared.custody import DIGEST
from shared.obligations import Obligation
from shared.places import CODE, Places, default_places

__all__ = [
    "CLASSIFICATION",
    "COURT_FORBIDDEN",
    "DIGEST",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "REPORTS",
    "RULES",
    "Attachment",
    "CourtDisclosureRefused",
    "HeaderInjectionRefused",
    "MessageTooLarge",
    "RenderError",
    "RenderedMessage",
    "Renderer",
    "SubjectHeader",
    "TemplateFailed",
    "UnknownRule",
    "delivery_key",
    "format_london",
    "message_id_for",
    "reference_for",
    "validate_address",
]

DEFAULT_MAX_MESSAGE_BYTES = 1_000_000

# UK Government Security Classifications: the default marking; every subject starts with the recipient's marking,
# every body opens and closes with it (PPO_MARKING, PPO_MARKING_BY_DOMAIN).
CLASSIFICATION = "OFFICIAL-SENSITIVE"
_MARKING = re.compile(r"^[A-Z0-9](?:[A-Za-z0-9 \[\]()/_-]{0,58}[A-Za-z0-9\])])?$")  # as shared.settings.MARKING

RULES: tuple[str, ...] = (
    "A1",
    "A2",
    "A3",
    "A4",
    "A5",
    "A6",
    "A7",
    "A8",
    "B1",
    "B2",
    "B3",
    "B4",
    "B5",
    "B6",
    "B8",
    "C1",
    "C2",
    "C3",
    "C4",
    "C5",
    "C6",
    "C7",
)
ESCALATION = "escalation"
REPORTS: tuple[str, ...] = (DIGEST,)  # reports the product sends (rule book D), rendered like rules

# "PPO"/"PPOs" as a word of its own (also inside ppo-alerts, X-PPO-, ppo_list), but not "support" or
# "opportunity"; "prolific" anywhere; "priority offender(s)" with any spacing or a hyphen.
COURT_FORBIDDEN = re.compile(r"(?<![a-z])ppos?(?![a-z])|prolific|priority[\s_-]*offender", re.IGNORECASE)

_CRLF = re.compile(r"[\r\n]")
_ADDRESS = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")

# The rule in plain words: (for police, probation, youth offending teams and coordinators; for a court).
RULE_SUMMARIES: dict[str, tuple[str, str]] = {
    "A1": (
        "A Prolific and Priority Offender (PPO) has been received into custody.",
        "A person has been received into custody.",
    ),
    "A2": (
        "A failure-to-appear warrant has been issued against a PPO: treat it as Category A.",
        "A failure-to-appear warrant has been issued and is to be treated as grade A.",
    ),
    "A3": (
        "A warrant has been issued against a PPO: treat it as Category A.",
        "A warrant has been issued and is to be treated as grade A.",
    ),
    "A4": (
        "A PPO in custody has a release date: this is the notice due at least 28 days before release.",
        "A person in custody has a release date: this is the advance notice of release.",
    ),
    "A5": (
        "A PPO in custody is eligible for home detention curfew (HDC); your input to the Governor's "
        "decision is needed.",
        "A person in custody is eligible for home detention curfew (HDC).",
    ),
    "A6": (
        "A possible home detention curfew (HDC) release date has been set for a PPO.",
        "A possible home detention curfew (HDC) release date has been set.",
    ),
    "A7": (
        "A PPO has been released from custody into the community.",
        "A person has been released from custody.",
    ),
    "A8": (
        "A PPO is to be released on temporary licence (ROTL): this is the advance notice.",
        "A person is to be released on temporary licence (ROTL).",
    ),
    "B1": ("A court has made a bail decision about a PPO.", "A court has made a bail decision."),
    "B2": ("A court has recorded an outcome for a PPO.", "A court has recorded an outcome."),
    "B3": ("A PPO has been sentenced; the sentence or training plan is due.", "A person has been sentenced."),
    "B4": (
        "A PPO has started a community order or been released into the community; a risk-of-harm "
        "assessment is due.",
        "A community order has started or a person has been released into the community.",
    ),
    "B5": (
        "A breach by a PPO has been reported; it is to be fast-tracked to a listing.",
        "A breach has been reported and is to be fast-tracked to a listing.",
    ),
    "B6": ("A PPO has been moved from one prison to another.", "A person has been moved between prisons."),
    "B8": (
        "A youth PPO has been convicted and needs a pre-sentence report.",
        "A young person has been convicted and needs a pre-sentence report.",
    ),
    "C1": (
        "A PPO has had no arrest and no police intelligence for six months: consider de-selection "
        "(criterion 1).",
        "No arrest and no police intelligence for six months.",
    ),
    "C2": (
        "A PPO has been on the register for two years: review the selection (criterion 5).",
        "Two years have passed since selection.",
    ),
    "C3": (
        "A PPO has received a custodial sentence of more than two years: consider de-selection "
        "(criterion 3).",
        "A custodial sentence of more than two years has been passed.",
    ),
    "C4": (
        "A person de-selected as a PPO because of long custody has a release date: consider "
        "re-selection before release (criterion 3).",
        "A person previously de-selected has a release date.",
    ),
    "C5": (
        "A PPO has moved into your area: decide whether to adopt them (criterion 2).",
        "A person has moved into your area.",
    ),
    "C6": (
        "Your periodic review of the PPO list is due: check each person on the list below.",
        "Your periodic list review is due.",
    ),
    "C7": (
        "An offence by a PPO has been flagged as high risk of harm: refer to MAPPA (criterion 6).",
        "An offence has been flagged as high risk of harm: refer to MAPPA.",
    ),
    DIGEST: (
        "Weekly custody list: every PPO of your area in custody, with the days to release.",
        "Weekly custody list.",
    ),
}

ROLE_LABELS: dict[str, tuple[str, str]] = {
    "ppo": ("the PPO contact", "a police contact"),
    "warrants": ("the warrants unit", "the warrants unit"),
    "probation": ("the offender manager (probation)", "probation"),
    "yot": ("the youth offending team", "the youth offending team"),
    "om": ("the offender manager", "the offender manager"),
    "coordinator": ("the PPO scheme coordinator", "the scheme coordinator"),
    "escalation": ("the duty inbox for missed deadlines", "the duty inbox"),
    "court": ("the court contact", "the court contact"),
}

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_PRISON_FIRST = frozenset({"A1", "A4", "A5", "A6", "A7", "A8", "B6", "C4"})
_WARRANTS = frozenset({"A2", "A3"})
_WARRANT_KINDS = {"fta": "failure to appear", "breach": "breach", "recall": "recall", "arrest": "arrest"}
_RELEASE_DATE_RULES = frozenset({"A4", "A6", "C4"})
_NO_SITE = frozenset({"B5", "C1", "C2", "C5", "C6", "C7", DIGEST})  # no one place: the subject names none
# Who the recipient works with, named from where they sit: an offender manager is never told to agree things
# "with the offender manager".
_PARTNERS = {"probation": "the police PPO contact", "yot": "the police PPO contact", "om": "the police PPO contact"}
_BLUE, _RED = "#1d70b8", "#d4351c"


# --- errors --------------------------------------------------------------------------------------------


class RenderError(Exception):
    """The message cannot be produced; `reason` is a short, bounded code for metrics and the send log."""

    reason = "render-error"


class HeaderInjectionRefused(RenderError, ValueError):
    reason = "header-injection"


class MessageTooLarge(RenderError):
    reason = "too-large"


class CourtDisclosureRefused(RenderError):
    reason = "court-disclosure"


class UnknownRule(RenderError):
    reason = "unknown-rule"


class TemplateFailed(RenderError):
    """A template raised (e.g. StrictUndefined: a variable it needs was not given)."""

    reason = "template-error"


# --- pure helpers --------------------------------------------------------------------------------------


def _as_instant_or_day(value: Any) -> datetime | date | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                return date.fromisoformat(text)
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def format_london(value: Any) -> str:
    """'Tuesday 10 February 2026, 14:00' (London wall clock) for an instant; 'Tuesday 10 February 2026'
    for a date. ISO strings are accepted (facts travel as JSON); anything else is shown as it is."""
    parsed = _as_instant_or_day(value)
    if parsed is None:
        return "" if value is None else str(value)
    if isinstance(parsed, datetime):
        local = parsed.astimezone(LONDON)
        return f"{_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} {local.year}, {local:%H:%M}"
    return f"{_DAYS[parsed.weekday()]} {parsed.day} {_MONTHS[parsed.month - 1]} {parsed.year}"


def format_london_day(value: Any) -> str:
    """The London date only: 'Tuesday 10 February 2026'."""
    parsed = _as_instant_or_day(value)
    if isinstance(parsed, datetime):
        parsed = parsed.astimezone(LONDON).date()
    return format_london(parsed) if parsed is not None else ("" if value is None else str(value))


def format_short_day(value: Any) -> str:
    """The London date, short, for tables: '1 Jun 2025'."""
    parsed = _as_instant_or_day(value)
    if isinstance(parsed, datetime):
        parsed = parsed.astimezone(LONDON).date()
    if parsed is None:
        return "" if value is None else str(value)
    return f"{parsed.day} {_MONTHS[parsed.month - 1][:3]} {parsed.year}"


def _words(value: Any) -> str:
    """`end_of_sentence` -> `end of sentence`; None -> ''."""
    if value is None:
        return ""
    return str(value).replace("_", " ")


def _a_an(text: Any) -> str:
    """'An automatic release date', 'A conditional release date': the article, capitalised, then the text."""
    words = str(text)
    return ("An " if words[:1].lower() in "aeiou" else "A ") + words


def validate_address(address: str, what: str = "recipient") -> str:
    """The address itself, or HeaderInjectionRefused / ValueError with a message a person can act on."""
    if not isinstance(address, str) or _CRLF.search(address):
        raise HeaderInjectionRefused(f"{what} address contains a line break: refused (header injection)")
    if not _ADDRESS.match(address.strip()):
        raise HeaderInjectionRefused(f"{what} {address!r} is not a plain email address (name@domain)")
    return address.strip()


def delivery_key(obligation_id: str, escalation: bool = False) -> str:
    """What the send log and the Message-ID are keyed on, with the recipient."""
    return f"{obligation_id}#escalation" if escalation else obligation_id


def reference_for(key: str, rule: str | None = None) -> str:
    """The short opaque reference of a delivery key ('3f9a1c2e'; with the rule, 'A1-3f9a1c2e', as subjects and
    bodies show it): for people to quote on the phone; it names nobody and can only be matched by the service."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"{rule}-{digest}" if rule else digest


def message_id_for(key: str, recipient: str, domain: str = "ppo-alerts") -> str:
    # 128 bits of sha256: unique enough, and short enough that the header is never folded.
    digest = hashlib.sha256(f"{key}\n{recipient.strip().lower()}".encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def _split_sender(sender: str) -> str:
    """The bare address of a From value ('Name <a@b>' or 'a@b')."""
    match = re.search(r"<([^<>]*)>\s*$", sender)
    return match.group(1) if match else sender


class SubjectHeader(UniqueUnstructuredHeader):
    """A Subject folded at spaces, its first word always on the `Subject:` line. Python's folding moves an
    unstructured value that does not fit after the name, but fits on a line of its own, whole to a continuation
    line (`Subject:` then ` OFFICIAL-SENSITIVE: ...`): a subject of 70 to 77 characters arrives with a leading
    space in some clients. The header object travels with the message, so the SMTP client's policy folds with it."""

    def fold(self, *, policy: Any) -> str:
        header = cast(BaseHeader, self)  # the registry makes each header class a BaseHeader too
        text = str(self)
        if not text.isascii() or _CRLF.search(text):
            return BaseHeader.fold(header, policy=policy)  # not header.fold: that is this method
        limit = policy.max_line_length or 998
        lines: list[str] = []
        line = f"{header.name}:"
        for i, word in enumerate(text.split(" ")):
            if i and len(line) + 1 + len(word) > limit:
                lines.append(line)
                line = " " + word
            else:
                line = f"{line} {word}"
        lines.append(line)
        return str(policy.linesep).join(lines) + str(policy.linesep)


_HEADERS = HeaderRegistry()
_HEADERS.map_to_type("subject", cast("type[BaseHeader]", SubjectHeader))
MESSAGE_POLICY = default_policy.clone(header_factory=_HEADERS)


# --- the rendered message ------------------------------------------------------------------------------

_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Attachment:
    """A file attached to a message (the digest's CSV). The name is plain: letters, digits, dot, dash, underscore."""

    filename: str
    content_type: str  # e.g. text/csv
    data: bytes

    def __post_init__(self) -> None:
        if not _FILENAME.match(self.filename):
            raise HeaderInjectionRefused(f"attachment name {self.filename!r} refused (letters, digits, . _ - only)")
        if not re.fullmatch(r"[a-z]+/[a-z0-9.+-]+", self.content_type):
            raise ValueError(f"content type {self.content_type!r} is not a MIME type")


@dataclass(frozen=True)
class RenderedMessage:
    obligation_id: str
    rule: str
    recipient: str
    role: str
    delivery_key: str
    subject: str
    text: str
    html: str
    template_version: str
    message_id: str
    court_recipient: bool
    rendered_at: datetime
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    attachments: tuple[Attachment, ...] = ()
    marking: str = CLASSIFICATION

    def to_email(self, sender: str) -> EmailMessage:
        """The RFC 5322 message: text and HTML alternatives, deterministic Message-ID, X-PPO-* headers
        (X-Alert-* for a court recipient, which must not read "PPO" anywhere)."""
        if not isinstance(sender, str) or _CRLF.search(sender):
            raise HeaderInjectionRefused("sender contains a line break: refused (header injection)")
        validate_address(_split_sender(sender), "sender")
        validate_address(self.recipient)
        for name, value in (("subject", self.subject), ("reference", self.delivery_key), ("rule", self.rule),
                            ("marking", self.marking)):
            if _CRLF.search(value):
                raise HeaderInjectionRefused(f"{name} contains a line break: refused (header injection)")
        prefix = "X-Alert" if self.court_recipient else "X-PPO"
        msg = EmailMessage(policy=MESSAGE_POLICY)
        msg["From"] = sender
        msg["To"] = self.recipient
        msg["Subject"] = self.subject
        msg["Date"] = format_datetime(self.rendered_at.astimezone(UTC))
        msg["Message-ID"] = self.message_id
        msg[f"{prefix}-Obligation"] = self.delivery_key
        msg[f"{prefix}-Rule"] = self.rule
        msg[f"{prefix}-Template"] = self.template_version
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Classification"] = self.marking
        msg.set_content(self.text)
        msg.add_alternative(self.html, subtype="html")
        for a in self.attachments:
            maintype, subtype = a.content_type.split("/", 1)
            msg.add_attachment(a.data, maintype=maintype, subtype=subtype, filename=a.filename)
        if self.court_recipient:
            for name, value in msg.items():
                if COURT_FORBIDDEN.search(f"{name}: {value}"):
                    raise CourtDisclosureRefused(
                        f"header {name} would reveal PPO status to a court recipient: refused "
                        "(use a neutral sender address and acknowledgement host for court recipients)"
                    )
        size = len(msg.as_bytes())
        if size > self.max_message_bytes:
            raise MessageTooLarge(
                f"message is {size} bytes, over the limit of {self.max_message_bytes} bytes"
            )
        return msg


# --- the renderer --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    text: Template
    html: Template
    version: str


class Renderer:
    """Built once; `render` is pure (same inputs, same message)."""

    def __init__(
        self,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        message_id_domain: str = "ppo-alerts",
        court_message_id_domain: str = "notices",
        loader: jinja2.BaseLoader | None = None,
        marking: str = CLASSIFICATION,
        marking_by_domain: Mapping[str, str] | None = None,
        places: Places | None = None,
    ) -> None:
        if max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be at least 1024")
        by_domain = {d.strip().lower(): m for d, m in (marking_by_domain or {}).items()}
        for value in (marking, *by_domain.values()):
            if not isinstance(value, str) or not _MARKING.match(value):
                raise ValueError(f"marking {str(value)[:70]!r} must be one line of ASCII letters, digits, spaces and "
                                 "[ ] ( ) / _ - (at most 60 characters)")
        self.marking = marking
        # longest domain first: a subdomain's own marking wins over its parent's
        self.marking_by_domain = dict(sorted(by_domain.items(), key=lambda item: -len(item[0])))
        self.places = places or default_places()
        for domain in (message_id_domain, court_message_id_domain):
            if not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
                raise ValueError(f"message id domain {domain!r} must be letters, digits, dots and hyphens")
        if COURT_FORBIDDEN.search(court_message_id_domain):
            raise ValueError("court_message_id_domain must not name PPOs")
        self.max_message_bytes = max_message_bytes
        self.message_id_domain = message_id_domain
        self.court_message_id_domain = court_message_id_domain
        self.environment = Environment(
            loader=loader or PackageLoader("services.notifier", "templates"),
            undefined=StrictUndefined,
            autoescape=select_autoescape(
                enabled_extensions=("html.j2",), default_for_string=False, default=False
            ),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self.environment.filters["london"] = format_london
        self.environment.filters["london_day"] = format_london_day
        self.environment.filters["words"] = _words
        self.environment.filters["fixed"] = lambda value, width: str(value).ljust(int(width))
        self.environment.filters["release_kind"] = lambda kind: RELEASE_KINDS.get(str(kind), _words(kind))
        self.environment.filters["a_an"] = _a_an
        self.environment.filters["short_day"] = format_short_day
        # 'HMP Leeds (LEI)' for a code the reference data names (the digest's prison column)
        self.environment.filters["prison"] = lambda code: self.prison_label(code).removeprefix("prison ")
        self._compiled: dict[str, _Compiled] = {
            name: self._compile(name) for name in (*RULES, ESCALATION, *REPORTS)
        }

    def _compile(self, name: str) -> _Compiled:
        folder = "" if name == ESCALATION else "rules/"
        text_name, html_name = f"{folder}{name}.txt.j2", f"{folder}{name}.html.j2"
        digest = hashlib.sha256()
        for source_name in ("base.txt.j2", "base.html.j2", text_name, html_name):
            source, _, _ = self.environment.loader.get_source(self.environment, source_name)  # type: ignore[union-attr]
            digest.update(source_name.encode() + b"\0" + source.encode() + b"\0")
        digest.update(repr(RULE_SUMMARIES.get(name, ())).encode())
        text = self.environment.get_template(text_name)
        if "subject" not in text.blocks:
            raise ValueError(f"template {text_name} has no subject block")
        return _Compiled(text, self.environment.get_template(html_name), digest.hexdigest()[:12])

    def template_version(self, rule: str) -> str:
        return self._compiled[rule].version

    def marking_for(self, recipient: str) -> str:
        """The recipient's protective marking: its domain's (a listed domain covers its subdomains, any case),
        else the renderer's."""
        domain = recipient.rpartition("@")[2].strip().lower()
        for listed, marking in self.marking_by_domain.items():
            if domain == listed or domain.endswith("." + listed):
                return marking
        return self.marking

    def site_for(self, rule: str, facts: Mapping[str, Any]) -> str:
        """The place a subject names: a name from the reference data, else the code when it is a plain code,
        else ''. Never a payload's own text (a court centre's name as the feed gave it stays in the body)."""
        if rule in _NO_SITE:
            return ""
        prison = facts.get("to_prison_id") or facts.get("prison_id")
        if prison:
            return self.places.prison(prison) or (prison if isinstance(prison, str) and CODE.match(prison) else "")
        code = facts.get("court_code")
        if code:
            return self.places.court(code) or (code if isinstance(code, str) and CODE.match(code) else "")
        return ""

    def render(
        self,
        obligation: Obligation,
        recipient: str,
        role: str,
        ack_url: str | None,
        now: datetime,
        *,
        court_recipient: bool = False,
        escalation_reason: str | None = None,
    ) -> RenderedMessage:
        """The message for one recipient. Escalation template when `escalation_reason` is given or the
        obligation's rule is `escalation`. Raises RenderError (permanent: re-rendering gives the same)."""
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        recipient = validate_address(recipient)
        escalation = escalation_reason is not None or obligation.rule == ESCALATION
        name = ESCALATION if escalation else obligation.rule
        compiled = self._compiled.get(name)
        if compiled is None:
            raise UnknownRule(
                f"no template for rule {obligation.rule!r} (known: {', '.join((*RULES, *REPORTS))})"
            )
        court = court_recipient or role == "court"
        if ack_url is not None:
            if _CRLF.search(ack_url) or not re.match(r"^https?://", ack_url):
                raise HeaderInjectionRefused("acknowledgement link must be a single-line http(s) URL")
        key = delivery_key(obligation.obligation_id, escalation and obligation.rule != ESCALATION)
        ref = reference_for(key, obligation.rule)
        marking = self.marking_for(recipient)
        context = self._context(obligation, recipient, role, ack_url, now, court, escalation_reason)
        context.update(ref=ref, original_ref=reference_for(obligation.obligation_id, obligation.rule),
                       classification=marking, marking=marking)
        site = "" if escalation else self.site_for(obligation.rule, context["facts"])
        attachments: tuple[Attachment, ...] = ()
        if name == DIGEST:
            context.update(digest_context(context["facts"], context["bcu"], now))
            context["key_facts"] = self._digest_facts(context)
            attachments = (Attachment(context["custody_csv_name"], "text/csv", context["custody_csv"]),)
        try:
            # The subject block sees only these four names: a template that reaches for a payload value
            # (person_label, establishment, facts, ...) fails here (StrictUndefined) instead of leaking it; `site`
            # is reference data or a plain code (site_for).
            subject_context = {"court": court, "rule": obligation.rule, "ref": ref, "site": site}
            wording = "".join(compiled.text.blocks["subject"](compiled.text.new_context(subject_context))).strip()
            wording = re.sub(r"[ \t]{2,}", " ", wording)
            subject = f"{marking}: {wording}, ref {ref}"
            context["subject"] = subject
            text = compiled.text.render(context)
            html = compiled.html.render(context)
        except jinja2.TemplateError as exc:
            raise TemplateFailed(f"template {name} failed: {exc}") from exc
        if _CRLF.search(subject):
            raise HeaderInjectionRefused("subject contains a line break: refused (header injection)")
        if court:
            parts = [("subject", subject), ("text body", text), ("HTML body", html)]
            parts += [(a.filename, a.data.decode("utf-8", "replace")) for a in attachments]
            for part, content in parts:
                if COURT_FORBIDDEN.search(content):
                    raise CourtDisclosureRefused(
                        f"{part} would reveal PPO status to a court recipient: refused (001 §6.3, §7.2)"
                    )
        size = len(subject.encode()) + len(text.encode()) + len(html.encode())
        size += sum(len(a.data) for a in attachments)
        if size > self.max_message_bytes:
            raise MessageTooLarge(
                f"message is {size} bytes, over the limit of {self.max_message_bytes} bytes"
            )
        domain = self.court_message_id_domain if court else self.message_id_domain
        return RenderedMessage(
            obligation_id=obligation.obligation_id,
            rule=obligation.rule,
            recipient=recipient,
            role=role,
            delivery_key=key,
            subject=subject,
            text=text,
            html=html,
            template_version=compiled.version,
            message_id=message_id_for(key, recipient, domain),
            court_recipient=court,
            rendered_at=now.astimezone(UTC),
            max_message_bytes=self.max_message_bytes,
            attachments=attachments,
            marking=marking,
        )

    # --- the template variables (all top-level names are always defined: StrictUndefined) ---------------

    def _context(
        self,
        o: Obligation,
        recipient: str,
        role: str,
        ack_url: str | None,
        now: datetime,
        court: bool,
        escalation_reason: str | None,
    ) -> dict[str, Any]:
        facts: Mapping[str, Any] = o.facts if isinstance(o.facts, Mapping) else {}
        person = o.person
        identifiers: list[tuple[str, str]] = []
        person_name = ""
        dob = ""
        primary_id = ""
        if person is not None:
            ids = person.identifiers()
            identifiers = [(k.upper(), v) for k, v in ids.items()]
            person_name = " ".join(
                part for part in (person.given_name or "", (person.family_name or "").upper()) if part
            )
            born = person.date_of_birth
            dob = f"{born.day} {_MONTHS[born.month - 1]} {born.year}" if born else ""
            order = (
                ("noms", "pnc", "crn", "cro") if o.rule in _PRISON_FIRST else ("pnc", "crn", "noms", "cro")
            )
            primary_id = next((ids[k] for k in order if k in ids), "")
        label = person_name or "name not recorded"
        person_label = f"{label} ({primary_id})" if primary_id else label
        summaries = RULE_SUMMARIES.get(o.rule, (f"Rule {o.rule}.", f"Rule {o.rule}."))
        role_label = ROLE_LABELS.get(role, (role or "a listed contact", role or "a listed contact"))
        history = [(format_london(h.at), h.what) for h in o.history]
        listed = facts.get("ppos")
        ppos: list[Any] = listed if isinstance(listed, list) else []
        escalation = escalation_reason is not None or o.rule == ESCALATION
        category_a = o.rule in _WARRANTS or (o.grade or "").upper() == "A"
        prison, court_label = self.prison_label(facts.get("prison_id")), self.court_label(facts)
        from_prison = self.prison_label(facts.get("from_prison_id"))
        to_prison = self.prison_label(facts.get("to_prison_id"))
        case_line = self.case_line(facts)
        where = _where(o.rule, facts, prison, court_label, from_prison, to_prison)
        act_by = _act_by(o, facts)
        key_facts: list[tuple[str, str, bool]] = []
        if person is not None:
            key_facts.append(("Who", f"{person_label}, born {dob}" if dob else person_label, True))
        elif o.bcu:
            key_facts.append(("Area", o.bcu, False))
        if where:
            key_facts.append(("Where", where, False))
        if o.occurred_at:
            key_facts.append(("When", f"{format_london(o.occurred_at)} (UK time)", False))
        if case_line:
            key_facts.append(("Case", case_line.removeprefix("Case "), False))
        if o.rule in _WARRANTS and facts.get("warrant_id"):
            raw_kind = facts.get("kind")
            kind = _WARRANT_KINDS.get(str(raw_kind), _words(raw_kind)) if raw_kind else ""
            # A Common Platform warrant's id is the service's own hash: a secondary reference after the case
            warrant = f"{kind}, service reference {facts['warrant_id']}" if case_line else (
                f"{facts['warrant_id']} ({kind})" if kind else str(facts["warrant_id"]))
            key_facts.append(("Warrant", warrant, False))
        if o.grade:
            key_facts.append(("Grade", f"{o.grade} (Category A)" if o.grade.upper() == "A" else o.grade, True))
        if escalation:
            accepted = f", accepted by the mail server {format_london(o.notified_at)}" if o.notified_at else ""
            key_facts.append(("Status", o.status + accepted, True))
            key_facts.append(("Notice was due", f"{format_london(o.notify_by)} (UK time)", False))
        # Exactly one deadline line, the recipient's own: "Act by ..." or "No action deadline".
        key_facts.append(("Deadline", f"Act by {act_by}" if act_by else "No action deadline", bool(act_by)))
        return {
            "obligation": o,
            "obligation_id": o.obligation_id,
            "rule": o.rule,
            "facts": facts,
            "person": person,
            "person_name": person_name,
            "person_label": person_label,
            "identifiers": identifiers,
            "dob": dob,
            "establishment": prison,
            "from_prison": from_prison,
            "to_prison": to_prison,
            "court_code": facts.get("court_code") or "",
            "court_label": court_label,
            "case_line": case_line,
            "result_text": facts.get("result_text") or "",
            "partner": _PARTNERS.get(role, "the offender manager"),
            "bcu": o.bcu or "",
            "occurred_at": format_london(o.occurred_at) if o.occurred_at else "",
            "raised_at": format_london(o.raised_at),
            "send_at": format_london(o.send_at),
            "notify_by": format_london(o.notify_by),
            "action_due": format_london(o.action_due) if o.action_due else "",
            "late": now > o.notify_by,
            "grade": o.grade or "",
            "source_paragraph": o.source_paragraph,
            "ack_url": ack_url or "",
            "court": court,
            "role": role,
            "role_label": role_label[1 if court else 0],
            "recipient": recipient,
            "summary": summaries[1 if court else 0],
            "generated_at": format_london(now),
            "ppos": [p for p in ppos if isinstance(p, Mapping)],
            "escalation_reason": escalation_reason or "",
            "history": history,
            "status": o.status,
            "notified_at": format_london(o.notified_at) if o.notified_at else "",
            "original_summary": summaries[1 if court else 0],
            "original_recipients": list(o.recipients),
            "category_a": category_a,
            "accent": _RED if category_a or escalation else _BLUE,
            "where": where,
            "act_by": act_by,
            "key_facts": key_facts,
        }

    def prison_label(self, code: Any) -> str:
        """'HMP Leeds (LEI)'; 'prison XYZ' when the reference data does not name it; '' for no code."""
        if not code:
            return ""
        name = self.places.prison(code)
        return f"{name} ({code})" if name else f"prison {code}"

    def court_label(self, facts: Mapping[str, Any]) -> str:
        """'Liverpool Crown Court (B05KP00)': the reference data's name, else the name the feed gave (bodies
        only), else 'court B05KP00'; '' for no court."""
        code = facts.get("court_code")
        if not code:
            return ""
        name = self.places.court(code) or facts.get("court_name")
        return f"{name} ({code})" if name else f"court {code}"

    def case_line(self, facts: Mapping[str, Any]) -> str:
        """'Case URN 74GD8837719, hearing on Monday 28 January 2019, at Liverpool Crown Court': what an officer
        can look up, from a Common Platform hearing; '' when the facts carry no case."""
        if not facts.get("case_urn") and not facts.get("hearing_date"):
            return ""
        parts = []
        if facts.get("case_urn"):
            parts.append(f"Case URN {facts['case_urn']}")
        if facts.get("hearing_date"):
            parts.append(f"hearing on {format_london_day(facts['hearing_date'])}")
        code = facts.get("court_code")
        name = self.places.court(code) or facts.get("court_name") or code
        if name:
            parts.append(f"at {name}")
        return ", ".join(parts)

    @staticmethod
    def _digest_facts(context: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
        count, soon, nxt = context["custody_count"], context["custody_soon"], context["custody_next"]
        facts = [
            ("Area", context["bcu"] or "not named", False),
            ("As of", format_london_day(context["custody_today"]), False),
            ("In custody", f"{count} {'person' if count == 1 else 'people'}", True),
            ("Release in 28 days or fewer", str(soon), soon > 0),
        ]
        if nxt is not None:
            facts.append(("Next release", "today" if nxt == 0 else f"in {nxt} day{'' if nxt == 1 else 's'}", True))
        if context["custody_unknown"]:
            facts.append(("Release date not known", str(context["custody_unknown"]), False))
        facts.append(("Deadline", "No action deadline", False))
        return facts


def _where(rule: str, facts: Mapping[str, Any], prison: str, court: str, from_prison: str, to_prison: str) -> str:
    """Where it happened, in words: a prison, a court, or an area."""
    if from_prison and to_prison:
        return f"{to_prison}, moved from {from_prison}"
    if rule == "C5" and facts.get("to_bcu"):
        return f"{facts['to_bcu']}" + (f" (moved from {facts['from_bcu']})" if facts.get("from_bcu") else "")
    return prison or court


def _act_by(o: Obligation, facts: Mapping[str, Any]) -> str:
    """The recipient's deadline in words: the obligation's `action_due`, or what the facts imply."""
    if o.action_due is not None:
        return f"{format_london(o.action_due)} (UK time)"
    if o.rule in _RELEASE_DATE_RULES and facts.get("release_date"):
        return f"{format_london_day(facts['release_date'])}, the release date"
    if o.rule == "A8" and facts.get("starts_at"):
        return f"{format_london(facts['starts_at'])} (UK time), when the licence starts"
    return ""
