"""The pytest plugin with a project whose enclave.toml has a [kds] table: the host is given a
KDS, one the plugin runs for the session or the one ``--enclave-kds-url`` names."""

from __future__ import annotations

import pytest

from sanctorum.build.builder import measure_project
from sanctorum.kds.server import kds_project
from tests.test_pytest_plugin import make_project, outcomes

pytest_plugins = ["pytester"]
# In a process of their own: the plugin's KDS is polled over HTTP, and an in-process run would
# drop the HTTP modules it imported from this process's modules when it ends.

TEST = """
def test_counts(enclave_client, enclave_kds_url):
    assert enclave_kds_url.startswith("http://127.0.0.1:")
    assert enclave_client.send_mail(b"one").body == b"1"
    assert enclave_client.send_mail(b"two").body == b"2"
"""


def _with_kds_table(pytester: pytest.Pytester, extra: str = "") -> None:
    make_project(pytester)
    kds_code = measure_project(kds_project())
    with (pytester.path / "enclave.toml").open("a") as toml:
        toml.write(
            f'[kds]\nconstraint = "C:{kds_code} SEC:INSECURE"\n'
            f'policy_constraint = "SEC:INSECURE"\nuse_own_code_hash = true\n{extra}'
        )


def test_a_kds_project_gets_a_kds_the_plugin_runs(pytester: pytest.Pytester) -> None:
    _with_kds_table(pytester)
    pytester.makepyfile(test_kds=TEST)
    result = pytester.runpytest_subprocess("-p", "sanctorum")
    assert outcomes(result) == {"passed": 2}, result.stdout.str()


def test_the_kds_url_option_names_the_kds(
    pytester: pytest.Pytester, kds_process: tuple[str, str, str]
) -> None:
    url, _, cluster_key = kds_process
    # Pinned to that KDS's cluster: a KDS the plugin ran would have other master keys.
    _with_kds_table(pytester, f'cluster_key = "{cluster_key}"\n')
    pytester.makepyfile(test_kds=TEST)
    result = pytester.runpytest_subprocess("-p", "sanctorum", f"--enclave-kds-url={url}")
    assert outcomes(result) == {"passed": 2}, result.stdout.str()
