"""Key specs and their keys: pinned vectors, the documented formula recomputed here with
`cryptography` alone, and every malformed spec refused with KeySpecError."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from sanctorum import KeySpecError
from sanctorum.common.keys import Curve25519PrivateKey
from sanctorum.kds import KeySpec, MasterKeyType, derive_spec_key

VECTORS = json.loads(
    (Path(__file__).parents[1] / "data" / "kds_key_vectors.json").read_text(encoding="utf-8")
)["vectors"]
POLICY = "S:4924CA3A9C8241A3C0AA1A24A407AA86401D2B79FA9FF84932DA798A942166D4 PROD:1"
MASTER = bytes(range(32))


def _spec(vector: dict[str, Any]) -> KeySpec:
    return KeySpec(
        vector["name"], MasterKeyType.parse(vector["masterKeyType"]), vector["policyConstraint"]
    )


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"{v['name']}-{v['masterKeyType']}")
def test_the_pinned_vectors_hold(vector: dict[str, Any]) -> None:
    key = derive_spec_key(bytes.fromhex(vector["masterKey"]), _spec(vector))
    assert key.hex() == vector["key"]
    assert Curve25519PrivateKey(key).public_key.encoded.hex() == vector["x25519PublicKey"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"{v['name']}-{v['masterKeyType']}")
def test_the_key_is_the_documented_hkdf(vector: dict[str, Any]) -> None:
    """The formula of the module's docstring, built here from its parts."""

    def field(text: str) -> bytes:
        encoded = text.encode("utf-8")
        return struct.pack(">H", len(encoded)) + encoded

    info = (
        b"sanctorum-kds-key-spec\x00\x01"
        + field(vector["name"])
        + field(vector["masterKeyType"])
        + field(vector["policyConstraint"])
    )
    expected = HKDF(hashes.SHA256(), 32, b"sanctorum-kds-v1", info).derive(
        bytes.fromhex(vector["masterKey"])
    )
    assert expected.hex() == vector["key"]


def test_any_change_to_the_spec_names_another_key() -> None:
    base = KeySpec("persistence", MasterKeyType.CLUSTER, POLICY)
    variants = [
        KeySpec("persistence ", MasterKeyType.CLUSTER, POLICY),
        KeySpec("Persistence", MasterKeyType.CLUSTER, POLICY),
        KeySpec("persistence", MasterKeyType.DEVELOPMENT, POLICY),
        KeySpec("persistence", MasterKeyType.CLUSTER, POLICY.replace(" ", "  ")),
        KeySpec("persistence", MasterKeyType.CLUSTER, " ".join(reversed(POLICY.split()))),
    ]
    keys = {derive_spec_key(MASTER, spec) for spec in [base, *variants]}
    assert len(keys) == 1 + len(variants)
    assert derive_spec_key(bytes(32), base) != derive_spec_key(MASTER, base)


def test_a_spec_travels_as_json_unchanged() -> None:
    spec = KeySpec("mail", MasterKeyType.CLUSTER, POLICY + " ")
    document = json.loads(json.dumps(spec.to_json()))
    assert document == {
        "name": "mail",
        "masterKeyType": "cluster",
        "policyConstraint": POLICY + " ",
    }
    assert KeySpec.from_json(document) == spec


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "is a JSON object"),
        ({"masterKeyType": "cluster", "policyConstraint": POLICY}, "name is a string, not missing"),
        ({"name": 7, "masterKeyType": "cluster", "policyConstraint": POLICY}, "not int"),
        ({"name": "", "masterKeyType": "cluster", "policyConstraint": POLICY}, "non-empty"),
        ({"name": "x" * 256, "masterKeyType": "cluster", "policyConstraint": POLICY}, "255"),
        ({"name": "a\nb", "masterKeyType": "cluster", "policyConstraint": POLICY}, "printable"),
        ({"name": "k", "masterKeyType": "hsm", "policyConstraint": POLICY}, "one of"),
        ({"name": "k", "masterKeyType": "cluster", "policyConstraint": "C:12"}, "not valid"),
        ({"name": "k", "masterKeyType": "cluster", "policyConstraint": ""}, "not valid"),
        ({"name": "k", "masterKeyType": "cluster"}, "policyConstraint is a string"),
        ({"name": "k", "masterKeyType": "cluster", "policyConstraint": " " * 65536}, "65535"),
    ],
)
def test_a_malformed_spec_is_refused_with_what_is_wrong(document: object, problem: str) -> None:
    with pytest.raises(KeySpecError, match=problem):
        KeySpec.from_json(document)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(
    st.dictionaries(st.sampled_from(["name", "masterKeyType", "policyConstraint", "other"]), JSON)
    | JSON
)
def test_from_json_raises_only_key_spec_errors(document: object) -> None:
    try:
        spec = KeySpec.from_json(document)
    except KeySpecError:
        return
    assert len(derive_spec_key(MASTER, spec)) == 32


def test_a_master_key_is_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        derive_spec_key(bytes(16), KeySpec("k", MasterKeyType.CLUSTER, POLICY))
