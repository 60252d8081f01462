"""SGX signing: the user's RSA key is the enclave's MRSIGNER, and the build says so.

Real data (tests/build/data/PROVENANCE.md) checks the MRSIGNER and SIGSTRUCT code; stand-in
``gramine-manifest`` and ``gramine-sgx-sign`` scripts, first on PATH, record their arguments and
write a SIGSTRUCT signed with the key they are given, as the real ones do.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dcap_qvl
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from typer.testing import CliRunner

from sanctorum.attestation import EnclaveConstraint
from sanctorum.build import (
    build,
    generate_key,
    generate_sgx_key,
    load_key,
    load_sgx_key,
    mrsigner,
    read_sigstruct,
    sign,
)
from sanctorum.cli import app
from sanctorum.common.errors import BundleError
from sanctorum.common.hashes import SHA256Hash
from sanctorum.common.mode import EnclaveMode
from sanctorum.host import EnclaveHost
from tests.conftest import write_project

DATA = Path(__file__).parent / "data"
runner = CliRunner()

# Published alongside the data by their origins (fortanix/rust-sgx, oasis-core, lexe, …).
FORTANIX_DUMMY_MRSIGNER = "9affcfae47b848ec2caf1c49b4b283531e1cc425f93582b36806e52a43d78d1a"
SIG1_ENCLAVEHASH = "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"
SIG1_MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"


def _public_key(name: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key((DATA / name).read_bytes())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


# -- MRSIGNER and SIGSTRUCT against real data ---------------------------------------------------


def test_mrsigner_of_a_known_key_is_the_one_in_real_sgx_quotes() -> None:
    """Fortanix's dummy key signed the enclave of a real DCAP quote (recorded by Automata);
    dcap-qvl reads the quote's MRSIGNER, and it must be ours for that key."""
    key = _public_key("fortanix_dummy_key.pub.pem")
    quote = dcap_qvl.parse_quote((DATA / "automata_quote_sgx.bin").read_bytes())
    assert quote.is_sgx()
    in_quote = bytes(quote.report.mr_signer)
    assert in_quote.hex() == FORTANIX_DUMMY_MRSIGNER
    assert mrsigner(key) == SHA256Hash(in_quote)


def test_a_real_sigstruct_reads_and_verifies_under_its_key() -> None:
    """A SIGSTRUCT written by Fortanix's sgxs-sign: its ENCLAVEHASH is the one their test
    states, its signature verifies under the key, and MRSIGNER is SHA-256 of the MODULUS field
    (as gramine-sgx-sigstruct-view computes it), which is the Intel SDK sample key's MRSIGNER."""
    key = _public_key("fortanix_sig1_key.pub.pem")
    data = (DATA / "fortanix_sig1.sigstruct.bin").read_bytes()
    sigstruct = read_sigstruct(data, "sig1", key)
    assert sigstruct.mrenclave == SHA256Hash.parse(SIG1_ENCLAVEHASH)
    assert hashlib.sha256(data[128:512]).hexdigest() == SIG1_MRSIGNER
    assert sigstruct.mrsigner == mrsigner(key) == SHA256Hash.parse(SIG1_MRSIGNER)
    assert (sigstruct.product_id, sigstruct.security_version, sigstruct.debug) == (0, 0, False)


def test_mrsigner_follows_the_definition() -> None:
    """Independently of the real data: SHA-256 of the modulus as 384 little-endian bytes."""
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    modulus_hex = format(key.public_key().public_numbers().n, "0768x")
    expected = hashlib.sha256(bytes.fromhex(modulus_hex)[::-1]).digest()
    assert mrsigner(key).digest == expected
    assert mrsigner(key.public_key()) == mrsigner(key)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (960, "does not verify"),  # ENCLAVEHASH: the MRENCLAVE a constraint would carry
        (1024, "does not verify"),  # ISVPRODID
        (700, "does not verify"),  # the signature itself
        (0, "not a SIGSTRUCT"),  # the header
    ],
)
def test_an_altered_sigstruct_is_refused(where: int, message: str) -> None:
    data = bytearray((DATA / "fortanix_sig1.sigstruct.bin").read_bytes())
    data[where] ^= 0x01
    with pytest.raises(BundleError, match=message):
        read_sigstruct(bytes(data), "sig1", _public_key("fortanix_sig1_key.pub.pem"))


def test_a_sigstruct_of_another_signer_is_refused() -> None:
    data = (DATA / "fortanix_sig1.sigstruct.bin").read_bytes()
    with pytest.raises(BundleError, match=f"signed by another key.*{SIG1_MRSIGNER.upper()}"):
        read_sigstruct(data, "sig1", _public_key("fortanix_dummy_key.pub.pem"))
    with pytest.raises(BundleError, match="1808-byte SIGSTRUCT"):
        read_sigstruct(data[:-1], "sig1")


# -- the SGX key ----------------------------------------------------------------------------------


def test_keygen_sgx_writes_an_owner_only_sgx_key_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "sgx-key.pem"
    old_umask = os.umask(0)  # the file must be 0600 even where the umask allows more
    try:
        result = runner.invoke(app, ["keygen", "--sgx", str(path)])
    finally:
        os.umask(old_umask)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_sgx_key(path)
    assert (key.key_size, key.public_key().public_numbers().e) == (3072, 3)
    assert f"MRSIGNER:    {mrsigner(key)}" in result.output
    written = path.read_bytes()
    again = runner.invoke(app, ["keygen", "--sgx", str(path)])
    assert again.exit_code == 1
    assert "refusing to overwrite" in again.output
    assert path.read_bytes() == written
    # Nor through a symbolic link (even a dangling one): the target stays untouched.
    link, target = tmp_path / "link.pem", tmp_path / "target.pem"
    link.symlink_to(target)
    with pytest.raises(BundleError, match="refusing to overwrite"):
        generate_sgx_key(link)
    assert not target.exists()


def _pem(
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, password: bytes | None = None
) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: _pem(rsa.generate_private_key(65537, 3072)), "public exponent 65537"),
        (lambda: _pem(rsa.generate_private_key(3, 2048)), "RSA-2048 key; SGX needs RSA-3072"),
        (lambda: _pem(ed25519.Ed25519PrivateKey.generate()), "not an RSA key"),
        (lambda: _pem(rsa.generate_private_key(3, 3072), b"pw"), "passphrase-protected"),
        (lambda: b"junk", "not a PEM private key"),
    ],
)
def test_keys_sgx_cannot_use_are_refused(
    tmp_path: Path, make: Callable[[], bytes], message: str
) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(make())
    with pytest.raises(BundleError, match=message):
        load_sgx_key(path)
    with pytest.raises(BundleError, match="cannot read the SGX signing key"):
        load_sgx_key(tmp_path / "missing.pem")


# -- builds, with stand-in Gramine tools ----------------------------------------------------------

_GRAMINE_MANIFEST = """#!{python}
# Stand-in for gramine-manifest: records its arguments, renders the two Gramine variables.
import json, os, sys
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps(["gramine-manifest", *sys.argv[1:]]) + "\\n")
source, output = sys.argv[-2:]
text = open(source).read()
gramine = "/usr/lib/x86_64-linux-gnu/gramine"
text = text.replace("{{{{ gramine.libos }}}}", gramine + "/libsysdb.so")
text = text.replace("{{{{ gramine.runtimedir() }}}}", gramine + "/runtime/glibc")
open(output, "w").write(text)
"""

_GRAMINE_SGX_SIGN = """#!{python}
# Stand-in for gramine-sgx-sign: records its arguments, prints what the real one prints, and
# writes a SIGSTRUCT signed (PKCS#1 v1.5, SHA-256, little-endian) with the --key it is given,
# or, like the real one, with the default key in $XDG_CONFIG_HOME/gramine when there is none.
import hashlib, json, os, re, struct, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps(["gramine-sgx-sign", *sys.argv[1:]]) + "\\n")
if os.environ.get("STANDIN_FAIL"):
    print("Missing trusted file: '/no/such/file'", file=sys.stderr)
    sys.exit(2)
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
default_key = os.path.join(os.environ["XDG_CONFIG_HOME"], "gramine", "enclave-key.pem")
key_path = args.get("--key", default_key)
if os.environ.get("STANDIN_IGNORE_KEY"):
    key_path = default_key
key = serialization.load_pem_private_key(open(key_path, "rb").read(), password=None)
manifest = open(args["--manifest"], "rb").read()
open(args["--output"], "wb").write(manifest)
text = manifest.decode()
product = int(os.environ.get("STANDIN_ISVPRODID") or re.search(r"sgx.isvprodid = (\\d+)", text)[1])
svn = int(re.search(r"sgx.isvsvn = (\\d+)", text)[1])
debug = "sgx.debug = true" in text
mrenclave = hashlib.sha256(manifest).digest()

sig = bytearray(1808)
sig[0:16] = bytes.fromhex("06000000e10000000000010000000000")
sig[24:40] = bytes.fromhex("01010000600000006000000001000000")
struct.pack_into("<Q", sig, 928, 0x5 | (0x2 if debug else 0))
sig[960:992] = mrenclave
struct.pack_into("<HH", sig, 1024, product, svn)
signature = key.sign(bytes(sig[:128] + sig[900:1028]), padding.PKCS1v15(), hashes.SHA256())
numbers = key.public_key().public_numbers()
s = int.from_bytes(signature, "big")
sig[128:512] = numbers.n.to_bytes(384, "little")
struct.pack_into("<I", sig, 512, numbers.e)
sig[516:900] = s.to_bytes(384, "little")
sig[1040:1424] = (s * s // numbers.n).to_bytes(384, "little")
sig[1424:1808] = ((s * s % numbers.n) * s // numbers.n).to_bytes(384, "little")
open(args["--sigfile"], "wb").write(sig)

printed = [
    "Attributes (required for enclave measurement):",
    "    size:        0x80000000",
    "    edmm:        False",
    "    max_threads: 32",
    "SGX remote attestation:",
    "    DCAP/ECDSA",
    "Memory:",
    "    000000007ffe0000-0000000080000000 [REG:R--] (manifest) measured",
    "Measurement:",
    "    " + mrenclave.hex(),
]
print("\\n".join(printed))
with open(os.environ["STANDIN_LOG"] + ".stdout", "w") as copy:  # for the test to compare
    copy.write("\\n".join(printed) + "\\n")
"""


@dataclass
class Gramine:
    """The stand-in tools and what they saw."""

    log: Path
    default_key: Path

    def calls(self, tool: str) -> list[list[str]]:
        if not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [line[1:] for line in lines if line[0] == tool]

    def measurement(self) -> SHA256Hash:
        """The MRENCLAVE gramine-sgx-sign printed last (the line after "Measurement:")."""
        lines = Path(f"{self.log}.stdout").read_text().splitlines()
        return SHA256Hash.parse(lines[lines.index("Measurement:") + 1])


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two SGX keys (the user's and the machine's Gramine default) and an Ed25519 one."""
    folder = tmp_path_factory.mktemp("keys")
    generate_sgx_key(folder / "sgx-key.pem")
    generate_sgx_key(folder / "gramine-default.pem")
    generate_key(folder / "release-key.pem")
    return {
        "sgx": folder / "sgx-key.pem",
        "default": folder / "gramine-default.pem",
        "bundle": folder / "release-key.pem",
    }


@pytest.fixture
def gramine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: dict[str, Path]) -> Gramine:
    bin_dir = tmp_path / "gramine-bin"
    bin_dir.mkdir()
    for name, text in (
        ("gramine-manifest", _GRAMINE_MANIFEST),
        ("gramine-sgx-sign", _GRAMINE_SGX_SIGN),
    ):
        tool = bin_dir / name
        tool.write_text(text.format(python=sys.executable))
        tool.chmod(0o755)
    config_home = tmp_path / "xdg-config"
    (config_home / "gramine").mkdir(parents=True)
    default_key = config_home / "gramine" / "enclave-key.pem"
    default_key.write_bytes(keys["default"].read_bytes())
    log = tmp_path / "gramine-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.setenv("STANDIN_LOG", str(log))
    return Gramine(log, default_key)


@pytest.fixture
def no_gramine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH on which no Gramine tool is found, whatever this machine has installed."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def _key_argument(call: list[str]) -> str:
    assert call.count("--key") == 1, call
    return call[call.index("--key") + 1]


def _release(tmp_path: Path, keys: dict[str, Path], *extra: str) -> tuple[int, str, Path]:
    project = write_project(tmp_path, "Recorder")
    out = tmp_path / "out"
    args = [
        "build",
        str(project),
        "-o",
        str(out),
        "--mode",
        "release",
        "--key",
        str(keys["bundle"]),
    ]
    result = runner.invoke(app, [*args, *extra])
    return result.exit_code, result.output, out


def test_release_build_signs_with_the_sgx_key_and_prints_its_constraints(
    tmp_path: Path, gramine: Gramine, keys: dict[str, Path]
) -> None:
    code, output, out = _release(tmp_path, keys, "--sgx-key", str(keys["sgx"]))
    assert code == 0, output
    (manifest_call,) = gramine.calls("gramine-manifest")
    assert manifest_call == [
        str(out / "recorder.manifest.template"),
        str(out / "recorder.manifest"),
    ]
    (sign_call,) = gramine.calls("gramine-sgx-sign")
    assert _key_argument(sign_call) == str(keys["sgx"].resolve())
    assert sign_call[sign_call.index("--sigfile") + 1] == str(out / "recorder.sig")

    signer = mrsigner(load_sgx_key(keys["sgx"]))
    assert signer != mrsigner(load_sgx_key(gramine.default_key))
    expected_code = f"C:{gramine.measurement()} SEC:SECURE"
    expected_signer = f"S:{signer} PROD:1 SEC:SECURE"
    assert f"constraint:  {expected_code}\n" in output
    assert f"         or: {expected_signer}\n" in output
    assert (out / "recorder.release.code.constraint").read_text() == expected_code + "\n"
    assert (out / "recorder.release.signer.constraint").read_text() == expected_signer + "\n"
    for line in (expected_code, expected_signer):
        assert EnclaveConstraint.parse(line).format() == line
    # The Ed25519 bundle signer is no constraint of an SGX build.
    assert not list(out.glob("*.simulation.*"))
    assert "S:" not in output.replace(expected_signer, "")


def test_a_relative_output_directory_works(
    tmp_path: Path, gramine: Gramine, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = write_project(tmp_path, "Recorder")
    monkeypatch.chdir(tmp_path)
    result = build(Path("."), Path("out"), mode=EnclaveMode.DEBUG, sgx_key=keys["sgx"])
    assert result.sgx is not None
    assert result.sgx.mrenclave == gramine.measurement()
    assert (project / "out" / "recorder.debug.code.constraint").read_text() == (
        f"C:{gramine.measurement()} SEC:INSECURE\n"
    )


def test_release_build_without_an_sgx_key_is_refused_before_anything_is_written(
    tmp_path: Path, gramine: Gramine, keys: dict[str, Path]
) -> None:
    code, output, out = _release(tmp_path, keys)
    assert code == 1
    assert "a release build must name your SGX signing key: pass --sgx-key" in output
    assert not out.exists()
    assert gramine.calls("gramine-sgx-sign") == []
    with pytest.raises(BundleError, match="must name your SGX signing key"):
        build(tmp_path, tmp_path / "other", load_key(keys["bundle"]), EnclaveMode.RELEASE)
    assert not (tmp_path / "other").exists()


def test_release_build_refuses_a_key_sgx_cannot_use(
    tmp_path: Path, gramine: Gramine, keys: dict[str, Path]
) -> None:
    code, output, out = _release(tmp_path, keys, "--sgx-key", str(keys["bundle"]))
    assert code == 1
    assert "is not an RSA key" in output
    assert not out.exists()


def test_debug_build_without_a_key_uses_a_throwaway_key_never_gramines_default(
    tmp_path: Path, gramine: Gramine, keys: dict[str, Path]
) -> None:
    project = write_project(tmp_path, "Recorder")
    result = build(project, tmp_path / "out", mode=EnclaveMode.DEBUG)
    assert result.sgx is not None
    (sign_call,) = gramine.calls("gramine-sgx-sign")
    used = Path(_key_argument(sign_call))
    assert used != gramine.default_key
    assert not used.exists()  # deleted: nothing else can be signed with it
    assert result.sgx.throwaway_key
    assert result.sgx.mrsigner is not None
    assert result.sgx.mrsigner != mrsigner(load_sgx_key(gramine.default_key))
    assert result.constraints["signer"] == f"S:{result.sgx.mrsigner} PROD:1 SEC:INSECURE"
    assert result.constraints["code"] == f"C:{result.sgx.mrenclave} SEC:INSECURE"
    assert "throwaway SGX key, now deleted" in result.sgx.note


def test_debug_build_with_a_key_keeps_its_mrsigner(
    tmp_path: Path, gramine: Gramine, keys: dict[str, Path]
) -> None:
    project = write_project(tmp_path, "Recorder")
    result = build(project, tmp_path / "out", mode=EnclaveMode.DEBUG, sgx_key=keys["sgx"])
    assert result.sgx is not None
    assert not result.sgx.throwaway_key
    assert result.sgx.mrsigner == mrsigner(load_sgx_key(keys["sgx"]))
    assert result.sgx.sigstruct is not None
    assert read_sigstruct(result.sgx.sigstruct.read_bytes(), "sig").debug


def test_a_signature_by_any_other_key_is_refused(
    tmp_path: Path, gramine: Gramine, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gramine-sgx-sign that falls back to the machine's default key is caught, and what an
    earlier, good build left is not taken for this one's."""
    code, output, out = _release(tmp_path, keys, "--sgx-key", str(keys["sgx"]))
    assert code == 0, output
    assert (out / "recorder.release.code.constraint").exists()
    monkeypatch.setenv("STANDIN_IGNORE_KEY", "1")
    code, output, out = _release(tmp_path, keys, "--sgx-key", str(keys["sgx"]))
    assert code == 1
    assert "signed by another key" in output
    # Nothing that `gramine-sgx` could run is left behind.
    assert not (out / "recorder.sig").exists()
    assert not (out / "recorder.manifest.sgx").exists()
    assert not (out / "recorder.release.code.constraint").exists()
    assert not (out / "recorder.release.signer.constraint").exists()


def test_a_sigstruct_that_disagrees_with_the_configuration_is_refused(
    tmp_path: Path, gramine: Gramine, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_ISVPRODID", "7")
    code, output, out = _release(tmp_path, keys, "--sgx-key", str(keys["sgx"]))
    assert code == 1
    assert "says product id 7" in output
    assert not (out / "recorder.sig").exists()


def test_a_failing_gramine_tool_is_a_bundle_error(
    tmp_path: Path, gramine: Gramine, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_FAIL", "1")
    project = write_project(tmp_path, "Recorder")
    with pytest.raises(BundleError, match=r"(?s)gramine-sgx-sign failed.*Missing trusted file"):
        build(project, tmp_path / "out", mode=EnclaveMode.DEBUG, sgx_key=keys["sgx"])


def test_without_gramine_the_mrsigner_constraint_is_printed_and_mrenclave_promised(
    tmp_path: Path, no_gramine: None, keys: dict[str, Path]
) -> None:
    code, output, out = _release(tmp_path, keys, "--sgx-key", str(keys["sgx"]))
    assert code == 0, output
    expected = f"S:{mrsigner(load_sgx_key(keys['sgx']))} PROD:1 SEC:SECURE"
    assert f"constraint:  {expected}\n" in output
    assert "MRENCLAVE:        not known yet: it appears once gramine-sgx-sign has signed" in output
    assert f"--key {keys['sgx'].resolve()}" in output
    assert (out / "recorder.release.signer.constraint").read_text() == expected + "\n"
    assert not (out / "recorder.release.code.constraint").exists()


def test_constraint_files_never_outlive_the_bundle_they_describe(
    tmp_path: Path, gramine: Gramine, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output, out = _release(tmp_path, keys, "--sgx-key", str(keys["sgx"]))
    assert code == 0, output
    release_code = out / "recorder.release.code.constraint"
    release_signer = out / "recorder.release.signer.constraint"
    assert release_code.exists()
    assert (out / "recorder.sig").exists()
    # A simulation build rewrites the bundle (dummy key): the old MRENCLAVE no longer holds.
    simulated = build(tmp_path, out)
    assert not release_code.exists()
    assert not (out / "recorder.sig").exists()
    assert not (out / "recorder.manifest.sgx").exists()
    assert release_signer.exists()  # MRSIGNER depends on the SGX key alone
    assert (out / "recorder.simulation.code.constraint").read_text() == (
        f"C:{simulated.code_hash} SEC:INSECURE\n"
    )
    # Re-signing the bundle drops the simulation signer it replaces, and says the SGX
    # signature must be redone.
    code, output, out = _release(tmp_path, keys, "--sgx-key", str(keys["sgx"]))
    assert code == 0, output
    other = tmp_path / "other-key.pem"
    new_key = generate_key(other)
    resigned = sign(out / "recorder.enclave", new_key)
    assert resigned.note is not None
    assert "build again" in resigned.note
    assert not release_code.exists()
    assert (out / "recorder.simulation.signer.constraint").read_text() == (
        f"S:{resigned.signer_hash} PROD:1 SEC:INSECURE\n"
    )
    # Without Gramine a rebuild cannot know the MRENCLAVE: no old one is left behind.
    code, output, out = _release(tmp_path, keys, "--sgx-key", str(keys["sgx"]))
    assert release_code.exists()
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "behaviour_enclave.py").write_text(
        (tmp_path / "behaviour_enclave.py").read_text() + "\n# changed\n"
    )
    code, output, out = _release(tmp_path, keys, "--sgx-key", str(keys["sgx"]))
    assert code == 0, output
    assert not release_code.exists()
    assert release_signer.exists()


def test_simulation_constraints_accept_the_enclave_they_were_printed_for(tmp_path: Path) -> None:
    project = write_project(tmp_path, "Recorder")
    built = runner.invoke(app, ["build", str(project), "-o", str(tmp_path / "out")])
    assert built.exit_code == 0, built.output
    files = sorted((tmp_path / "out").glob("recorder.simulation.*.constraint"))
    assert [file.name.split(".")[2] for file in files] == ["code", "signer"]
    with EnclaveHost.load(tmp_path / "out" / "recorder.enclave").start() as host:
        info = host.enclave_instance_info
        for file in files:
            line = file.read_text().strip()
            assert line in built.output
            EnclaveConstraint.parse(line).check(info)


def test_sgx_key_is_refused_for_simulation_builds(tmp_path: Path, keys: dict[str, Path]) -> None:
    with pytest.raises(BundleError, match="--sgx-key signs SGX enclaves"):
        build(write_project(tmp_path, "Recorder"), tmp_path / "out", sgx_key=keys["sgx"])


def test_an_sgx_build_reports_its_steps(
    tmp_path: Path, gramine: Gramine, keys: dict[str, Path]
) -> None:
    steps: list[str] = []
    project = write_project(tmp_path, "Recorder")
    build(project, tmp_path / "out", mode=EnclaveMode.DEBUG, progress=steps.append)
    assert steps[3:] == [
        "writing the Gramine manifest template",
        "rendering the Gramine manifest (gramine-manifest)",
        "generating a throwaway SGX key",
        "measuring and signing the SGX enclave (gramine-sgx-sign)",
        "checking the SIGSTRUCT",
    ]
    steps.clear()
    build(
        project,
        tmp_path / "out",
        mode=EnclaveMode.DEBUG,
        sgx_key=keys["sgx"],
        progress=steps.append,
    )
    assert "generating a throwaway SGX key" not in steps
    assert steps[-1] == "checking the SIGSTRUCT"
