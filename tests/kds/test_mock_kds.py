"""An enclave with a `[kds]` table in mock mode: its persistence key comes from a KDS too (here
a mock KDS enclave, reached without HTTP), and without one it does not start."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from sanctorum import EnclaveHost, EnclaveMode, KdsError, SealedStateError
from sanctorum.host import KdsConfiguration
from sanctorum.kds.enclave import KdsEnclave
from tests.kds.test_kds_server import Kds

_SOURCE = """
from sanctorum import Enclave


class MockKeeper(Enclave):
    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        if data:
            self.persistent_map["text"] = data
            return None
        return self.persistent_map["text"]
"""


def _module(directory: Path, kds_code_hash: str | None, name: str = "mock_keeper") -> ModuleType:
    """A project on disk (enclave.toml naming the class, with [kds] if a KDS is named), its
    module imported."""
    directory.mkdir()
    (directory / f"{name}.py").write_text(_SOURCE)
    kds = (
        ""
        if kds_code_hash is None
        else f'[kds]\nconstraint = "C:{kds_code_hash} SEC:INSECURE"\n'
        'policy_constraint = "SEC:INSECURE"\nuse_own_code_hash = true\n'
    )
    (directory / "enclave.toml").write_text(
        f'[enclave]\nname = "k"\nentry = "{name}:MockKeeper"\nproduct_id = 1\n'
        f'revocation_level = 0\nsources = ["{name}.py"]\npersistent_map = true\n'
        f"max_persistent_map_size = 4096\n{kds}"
    )
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_mock_state_is_sealed_with_the_kds_key(tmp_path: Path) -> None:
    kds = Kds(KdsEnclave, tmp_path / "kds", EnclaveMode.MOCK)
    try:
        module = _module(tmp_path / "app", str(kds.service.host.enclave_instance_info.code_hash))
        plain = _module(tmp_path / "plain", None, "plain_keeper")  # same signer, no [kds]
        configuration = KdsConfiguration(kds.url, timeout=5)
        with EnclaveHost.load(module.MockKeeper).start(kds=configuration) as host:
            host.call_enclave(b"sealed with the KDS key")
            state = host.sealed_state
            host.restart()  # the new instance asks the KDS again, and opens the state
            assert host.call_enclave(b"") == b"sealed with the KDS key"
        with EnclaveHost.load(module.MockKeeper).start(sealed_state=state, kds=configuration) as h:
            assert h.call_enclave(b"") == b"sealed with the KDS key"
        # Without the KDS it does not start: the enclave has a [kds] table.
        with pytest.raises(KdsError, match=r"kds=KdsConfiguration\(url\)"):
            EnclaveHost.load(module.MockKeeper).start(sealed_state=state)
        # The platform's key (which the same signer's enclave without [kds] derives) does not
        # open it: the state really is sealed with the KDS's key.
        with pytest.raises(SealedStateError, match="does not open"):
            EnclaveHost.load(plain.MockKeeper).start(sealed_state=state)
    finally:
        sys.modules.pop("mock_keeper", None)
        sys.modules.pop("plain_keeper", None)
        kds.stop()
