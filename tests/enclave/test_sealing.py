"""Sealing keys and sealed blobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sanctorum.common.errors import SealedStateError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.enclave.sealing import (
    EnclaveIdentity,
    SealingPolicy,
    SecurityVersions,
    derive_sealing_key,
    seal,
    sealed_versions,
    simulation_platform_secret,
    unseal,
)

ONE = EnclaveIdentity(SHA256Hash.of(b"code 1"), SHA256Hash.of(b"signer"), 1)
UPGRADE = EnclaveIdentity(SHA256Hash.of(b"code 2"), SHA256Hash.of(b"signer"), 1)
OTHER_PRODUCT = EnclaveIdentity(SHA256Hash.of(b"code 1"), SHA256Hash.of(b"signer"), 2)
SECRET = bytes(range(32))


def _key(identity: EnclaveIdentity, policy: SealingPolicy, secret: bytes = SECRET) -> bytes:
    return derive_sealing_key(secret, identity, policy, b"purpose")


def test_policies_bind_the_right_parts_of_the_identity() -> None:
    assert _key(ONE, SealingPolicy.SIGNER) == _key(UPGRADE, SealingPolicy.SIGNER)
    assert _key(ONE, SealingPolicy.SIGNER) != _key(OTHER_PRODUCT, SealingPolicy.SIGNER)
    assert _key(ONE, SealingPolicy.CODE_HASH) != _key(UPGRADE, SealingPolicy.CODE_HASH)
    assert _key(ONE, SealingPolicy.CODE_HASH) != _key(ONE, SealingPolicy.SIGNER)
    assert _key(ONE, SealingPolicy.SIGNER) != _key(ONE, SealingPolicy.SIGNER, bytes(32))
    assert derive_sealing_key(SECRET, ONE, SealingPolicy.SIGNER, b"a") != derive_sealing_key(
        SECRET, ONE, SealingPolicy.SIGNER, b"b"
    )


def test_seal_round_trip_and_refusals() -> None:
    key = _key(ONE, SealingPolicy.SIGNER)
    blob = seal(key, b"state", b"context")
    assert unseal(key, blob, b"context") == b"state"
    assert seal(key, b"state", b"context") != blob  # a fresh nonce each time
    with pytest.raises(SealedStateError, match="another enclave identity"):
        unseal(_key(OTHER_PRODUCT, SealingPolicy.SIGNER), blob, b"context")
    with pytest.raises(SealedStateError):
        unseal(key, blob, b"other context")
    for position in range(len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 1
        with pytest.raises(SealedStateError):
            unseal(key, bytes(tampered), b"context")


def test_simulation_secret_is_made_once_privately(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "secret"
    first = simulation_platform_secret(path)
    assert simulation_platform_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert simulation_platform_secret(tmp_path / "another machine") != first
    path.write_bytes(b"short")
    with pytest.raises(SealedStateError, match="damaged"):
        simulation_platform_secret(path)


def test_keys_depend_on_the_security_versions_and_newer_ones_are_never_derived() -> None:
    current = SecurityVersions(revocation_level=3, tcb_level=2)
    identity = EnclaveIdentity(ONE.code_hash, ONE.signer_hash, 1, current)
    keys = {
        versions: derive_sealing_key(SECRET, identity, SealingPolicy.SIGNER, b"p", versions)
        for versions in (SecurityVersions(3, 2), SecurityVersions(2, 2), SecurityVersions(3, 1))
    }
    assert len(set(keys.values())) == 3  # each version pair has its own key
    assert keys[current] == derive_sealing_key(SECRET, identity, SealingPolicy.SIGNER, b"p")
    for newer in (SecurityVersions(4, 2), SecurityVersions(3, 3), SecurityVersions(0, 9)):
        with pytest.raises(SealedStateError, match="never derives the keys of newer versions"):
            derive_sealing_key(SECRET, identity, SealingPolicy.SIGNER, b"p", newer)


def test_a_sealed_blob_names_its_versions_and_they_are_authenticated() -> None:
    versions = SecurityVersions(7, 1)
    blob = seal(bytes(32), b"state", b"context", versions)
    assert sealed_versions(blob) == versions
    relabelled = bytearray(blob)
    relabelled[6] = 6  # revocation level 7 → 6 in the header
    assert sealed_versions(bytes(relabelled)) == SecurityVersions(6, 1)
    with pytest.raises(SealedStateError, match="does not open"):
        unseal(bytes(32), bytes(relabelled), b"context")
    with pytest.raises(ValueError, match="revocation_level"):
        SecurityVersions(revocation_level=70_000)


def test_a_blob_of_another_format_says_so() -> None:
    blob = bytearray(seal(bytes(32), b"state", b"context"))
    blob[4] = 1  # the format byte of an older Sanctorum
    with pytest.raises(SealedStateError, match="written by another version of Sanctorum"):
        sealed_versions(bytes(blob))
