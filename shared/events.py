"""Canonical events (contract §1): the one format every service speaks after intake.

Each event type is its own model so that validation names the exact field that is wrong; the union
is discriminated on `type`, so an unknown type is rejected with the list of known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)

from shared.identifiers import NORMALISERS as _NORMALISERS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _identifier_validator(kind: str) -> Callable[[Any], Any]:
    """Blank is None; a string is normalised; anything else is left to the `str` check, which names what it got.
    A plain (no-info) validator per field: this is the hot path of every service. The normalisers recognise
    the normal form, as nearly every feed sends it, in one regular-expression match."""
    normalise = _NORMALISERS[kind]

    def validate(v: Any) -> Any:
        if type(v) is str:
            return normalise(v) if v.strip() else None
        return v

    return validate


_Pnc = Annotated[str | None, BeforeValidator(_identifier_validator("pnc"))]
_Cro = Annotated[str | None, BeforeValidator(_identifier_validator("cro"))]
_Noms = Annotated[str | None, BeforeValidator(_identifier_validator("noms"))]
_Crn = Annotated[str | None, BeforeValidator(_identifier_validator("crn"))]


def clean_name(value: Any) -> Any:
    """A name as text a message can carry: control and format characters (line breaks, NUL, bidi overrides,
    zero-width) become spaces, runs of space one, ends stripped; blank is None. A name with a line break was an
    agency's glitch or an attack on a mail header: the fact it came with is still true, so it is cleaned, not
    refused. Anything but a string is left to the `str` check, which names what it got."""
    if type(value) is not str:
        return value
    if not value.isprintable():  # the usual name is printable: one C-level scan
        value = " ".join("".join(c if c.isprintable() else " " for c in value).split())
    return value.strip() or None


_Name = Annotated[Annotated[str, Field(max_length=100)] | None, BeforeValidator(clean_name)]


class Person(Strict):
    """Who an event is about. At least one identifier; identifiers are normalised on the way in."""

    pnc: _Pnc = None
    cro: _Cro = None
    noms: _Noms = None
    crn: _Crn = None
    given_name: _Name = None
    family_name: _Name = None
    date_of_birth: date | None = None

    @model_validator(mode="after")
    def _has_identifier(self) -> Person:
        if not (self.pnc or self.cro or self.noms or self.crn):
            raise ValueError("a person needs at least one identifier: pnc, cro, noms or crn")
        return self

    def identifiers(self) -> dict[str, str]:
        return {k: v for k, v in (("pnc", self.pnc), ("cro", self.cro), ("noms", self.noms), ("crn", self.crn)) if v}

    @property
    def log_ref(self) -> str:
        """An identifier safe to log (never a name or a date of birth)."""
        for k, v in self.identifiers().items():
            return f"{k}:{v}"
        return "-"


# What a Common Platform hearing tells about a court event (formats.md §2), optional for every other source: the
# case an officer can look up, the hearing, the court as the feed names it, and the result in the court's words.
# Text from a feed, as a message can carry it: control characters cleaned (clean_name), length bounded.
CaseUrn = Annotated[Annotated[str, Field(max_length=40)] | None, BeforeValidator(clean_name)]
CourtName = Annotated[Annotated[str, Field(max_length=100)] | None, BeforeValidator(clean_name)]
ResultText = Annotated[Annotated[str, Field(max_length=500)] | None, BeforeValidator(clean_name)]

PrisonId = Annotated[str, Field(min_length=2, max_length=10, pattern=r"^[A-Z0-9]+$")]
CourtCode = Annotated[str, Field(min_length=1, max_length=20)]
Reference = Annotated[str, Field(min_length=1, max_length=200)]


# --- data payloads, one per event type -------------------------------------------------------------

ReceptionReason = Literal["new", "remand", "recall", "transfer_in", "return_from_court", "rotl_return"]
ReleaseReason = Literal[
    "released", "hdc", "licence", "end_of_sentence", "bail", "rotl", "to_court", "transfer", "to_hospital"
]


class ReceptionData(Strict):
    prison_id: PrisonId
    reason: ReceptionReason


class ReleaseData(Strict):
    prison_id: PrisonId
    reason: ReleaseReason


class TransferData(Strict):
    from_prison_id: PrisonId
    to_prison_id: PrisonId


class ReleaseDateSetData(Strict):
    prison_id: PrisonId
    release_date: date | None  # null: the date was withdrawn
    kind: Literal["crd", "ard", "confirmed", "hdc", "parole", "other"]


class HdcEligibleData(Strict):
    prison_id: PrisonId
    eligibility_date: date
    decision_due: date | None = None


class RotlScheduledData(Strict):
    prison_id: PrisonId
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None


class BailDecisionData(Strict):
    court_code: CourtCode
    decision: Literal["custody", "conditional_bail", "unconditional_bail"]
    case_urn: CaseUrn = None  # prosecutionCaseIdentifier.caseURN (or prosecutionAuthorityReference)
    hearing_date: date | None = None  # the London date of the hearing
    court_name: CourtName = None  # courtCentre.name, as the feed gave it
    result_text: ResultText = None  # the judicial result's own wording (resultText, else label)


class CourtOutcomeData(Strict):
    court_code: CourtCode
    outcome: Literal["conviction", "acquittal", "adjournment", "dismissed", "withdrawn", "committal", "other"]
    case_ended: bool | None = None
    case_urn: CaseUrn = None  # prosecutionCaseIdentifier.caseURN (or prosecutionAuthorityReference)
    hearing_date: date | None = None  # the London date of the hearing
    court_name: CourtName = None  # courtCentre.name, as the feed gave it
    result_text: ResultText = None  # the judicial result's own wording (resultText, else label)


class SentenceData(Strict):
    court_code: CourtCode
    disposal: Literal["custody", "community", "suspended", "fine", "discharge", "other"]
    custody_days: int | None = Field(default=None, ge=0, le=100 * 366)
    case_urn: CaseUrn = None  # prosecutionCaseIdentifier.caseURN (or prosecutionAuthorityReference)
    hearing_date: date | None = None  # the London date of the hearing
    court_name: CourtName = None  # courtCentre.name, as the feed gave it
    result_text: ResultText = None  # the judicial result's own wording (resultText, else label)


class WarrantIssuedData(Strict):
    warrant_id: Reference
    court_code: CourtCode
    kind: Literal["fta", "breach", "recall", "arrest"]
    backed_for_bail: bool | None = None
    grade_given: str | None = Field(default=None, max_length=10)
    case_urn: CaseUrn = None  # prosecutionCaseIdentifier.caseURN (or prosecutionAuthorityReference)
    hearing_date: date | None = None  # the London date of the hearing
    court_name: CourtName = None  # courtCentre.name, as the feed gave it
    result_text: ResultText = None  # the judicial result's own wording (resultText, else label)


class WarrantWithdrawnData(Strict):
    warrant_id: Reference


class BreachReportedData(Strict):
    order: Literal["community_order", "licence", "bail"]


class PoliceData(Strict):
    force_code: str | None = Field(default=None, max_length=10)


class NoData(Strict):
    pass


class SelectedData(Strict):
    home_bcu: Annotated[str, Field(min_length=1, max_length=40)]
    strand: str | None = Field(default=None, max_length=60)
    reason: str | None = Field(default=None, max_length=500)
    authority: str | None = Field(default=None, max_length=200)  # on whose authority (002 §27: BCU Commander)


DeselectionReason = Literal["stopped_offending", "moved_area", "long_custody", "two_year_review", "high_harm", "other"]


class DeselectedData(Strict):
    reason: DeselectionReason
    authority: str | None = Field(default=None, max_length=200)


class MovedAreaData(Strict):
    from_bcu: Annotated[str, Field(min_length=1, max_length=40)]
    to_bcu: Annotated[str, Field(min_length=1, max_length=40)]
    reason: str | None = Field(default=None, max_length=500)
    authority: str | None = Field(default=None, max_length=200)


class UpdatedData(Strict):
    """register.updated: identifiers added to a register entry (a NOMS on first reception, a CRN later).
    The new identifiers are in `person`, with at least one the register already knows."""

    reason: str | None = Field(default=None, max_length=500)


# --- the events ------------------------------------------------------------------------------------


class EventBase(Strict):
    id: Reference
    occurred_at: AwareDatetime
    source: Annotated[str, Field(min_length=1, max_length=100)]
    person: Person

    @property
    def log_ref(self) -> str:
        return f"event={self.id} type={getattr(self, 'type', '?')}"


def _event(type_name: str, data_model: type[BaseModel]) -> type[EventBase]:
    cls = type(
        "Event_" + type_name.replace(".", "_"),
        (EventBase,),
        {"__annotations__": {"type": Literal[type_name], "data": data_model}},  # type: ignore[valid-type]
    )
    return cls


DATA_MODELS: dict[str, type[BaseModel]] = {
    "prison.reception": ReceptionData,
    "prison.release": ReleaseData,
    "prison.transfer": TransferData,
    "prison.release_date_set": ReleaseDateSetData,
    "prison.hdc_eligible": HdcEligibleData,
    "prison.rotl_scheduled": RotlScheduledData,
    "court.bail_decision": BailDecisionData,
    "court.outcome": CourtOutcomeData,
    "court.sentence": SentenceData,
    "warrant.issued": WarrantIssuedData,
    "warrant.withdrawn": WarrantWithdrawnData,
    "breach.reported": BreachReportedData,
    "police.arrest": PoliceData,
    "police.intelligence": PoliceData,
    "offence.high_harm": NoData,
    "register.selected": SelectedData,
    "register.deselected": DeselectedData,
    "register.moved_area": MovedAreaData,
    "register.updated": UpdatedData,
}
EVENT_TYPES = tuple(DATA_MODELS)
EVENT_MODELS: dict[str, type[EventBase]] = {t: _event(t, m) for t, m in DATA_MODELS.items()}



def _build_adapter() -> TypeAdapter[Any]:
    from typing import Union

    union = Union[tuple(EVENT_MODELS.values())]  # type: ignore[valid-type]  # noqa: UP007
    return TypeAdapter(Annotated[union, Field(discriminator="type")])  # type: ignore[arg-type]


EVENT_ADAPTER: TypeAdapter[Any] = _build_adapter()


# Each event type's own validator: a dict whose `type` is known goes straight to it (the union would find the same
# validator by the tag, and its errors carry the tag first, which `shared.errors` drops anyway).
_VALIDATORS = {t: m.__pydantic_validator__.validate_python for t, m in EVENT_MODELS.items()}


def parse_event(payload: dict[str, Any] | str | bytes) -> EventBase:
    """Validate one canonical event (dict or JSON). Raises pydantic.ValidationError."""
    if type(payload) is dict:
        tag = payload.get("type")
        validate = _VALIDATORS.get(tag) if type(tag) is str else None
        if validate is not None:
            return validate(payload)  # type: ignore[no-any-return]
    elif isinstance(payload, (str, bytes)):
        return EVENT_ADAPTER.validate_json(payload)  # type: ignore[no-any-return]
    return EVENT_ADAPTER.validate_python(payload)  # type: ignore[no-any-return]


def event_json_schema() -> dict[str, Any]:
    schema = EVENT_ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ppo-alerts canonical event"
    return schema



