"""The sanctorum pytest plugin, run by pytest's own ``pytester`` on small enclave projects."""

from __future__ import annotations

import importlib.metadata
import itertools
import re
from pathlib import Path

import pytest

from sanctorum.common.mode import EnclaveMode
from sanctorum.host import EnclaveHost
from sanctorum.host.host import ModeSupport

pytest_plugins = ["pytester"]

_names = itertools.count()

ENCLAVE = '''
from sanctorum import Enclave, EnclaveMail


class Tally(Enclave):
    """Counts each client's mail in the persistent map (configured by enclave.toml only)."""

    def receive_from_untrusted_host(self, data: bytes) -> bytes:
        if data == b"clients":
            return str(len(self.persistent_map)).encode()
        return data[::-1]

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        key = mail.authenticated_sender.encoded.hex()
        count = int(self.persistent_map.get(key, b"0")) + 1
        self.persistent_map[key] = str(count).encode()
        self.post_mail(self.post_office(mail).encrypt_mail(str(count).encode()), routing_hint)
'''


def make_project(pytester: pytest.Pytester, directory: str = ".", *, entry: str = "Tally") -> str:
    """An enclave project in ``directory``, its module named uniquely (the inner runs share this
    process's modules); returns the module's name."""
    module = f"tally_enclave_{next(_names)}"
    project = pytester.path / directory
    project.mkdir(parents=True, exist_ok=True)
    (project / f"{module}.py").write_text(ENCLAVE)
    (project / "enclave.toml").write_text(
        "[enclave]\n"
        f'name = "{module}"\n'
        f'entry = "{module}:{entry}"\n'
        "product_id = 7\n"
        "revocation_level = 0\n"
        f'sources = ["{module}.py"]\n'
        "persistent_map = true\n"
        "max_persistent_map_size = 65536\n"
    )
    return module


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    return result.parseoutcomes()


def test_the_plugin_is_registered_as_an_entry_point() -> None:
    (point,) = [
        point
        for point in importlib.metadata.entry_points(group="pytest11")
        if point.name == "sanctorum"
    ]
    assert point.value == "sanctorum.testing.pytest_plugin"


def test_each_test_runs_in_mock_and_simulation_with_a_started_host_and_client(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester)
    pytester.makepyfile(
        test_tally="""
        from sanctorum import InProcessTransport

        def test_counts(enclave_host, enclave_client, enclave_client_factory, enclave_mode):
            assert enclave_host.enclave_mode.value == enclave_mode
            assert enclave_host.enclave_instance_info.product_id == 7  # from enclave.toml
            other = enclave_client_factory()
            assert other.public_key != enclave_client.public_key
            assert [enclave_client.send_mail(b"x").body for _ in range(2)] == [b"1", b"2"]
            assert other.send_mail(b"x").body == b"1"
            enclave_host.restart()
            enclave_client.start(InProcessTransport(enclave_host))
            assert enclave_client.send_mail(b"x").body == b"3"
            assert enclave_host.call_enclave(b"clients") == b"2"
        """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*test_counts?mock? PASSED*", "*test_counts?simulation? PASSED*"], consecutive=False
    )


def test_the_constraint_is_the_builds_and_the_bundle_is_built_once(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester)
    pytester.makepyfile(
        test_bundle="""
        import zipfile

        paths = []

        def test_first(enclave_bundle, enclave_constraint, enclave_host):
            paths.append(enclave_bundle.path)
            assert zipfile.is_zipfile(enclave_bundle.path)
            assert enclave_constraint.format() == enclave_bundle.constraints["code"]
            assert enclave_host.enclave_instance_info.code_hash == enclave_bundle.code_hash

        def test_second(enclave_bundle):
            paths.append(enclave_bundle.path)
            assert len(paths) == 2 and paths[0] == paths[1]

        def test_mock_constraint(enclave_constraint, enclave_host, enclave_mode):
            info = enclave_host.enclave_instance_info
            enclave_constraint.check(info)
            assert f"C:{info.code_hash}" in enclave_constraint.format()
            assert "SEC:INSECURE" in enclave_constraint.format()
        """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=4)
    # enclave_bundle exists in the bundle modes only: those tests run in simulation alone.
    result.stdout.fnmatch_lines(["*test_first?simulation? PASSED*", "*test_second?simulation? *"])
    assert "test_first[mock]" not in result.stdout.str()


def test_mock_enclave_runs_in_mock_mode_only_and_is_the_enclave_object(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester)
    pytester.makepyfile(
        test_inside="""
        def test_inside(mock_enclave, enclave_client, enclave_class):
            assert type(mock_enclave) is enclave_class
            enclave_client.send_mail(b"x")
            assert len(mock_enclave.persistent_map) == 1
        """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_inside?mock? PASSED*"])
    # With simulation alone, it is deselected, not skipped.
    only_simulation = pytester.runpytest("--enclave-mode=simulation")
    only_simulation.assert_outcomes(deselected=1)
    assert "skipped" not in only_simulation.stdout.str()


def test_enclave_mode_selects_the_modes(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makepyfile(
        test_modes="""
        import pytest

        def test_host(enclave_host, enclave_mode):
            assert enclave_host.enclave_mode.value == enclave_mode

        @pytest.mark.enclave_modes("simulation")
        def test_marked(enclave_host):
            assert enclave_host.enclave_mode.value == "simulation"

        @pytest.mark.enclave_modes("simulation")
        def test_marked_without_fixtures():
            pass

        def test_plain():
            pass
        """
    )
    mock = pytester.runpytest("-v", "--enclave-mode=mock")
    mock.assert_outcomes(passed=2, deselected=2)
    mock.stdout.fnmatch_lines(["*test_host?mock? PASSED*", "*test_plain PASSED*"])
    simulation = pytester.runpytest("-v", "--enclave-mode", "SIMULATION")
    simulation.assert_outcomes(passed=4)
    assert "[mock]" not in simulation.stdout.str()
    both = pytester.runpytest("-v", "--enclave-mode=simulation,mock")
    both.assert_outcomes(passed=5)
    # The ini option chooses when the command line does not.
    pytester.makeini("[pytest]\nenclave_mode = mock\n")
    pytester.runpytest().assert_outcomes(passed=2, deselected=2)


def test_unknown_and_unavailable_modes_are_refused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    unknown = pytester.runpytest("--enclave-mode=mock,sgx")
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR
    unknown.stderr.fnmatch_lines(["*--enclave-mode: unknown enclave mode 'sgx'*"])

    def no_sgx() -> list[ModeSupport]:
        return [
            ModeSupport(EnclaveMode.MOCK, True, "runs here"),
            ModeSupport(EnclaveMode.SIMULATION, True, "runs here"),
            ModeSupport(EnclaveMode.DEBUG, False, "no SGX device (test)"),
            ModeSupport(EnclaveMode.RELEASE, False, "no SGX device (test)"),
        ]

    monkeypatch.setattr(EnclaveHost, "supported_modes", staticmethod(no_sgx))
    for mode in ("debug", "release"):
        refused = pytester.runpytest(f"--enclave-mode=mock,{mode}")
        assert refused.ret == pytest.ExitCode.USAGE_ERROR
        refused.stderr.fnmatch_lines(
            [f"*{mode} mode cannot run on this machine: no SGX device (test)*"]
        )

    def sgx() -> list[ModeSupport]:
        return [ModeSupport(mode, True, "runs here") for mode in EnclaveMode]

    monkeypatch.setattr(EnclaveHost, "supported_modes", staticmethod(sgx))
    unsigned = pytester.runpytest("--enclave-mode=release")
    assert unsigned.ret == pytest.ExitCode.USAGE_ERROR
    unsigned.stderr.fnmatch_lines(["*release mode builds a bundle signed with your own keys*"])


def test_without_a_project_the_fixtures_fail_clearly_and_other_tests_pass(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_no_project="""
        def test_plain():
            pass

        def test_host(enclave_host):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=2)  # test_host in mock and in simulation
    result.stdout.fnmatch_lines(["*no enclave project for*no enclave.toml in*sanctorum init*"])


def test_the_project_can_be_named_by_option_or_ini(pytester: pytest.Pytester) -> None:
    make_project(pytester, "projects/tally")
    pytester.makepyfile(
        test_named="""
        def test_named(enclave_project, enclave_host):
            assert enclave_project.name == "tally"
            assert enclave_host.call_enclave(b"abc") == b"cba"
        """
    )
    pytester.runpytest().assert_outcomes(errors=2)  # not above the test file
    option = pytester.runpytest("--enclave-project", str(Path("projects") / "tally"))
    option.assert_outcomes(passed=2)
    pytester.makeini("[pytest]\nenclave_project = projects/tally\n")
    pytester.runpytest().assert_outcomes(passed=2)
    wrong = pytester.runpytest("--enclave-project=projects")
    wrong.assert_outcomes(errors=2)
    wrong.stdout.fnmatch_lines(["*--enclave-project names *projects, which has no enclave.toml*"])


def test_the_nearest_enclave_toml_above_the_test_file_is_the_project(
    pytester: pytest.Pytester,
) -> None:
    first = make_project(pytester, "one")
    second = make_project(pytester, "two")
    for directory, module in (("one", first), ("two", second)):
        tests = pytester.path / directory / "tests"
        tests.mkdir()
        (tests / f"test_{directory}.py").write_text(
            "def test_which(enclave_class, enclave_project):\n"
            f"    assert enclave_class.__module__ == {module!r}\n"
            f"    assert enclave_project.name == {directory!r}\n"
        )
    pytester.runpytest("--enclave-mode=mock").assert_outcomes(passed=2)


def test_a_test_that_fits_no_mode_is_a_collection_error(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makepyfile(
        test_both="""
        def test_both(mock_enclave, enclave_bundle):
            pass
        """,
        test_marked="""
        import pytest

        @pytest.mark.enclave_modes("simulation")
        def test_marked_for_simulation(mock_enclave):
            pass
        """,
        test_unknown="""
        import pytest

        @pytest.mark.enclave_modes("sgx")
        def test_unknown(enclave_host):
            pass
        """,
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED  # collection errors stop the run
    result.assert_outcomes(errors=3)
    output = result.stdout.str()
    assert "test_both can run in no enclave mode: it asks for mock_enclave (only in mock mode)" in (
        output
    )
    assert "and enclave_bundle (only in simulation, debug, release mode)" in output
    assert re.search(r"test_marked_for_simulation can run in no enclave mode: .*simulation", output)
    assert re.search(r"enclave_modes takes one or more of .*, not \('sgx',\)", output)


def test_a_failed_build_is_reported_to_every_test_that_needs_it(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, entry="Missing")
    pytester.makepyfile(
        test_build="""
        def test_one(enclave_bundle):
            pass

        def test_two(enclave_bundle):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=2)
    assert result.stdout.str().count("defines no 'Missing'") >= 2


def test_the_host_is_closed_after_the_test(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makepyfile(
        test_closed="""
        import pytest
        from sanctorum import EnclaveStateError

        hosts = []

        def test_use(enclave_host):
            hosts.append(enclave_host)

        def test_closed_afterwards():
            assert len(hosts) == 2
            for host in hosts:
                with pytest.raises(EnclaveStateError, match="closed"):
                    host.call_enclave(b"x")
        """
    )
    pytester.runpytest().assert_outcomes(passed=3)
