"""The directory (contract §2): allowed recipient domains and each BCU's contacts by role.

Refused at load, with every offending address named, when an address falls outside the allow-list:
alerts about named offenders may only go to secure government domains (formats.md §4).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import problems_of

ROLES = ("ppo", "warrants", "probation", "yot", "coordinator", "escalation", "court")
_ADDRESS = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


class DirectoryError(Exception):
    """The directory cannot be used; the message says which entry and why."""


class Bcu(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    force: str | None = None
    contacts: dict[str, list[str]] = Field(default_factory=dict)


class DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    recipient_domains: list[str] = Field(min_length=1)
    bcus: dict[str, Bcu]


def domain_allowed(address: str, domains: list[str] | tuple[str, ...]) -> bool:
    """True when the address's domain is an allowed domain or a subdomain of one."""
    if "@" not in address:
        return False
    host = address.rsplit("@", 1)[1].lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in (x.lower().lstrip(".") for x in domains))


class Directory:
    def __init__(self, data: DirectoryFile) -> None:
        self.data = data
        self.recipient_domains = tuple(d.lower() for d in data.recipient_domains)
        self._check()

    def _check(self) -> None:
        problems = []
        for code, bcu in self.data.bcus.items():
            for role, addresses in bcu.contacts.items():
                if role not in ROLES:
                    problems.append(f"bcus.{code}.contacts.{role}: unknown role (expected one of {', '.join(ROLES)})")
                for address in addresses:
                    if not _ADDRESS.match(address):
                        problems.append(f"bcus.{code}.contacts.{role}: {address!r} is not an email address")
                    elif not domain_allowed(address, self.recipient_domains):
                        problems.append(
                            f"bcus.{code}.contacts.{role}: {address} is outside the allowed recipient domains "
                            f"({', '.join(self.recipient_domains)})"
                        )
        if problems:
            raise DirectoryError("directory refused: " + "; ".join(problems))

    @classmethod
    def from_mapping(cls, raw: Any, origin: str = "directory") -> Directory:
        if not isinstance(raw, dict):
            raise DirectoryError(f"{origin}: expected a mapping with recipient_domains and bcus")
        try:
            return cls(DirectoryFile.model_validate(raw))
        except ValidationError as exc:
            detail = "; ".join(f"{p['field']}: {p['problem']}" for p in problems_of(exc))
            raise DirectoryError(f"{origin} refused: {detail}") from None

    @classmethod
    def load(cls, path: str | Path) -> Directory:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise DirectoryError(f"cannot read directory {path}: {exc.strerror}") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DirectoryError(f"{path} is not valid YAML: {exc}") from None
        return cls.from_mapping(raw, str(path))

    @property
    def bcu_codes(self) -> list[str]:
        return list(self.data.bcus)

    def bcu(self, code: str) -> Bcu | None:
        return self.data.bcus.get(code)

    def contacts(self, bcu_code: str | None, role: str) -> list[str]:
        bcu = self.data.bcus.get(bcu_code or "")
        return list(bcu.contacts.get(role, [])) if bcu else []

    def allowed(self, address: str) -> bool:
        return domain_allowed(address, self.recipient_domains)
