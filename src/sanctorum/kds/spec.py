"""Key specs and the derivation of their keys (sans-IO).

A key spec names a key: ``name``, the ``master_key_type`` it is derived from and the
``policy_constraint`` an enclave's attestation must meet to be given it. The key is HKDF of the
master key over the spec's canonical encoding, so a spec that differs in any byte — a space in
the policy included — names another key. That is the access control: an enclave that asks for a
looser policy gets a key nobody else's data is sealed with.

Canonical encoding (what the key is derived over)::

    "sanctorum-kds-key-spec" | 0x00 | version u8 (1)
    | name (u16 length, UTF-8) | master key type (u16 length, ASCII)
    | policy constraint (u16 length, UTF-8, exactly as given)

Derivation::

    key = HKDF-SHA256(ikm = master key (32 bytes), salt = "sanctorum-kds-v1",
                      info = canonical spec, length = 32)

Test vectors: tests/data/kds_key_vectors.json.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sanctorum.attestation.constraint import EnclaveConstraint
from sanctorum.common.codec import Reader, Writer
from sanctorum.common.errors import InvalidConstraintError, KeySpecError

MASTER_KEY_SIZE = 32
KEY_SIZE = 32
MAX_NAME_BYTES = 255
_DOMAIN = b"sanctorum-kds-key-spec\x00\x01"
_SALT = b"sanctorum-kds-v1"


class MasterKeyType(enum.Enum):
    """Which master key a spec's key is derived from."""

    DEVELOPMENT = "development"
    """For mock, simulation and debug enclaves: refused to release-mode requesters, since the
    KDS may run where its memory is readable."""
    CLUSTER = "cluster"
    """A secret the KDS enclave generated and keeps in its sealed state."""

    @classmethod
    def parse(cls, value: object) -> MasterKeyType:
        """The type named ``value``; :class:`KeySpecError` naming the types if unknown."""
        for member in cls:
            if member.value == value:
                return member
        names = ", ".join(repr(member.value) for member in cls)
        raise KeySpecError(f"masterKeyType must be one of {names}, not {value!r}")


@dataclass(frozen=True)
class KeySpec:
    """A key the KDS derives: its ``name``, ``master_key_type`` and ``policy_constraint``
    (an enclave constraint string, kept byte for byte)."""

    name: str
    master_key_type: MasterKeyType
    policy_constraint: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise KeySpecError("a key spec's name is a non-empty string")
        if len(self.name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise KeySpecError(f"a key spec's name is at most {MAX_NAME_BYTES} bytes of UTF-8")
        if not self.name.isprintable():
            raise KeySpecError("a key spec's name holds printable characters only")
        if not isinstance(self.master_key_type, MasterKeyType):
            raise KeySpecError(
                "master_key_type is a MasterKeyType (MasterKeyType.CLUSTER, or "
                f'MasterKeyType.parse("cluster")), not {type(self.master_key_type).__name__}'
            )
        policy = self.policy_constraint
        if not isinstance(policy, str) or len(policy.encode("utf-8", "surrogatepass")) > 0xFFFF:
            raise KeySpecError("a key spec's policy constraint is a string of at most 65535 bytes")
        try:
            self.policy()
        except InvalidConstraintError as error:
            raise KeySpecError(f"the policy constraint is not valid: {error}") from None

    def policy(self) -> EnclaveConstraint:
        """The policy constraint, parsed: who may be given this key."""
        return self._policy

    @cached_property
    def _policy(self) -> EnclaveConstraint:  # parsed once, when the spec is made
        return _parse_policy(self.policy_constraint)

    @cached_property
    def canonical(self) -> bytes:
        """The bytes the key is derived over (module docstring)."""
        return (
            Writer()
            .raw(_DOMAIN)
            .text16(self.name)
            .text16(self.master_key_type.value)
            .text16(self.policy_constraint)
            .getvalue()
        )

    @classmethod
    def decode(cls, canonical: bytes) -> KeySpec:
        """The spec whose :attr:`canonical` bytes these are (as a mail's header carries them);
        :class:`KeySpecError` if they are not one."""
        reader = Reader(canonical, error=KeySpecError, what="key spec")
        if reader.raw(len(_DOMAIN), "domain") != _DOMAIN:
            raise KeySpecError("the bytes are not a key spec of this version")
        name = reader.text16("name", MAX_NAME_BYTES)
        master_key_type = MasterKeyType.parse(reader.text16("master key type"))
        policy = reader.text16("policy constraint")
        reader.expect_end()
        spec = cls(name, master_key_type, policy)
        if spec.canonical != canonical:  # one encoding per spec: a key is named one way only
            raise KeySpecError("the key spec is not in canonical form")
        return spec

    def to_json(self) -> dict[str, str]:
        """The spec as the KDS's REST API carries it."""
        return {
            "name": self.name,
            "masterKeyType": self.master_key_type.value,
            "policyConstraint": self.policy_constraint,
        }

    @classmethod
    def from_json(cls, document: object) -> KeySpec:
        """The spec in ``document`` (decoded JSON); :class:`KeySpecError` says what is wrong."""
        if not isinstance(document, dict):
            raise KeySpecError(
                "a key spec is a JSON object with name, masterKeyType and policyConstraint"
            )
        fields = {}
        for field in ("name", "masterKeyType", "policyConstraint"):
            value = document.get(field)
            if not isinstance(value, str):
                raise KeySpecError(
                    f"a key spec's {field} is a string, not "
                    + ("missing" if value is None else type(value).__name__)
                )
            fields[field] = value
        return cls(
            fields["name"],
            MasterKeyType.parse(fields["masterKeyType"]),
            fields["policyConstraint"],
        )


@functools.lru_cache(maxsize=256)
def _parse_policy(text: str) -> EnclaveConstraint:
    """A KDS sees the same few policies again and again: each is parsed once (constraints are
    immutable, so sharing one is safe)."""
    return EnclaveConstraint.parse(text)


def derive_spec_key(master_key: bytes, spec: KeySpec) -> bytes:
    """The 32-byte key for ``spec`` under ``master_key`` (module docstring). It serves as an
    X25519 private key for mail sealed to the spec, and as the seed of an enclave's sealing
    keys."""
    if len(master_key) != MASTER_KEY_SIZE:
        raise ValueError(f"a master key is {MASTER_KEY_SIZE} bytes, not {len(master_key)}")
    return HKDF(hashes.SHA256(), KEY_SIZE, _SALT, spec.canonical).derive(master_key)
