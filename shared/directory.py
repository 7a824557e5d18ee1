"""The directory (contract §2): allowed recipient domains and each BCU's contacts by role.

Refused at load, with every offending address named, when an address falls outside the allow-list:
alerts about named offenders may only go to secure government domains (formats.md §4).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import problems_of

ROLES = ("ppo", "warrants", "probation", "yot", "coordinator", "escalation", "court")
# The roles the rule book sends to (obligations.md): every BCU with PPOs needs an address for each.
REQUIRED_ROLES = ("ppo", "warrants", "probation", "yot", "coordinator", "escalation")
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


def missing_contacts(directory: Directory | DirectoryHolder, bcus: Iterable[str]) -> list[tuple[str, str]]:
    """(bcu, role) for each BCU given (those with PPOs) that has no address for a role the rules need."""
    return [(bcu, role) for bcu in sorted(set(bcus)) for role in REQUIRED_ROLES if not directory.contacts(bcu, role)]


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class DirectoryHolder:
    """The directory in force. Services read through it (the same read interface as Directory), so a reload
    takes effect at the next look-up. `reload()` replaces it only with a file that passes every check: a broken
    file is refused (DirectoryError) and the directory in force stays."""

    def __init__(self, path: str | Path, directory: Directory | None = None) -> None:
        self.path = Path(path)
        self._fingerprint = _fingerprint(self.path)
        self.current = directory if directory is not None else Directory.load(self.path)

    def changed(self) -> bool:
        """The file differs from the one last loaded or refused (content, not mtime: ConfigMaps swap links)."""
        return _fingerprint(self.path) != self._fingerprint

    def reload(self) -> Directory:
        self._fingerprint = _fingerprint(self.path)  # a refused file is reported once, not at every poll
        directory = Directory.load(self.path)  # DirectoryError: the one in force stays
        self.current = directory
        return directory

    def reload_if_changed(self) -> Directory | None:
        """The new directory when the file changed and passed; None when unchanged; DirectoryError if refused."""
        return self.reload() if self.changed() else None

    # --- read-through (Directory's interface) ---

    @property
    def data(self) -> DirectoryFile:
        return self.current.data

    @property
    def recipient_domains(self) -> tuple[str, ...]:
        return self.current.recipient_domains

    @property
    def bcu_codes(self) -> list[str]:
        return self.current.bcu_codes

    def bcu(self, code: str) -> Bcu | None:
        return self.current.bcu(code)

    def contacts(self, bcu_code: str | None, role: str) -> list[str]:
        return self.current.contacts(bcu_code, role)

    def allowed(self, address: str) -> bool:
        return self.current.allowed(address)
