"""What only simulation mode has: a child process, frames, crashes, simulated evidence."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sanctorum import (
    EnclaveCrashedError,
    EnclaveHost,
    EnclaveInstanceInfo,
    EnclaveMode,
    InvalidEnclaveError,
    MailDecryptionError,
)
from sanctorum.attestation.simulated import SIMULATED_EVIDENCE_TYPE
from sanctorum.common import Curve25519PrivateKey
from sanctorum.common.frames import (
    BadFrame,
    Frame,
    FrameDecoder,
    FrameType,
    decode_call_result,
    decode_error,
    decode_ready,
    encode_frame,
    encode_load,
)

BundleFor = Callable[[str], Path]


class RawChild:
    """An enclave process driven frame by frame, with no EnclaveHost in between."""

    def __init__(self) -> None:
        self.socket, child_end = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sanctorum.enclave.child", str(child_end.fileno())],
            pass_fds=[child_end.fileno()],
        )
        child_end.close()
        self.socket.settimeout(30)
        self.decoder = FrameDecoder()
        self.events: list[Frame | BadFrame] = []

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def receive(self, count: int) -> list[Frame]:
        while len(self.events) < count:
            data = self.socket.recv(1 << 20)
            assert data, "the enclave process closed the connection"
            self.events += self.decoder.feed(data)
        frames, self.events = self.events[:count], self.events[count:]
        assert all(isinstance(frame, Frame) for frame in frames)
        return frames  # type: ignore[return-value]

    def expect_error(self, call_id: int, message: str) -> None:
        (frame,) = self.receive(1)
        assert (frame.type, frame.call_id) == (FrameType.ERROR, call_id)
        assert message in str(decode_error(frame.payload))

    def load(self, bundle: Path) -> EnclaveInstanceInfo:
        self.send(
            encode_frame(Frame(FrameType.LOAD, 1, encode_load("simulation", bundle.read_bytes())))
        )
        (ready,) = self.receive(1)
        assert ready.type is FrameType.READY, decode_error(ready.payload)
        return EnclaveInstanceInfo.deserialize(decode_ready(ready.payload)[0])

    def call(self, call_id: int, data: bytes) -> bytes | None:
        self.send(encode_frame(Frame(FrameType.CALL, call_id, data)))
        (result,) = self.receive(1)
        assert result.type is FrameType.CALL_RESULT
        return decode_call_result(result.payload)[0]

    def close(self) -> None:
        self.socket.close()
        self.process.wait(timeout=10)


@pytest.fixture
def child() -> Iterator[RawChild]:
    raw = RawChild()
    yield raw
    raw.close()


def test_bad_frames_get_errors_and_the_enclave_keeps_serving(
    child: RawChild, bundle_for: BundleFor
) -> None:
    child.send(encode_frame(Frame(FrameType.CALL, 5, b"x")))
    child.expect_error(5, "before LOAD")
    child.send(b"\x00\x00\x00\x03abc")
    child.expect_error(0, "shorter than a frame header")
    child.send(b"\x00\x00\x00\x12\x01\x63" + bytes(16))
    child.expect_error(0, "unknown frame type 99")
    child.send(b"\xff\xff\xff\xff")  # announces a 4 GiB frame; skipped as it streams in
    child.expect_error(0, "over the limit")
    child.socket.close()
    assert child.process.wait(timeout=10) == 0  # a clean exit, not a crash


def test_out_of_order_frames_get_errors(child: RawChild, bundle_for: BundleFor) -> None:
    info = child.load(bundle_for("Recorder"))
    assert info.enclave_mode is EnclaveMode.SIMULATION
    child.send(encode_frame(Frame(FrameType.LOAD, 2, encode_load("simulation", b""))))
    child.expect_error(2, "already loaded")
    child.send(encode_frame(Frame(FrameType.HOST_CALLBACK_RESULT, 77, b"\0")))
    child.expect_error(77, "not waiting for the host")
    child.send(encode_frame(Frame(FrameType.CALL, 8, b"x", parent_id=42)))
    child.expect_error(8, "not waiting for the host")
    child.send(encode_frame(Frame(FrameType.READY, 9)))
    child.expect_error(9, "sent by enclaves")
    child.send(encode_frame(Frame(FrameType.DELIVER_MAIL, 10, b"\x07")))
    child.expect_error(10, "malformed")
    assert child.call(11, b"still here") == b"ereh llits"


def test_child_refuses_a_tampered_bundle_itself(child: RawChild, bundle_for: BundleFor) -> None:
    data = bytearray(bundle_for("Recorder").read_bytes())
    data[len(data) // 3] ^= 0x01
    child.send(encode_frame(Frame(FrameType.LOAD, 1, encode_load("simulation", bytes(data)))))
    (answer,) = child.receive(1)
    assert answer.type is FrameType.ERROR


def test_child_refuses_other_modes(child: RawChild, bundle_for: BundleFor) -> None:
    payload = encode_load("release", bundle_for("Recorder").read_bytes())
    child.send(encode_frame(Frame(FrameType.LOAD, 1, payload)))
    child.expect_error(1, "runs simulation mode")


@pytest.mark.parametrize(("entry", "most"), [("Slow", 1), ("SlowThreadSafe", 6)])
def test_the_child_enforces_the_entry_lock(
    child: RawChild, bundle_for: BundleFor, entry: str, most: int
) -> None:
    """Six calls sent at once, straight to the process: serialised unless thread-safe."""
    child.load(bundle_for(entry))
    child.send(b"".join(encode_frame(Frame(FrameType.CALL, i, b"x")) for i in range(10, 16)))
    results = child.receive(6)
    assert sorted(frame.call_id for frame in results) == list(range(10, 16))
    observed = int(child.call(99, b"most") or b"0")
    assert observed == most if most == 1 else observed > 1


def test_crash_is_reported_promptly_and_restart_gives_a_fresh_instance(
    bundle_for: BundleFor,
) -> None:
    with EnclaveHost.load(bundle_for("Recorder")).start() as host:
        old_info = host.enclave_instance_info
        old_mail = old_info.create_post_office(Curve25519PrivateKey.generate()).encrypt_mail(b"x")
        started = time.monotonic()
        with pytest.raises(EnclaveCrashedError, match="exited with status 3"):
            host.call_enclave(b"crash")
        with pytest.raises(EnclaveCrashedError):
            host.call_enclave(b"abc")
        assert time.monotonic() - started < 5
        host.restart()
        assert host.call_enclave(b"abc") == b"cba"
        assert host.enclave_instance_info.encryption_key != old_info.encryption_key
        with pytest.raises(MailDecryptionError):
            host.deliver_mail(old_mail, "r")


def test_killed_child_is_a_crash(bundle_for: BundleFor) -> None:
    host = EnclaveHost.load(bundle_for("Recorder")).start()
    platform_process = host._platform.process  # type: ignore[attr-defined]
    platform_process.kill()
    with pytest.raises(EnclaveCrashedError):
        host.call_enclave(b"abc")
    host.close()


def test_attestation_verifies_in_another_process(bundle_for: BundleFor, tmp_path: Path) -> None:
    with EnclaveHost.load(bundle_for("Recorder")).start() as host:
        info = host.enclave_instance_info
    path = tmp_path / "info.bin"
    path.write_bytes(info.serialize())
    code = (
        "import sys, json; from sanctorum import EnclaveInstanceInfo as I; "
        "i = I.deserialize(open(sys.argv[1], 'rb').read()); "
        "print(json.dumps([str(i.code_hash), i.enclave_mode.value, i.security_info.summary.name]))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(output) == [str(info.code_hash), "simulation", "INSECURE"]
    assert info.evidence_type == SIMULATED_EVIDENCE_TYPE
    assert "public simulated quoting key" in info.security_info.reason


def test_tampered_simulated_evidence_is_refused(bundle_for: BundleFor) -> None:
    with EnclaveHost.load(bundle_for("Recorder")).start() as host:
        info = host.enclave_instance_info
    evidence = bytearray(info.evidence)
    evidence[10] ^= 1  # inside the claimed code hash
    with pytest.raises(InvalidEnclaveError, match="not signed by the simulated quoting key"):
        EnclaveInstanceInfo(
            info.data_signing_key, info.encryption_key, "simulated", bytes(evidence)
        )


def test_supported_modes() -> None:
    support = {entry.mode: entry for entry in EnclaveHost.supported_modes()}
    assert support[EnclaveMode.MOCK].supported
    assert support[EnclaveMode.SIMULATION].supported
    for mode in (EnclaveMode.DEBUG, EnclaveMode.RELEASE):
        assert not support[mode].supported
        assert "SGX" in support[mode].reason or "gramine" in support[mode].reason


def test_release_mode_explains_why_not(bundle_for: BundleFor) -> None:
    from sanctorum import EnclaveLoadError

    with pytest.raises(EnclaveLoadError, match="release mode is not available here"):
        EnclaveHost.load(bundle_for("Recorder"), mode="release")


def test_sgx_checks_name_each_missing_piece(tmp_path: Path) -> None:
    from sanctorum.host.host import sgx_problems

    problems = sgx_problems(tmp_path, which=lambda name: None)
    text = "; ".join(problems)
    for piece in (
        "/dev/sgx_enclave",
        "gramine-sgx",
        "aesm.socket",
        "libsgx_dcap_ql.so.1",
        "libsgx_dcap_default_qpl.so.1",
    ):
        assert piece in text
    for path in (
        "dev/sgx_enclave",
        "var/run/aesmd/aesm.socket",
        "usr/lib/x86_64-linux-gnu/libsgx_dcap_ql.so.1",
        "usr/lib/libsgx_dcap_default_qpl.so.1",
    ):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
    assert sgx_problems(tmp_path, which=lambda name: f"/usr/bin/{name}") == []


# -- the enclave process runs only measured code (issue 10, observation 3) -----------------------

_SHADOWED = """
from sanctorum import Enclave
import helper_outside_the_bundle


class Shadowed(Enclave):
    def receive_from_untrusted_host(self, data: bytes) -> bytes:
        return helper_outside_the_bundle.VALUE
"""


def test_modules_outside_the_bundle_are_not_imported_from_the_hosts_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sanctorum.build import build
    from sanctorum.common.errors import EnclaveLoadError

    project = tmp_path / "project"
    project.mkdir()
    (project / "shadowed.py").write_text(_SHADOWED)
    (project / "enclave.toml").write_text(
        '[enclave]\nname = "shadowed"\nentry = "shadowed:Shadowed"\nproduct_id = 1\n'
        'revocation_level = 0\nsources = ["shadowed.py"]\n'
    )
    bundle = build(project, tmp_path / "out").path
    # The module the enclave wants is right where an unisolated child would find it: in the
    # host's working directory and on PYTHONPATH. Editing it there must not change the enclave.
    for directory in (project, tmp_path / "pythonpath"):
        directory.mkdir(exist_ok=True)
        (directory / "helper_outside_the_bundle.py").write_text("VALUE = b'from the host'\n")
    monkeypatch.chdir(project)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "pythonpath"))
    with pytest.raises(EnclaveLoadError, match="'helper_outside_the_bundle', which is not in its"):
        EnclaveHost.load(bundle, mode="simulation").start()


def test_a_host_directory_shadowing_the_standard_library_changes_nothing(
    bundle_for: BundleFor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("json", "hashlib", "struct"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('shadowed by the host')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with EnclaveHost.load(bundle_for("Recorder"), mode="simulation").start() as host:
        assert host.call_enclave(b"abc") == b"cba"


def test_the_import_guard_allows_the_runtime_and_refuses_the_rest() -> None:
    from sanctorum.enclave.importer import MeasuredOnlyFinder

    guard = MeasuredOnlyFinder()
    assert guard.find_spec("json.decoder", None) is None
    assert guard.find_spec("cryptography.hazmat", None) is None
    with pytest.raises(ModuleNotFoundError, match="add the module to"):
        guard.find_spec("numpy", None)
