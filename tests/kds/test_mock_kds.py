"""An enclave with a `[kds]` table in mock mode: its persistence key comes from a KDS too (here
a mock KDS enclave, reached without HTTP), and without one it does not start."""

from __future__ import annotations

from pathlib import Path

import pytest

from sanctorum import EnclaveHost, EnclaveMode, KdsError, SealedStateError
from sanctorum.host import KdsConfiguration
from sanctorum.kds.enclave import KdsEnclave
from tests.kds.test_kds_attacks import _keeper
from tests.kds.test_kds_server import Kds


def test_mock_state_is_sealed_with_the_kds_key(tmp_path: Path) -> None:
    kds = Kds(KdsEnclave, tmp_path / "kds", EnclaveMode.MOCK)
    try:
        keeper = _keeper(tmp_path / "app", kds.service.host.enclave_instance_info.code_hash)
        plain = _keeper(tmp_path / "plain", None)  # the same signer, no [kds]
        configuration = KdsConfiguration(kds.url, timeout=5)
        with EnclaveHost.load(keeper).start(kds=configuration) as host:
            host.call_enclave(b"sealed with the KDS key")
            state = host.sealed_state
            host.restart()  # the new instance asks the KDS again, and opens the state
            assert host.call_enclave(b"") == b"sealed with the KDS key"
        with EnclaveHost.load(keeper).start(sealed_state=state, kds=configuration) as h:
            assert h.call_enclave(b"") == b"sealed with the KDS key"
        # Without the KDS it does not start: the enclave has a [kds] table.
        with pytest.raises(KdsError, match=r"kds=KdsConfiguration\(url\)"):
            EnclaveHost.load(keeper).start(sealed_state=state)
        # The platform's key (which the same signer's enclave without [kds] derives) does not
        # open it: the state really is sealed with the KDS's key.
        with pytest.raises(SealedStateError, match="does not open"):
            EnclaveHost.load(plain).start(sealed_state=state)
    finally:
        kds.stop()
