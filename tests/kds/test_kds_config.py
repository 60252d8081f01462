"""The `[kds]` table of enclave.toml: parsed, measured, and refused with what is wrong."""

from __future__ import annotations

import pytest

from sanctorum import BundleError, SHA256Hash
from sanctorum.common.bundle import KdsConfig, kds_policy, parse_config
from sanctorum.kds.access import persistence_spec

BASE = (
    '[enclave]\nname = "x"\nentry = "m:C"\nproduct_id = 3\nrevocation_level = 0\n'
    'sources = ["m.py"]\npersistent_map = true\nmax_persistent_map_size = 1024\n'
)
KDS = 'constraint = "C:' + "AB" * 32 + ' SEC:INSECURE"\n'


def test_a_kds_table_is_parsed_and_changes_the_measurement() -> None:
    plain = parse_config(BASE)
    config = parse_config(BASE + "[kds]\n" + KDS + "use_own_signer = true\n")
    assert plain.kds is None
    assert config.kds == KdsConfig("C:" + "AB" * 32 + " SEC:INSECURE", use_own_signer=True)
    assert b"kds" not in plain.canonical()  # code hashes of enclaves without [kds] unchanged
    assert config.canonical() != plain.canonical()
    other = parse_config(BASE + "[kds]\n" + KDS + "use_own_code_hash = true\n")
    assert other.canonical() != config.canonical()


def test_the_persistence_policy_adds_the_enclaves_own_terms() -> None:
    config = KdsConfig("C:" + "AB" * 32, "cluster", "SEC:INSECURE", True, True)
    code, signer = SHA256Hash.of(b"code"), SHA256Hash.of(b"signer")
    assert kds_policy(config, str(code), str(signer), 3) == (
        f"SEC:INSECURE C:{code} S:{signer} PROD:3"
    )
    spec = persistence_spec(config, code, signer, 3)
    assert spec.name == "sanctorum-persistence"
    assert spec.policy().acceptable_code_hashes == {code}


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("[kds]\nuse_own_code_hash = true\n", r"\[kds\].constraint is required"),
        ("[kds]\n" + KDS + "use_own_code_hash = true\nmaster_key_type = 'hsm'\n", "one of"),
        ("[kds]\n" + KDS, "needs a policy for the persistence key"),
        ("[kds]\n" + KDS + "use_own_code_hash = 'yes'\n", "true or false"),
        ("[kds]\n" + KDS + "use_own_codehash = true\n", "did you mean"),
        ("[kds]\n" + KDS + "use_own_code_hash = true\ncluster_key = 'AB12'\n", "64 hex digits"),
        ("[kds]\n" + KDS + "use_own_code_hash = true\ncluster_key = '" + "zz" * 32 + "'\n", "hex"),
    ],
)
def test_a_bad_kds_table_is_refused_with_what_is_wrong(table: str, problem: str) -> None:
    with pytest.raises(BundleError, match=problem):
        parse_config(BASE + table)


def test_a_cluster_key_is_kept_in_lower_case() -> None:
    config = parse_config(
        BASE + "[kds]\n" + KDS + "use_own_code_hash = true\ncluster_key = '" + "AB" * 32 + "'\n"
    )
    assert config.kds is not None
    assert config.kds.cluster_key == "ab" * 32


def test_kds_must_be_a_table() -> None:
    with pytest.raises(BundleError, match=r"\[kds\] must be a table"):
        parse_config("kds = 3\n" + BASE)


def test_a_stateless_enclaves_kds_table_names_only_the_kds() -> None:
    without_state = BASE.replace("persistent_map = true\nmax_persistent_map_size = 1024\n", "")
    with pytest.raises(BundleError, match="but this enclave has neither"):
        parse_config(without_state + "[kds]\n" + KDS + "use_own_code_hash = true\n")
    # Without persistence settings: the KDS whose mail keys it takes (clusters).
    config = parse_config(without_state + "[kds]\n" + KDS)
    assert config.kds == KdsConfig("C:" + "AB" * 32 + " SEC:INSECURE")
