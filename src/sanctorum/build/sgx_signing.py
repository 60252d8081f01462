"""The SGX signing key and the SIGSTRUCT it signs (debug and release modes).

Under SGX an enclave's signer identity, MRSIGNER, is SHA-256 of the modulus of the RSA key that
signed its SIGSTRUCT, written as 384 little-endian bytes (Intel SDM vol. 3D, EINIT). SGX accepts
only RSA-3072 keys with public exponent 3. Whoever holds this key can sign enclaves that pass
``S:<MRSIGNER> PROD:n`` constraints and that derive the MRSIGNER-policy sealing keys, so the key
is the user's, named on every SGX build, never a default key found on the build machine.

All RSA work is done by ``cryptography``; this module only lays out and reads the SIGSTRUCT.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sanctorum.build.keyfiles import refuse_existing, write_secret_file
from sanctorum.common.errors import BundleError
from sanctorum.common.hashes import SHA256Hash

SGX_RSA_KEY_SIZE = 3072
SGX_RSA_PUBLIC_EXPONENT = 3
_MODULUS_SIZE = SGX_RSA_KEY_SIZE // 8

# SIGSTRUCT layout (Intel SDM vol. 3D, "Enclave Signature Structure"); all integers little-endian.
SIGSTRUCT_SIZE = 1808
_HEADER = b"\x06\x00\x00\x00\xe1\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00"
_HEADER2 = b"\x01\x01\x00\x00\x60\x00\x00\x00\x60\x00\x00\x00\x01\x00\x00\x00"
_HEADER2_AT = 24
_MODULUS_AT = 128
_EXPONENT_AT = 512
_SIGNATURE_AT = 516
_BODY_AT = 900  # MISCSELECT: the second signed range starts here
_ATTRIBUTES_AT = 928
_ENCLAVE_HASH_AT = 960
_ISV_PROD_ID_AT = 1024
_ISV_SVN_AT = 1026
_DEBUG_FLAG = 0x2  # ATTRIBUTES.DEBUG


def mrsigner(key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> SHA256Hash:
    """The MRSIGNER of enclaves signed with ``key``: SHA-256 of its modulus, 384 bytes LE."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    _check_sgx_key(public, "the key")
    return SHA256Hash.of(public.public_numbers().n.to_bytes(_MODULUS_SIZE, "little"))


def _check_sgx_key(key: rsa.RSAPublicKey, name: str) -> None:
    if key.key_size != SGX_RSA_KEY_SIZE:
        raise BundleError(
            f"{name} is an RSA-{key.key_size} key; SGX needs RSA-{SGX_RSA_KEY_SIZE} "
            "(create one with `sanctorum keygen --sgx PATH`)"
        )
    exponent = key.public_numbers().e
    if exponent != SGX_RSA_PUBLIC_EXPONENT:
        raise BundleError(
            f"{name} has public exponent {exponent}; SGX needs {SGX_RSA_PUBLIC_EXPONENT} "
            "(create one with `sanctorum keygen --sgx PATH`)"
        )


def generate_sgx_key(path: Path) -> rsa.RSAPrivateKey:
    """Write a new SGX signing key (RSA-3072, exponent 3, unencrypted PEM, mode 0600) to
    ``path``, which must not exist yet. The PEM is the form ``gramine-sgx-sign --key`` reads."""
    refuse_existing(path)  # before the slow part
    key = rsa.generate_private_key(
        public_exponent=SGX_RSA_PUBLIC_EXPONENT, key_size=SGX_RSA_KEY_SIZE
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # as gramine-sgx-gen-private-key writes
        serialization.NoEncryption(),
    )
    write_secret_file(path, pem)
    return key


def load_sgx_key(path: Path) -> rsa.RSAPrivateKey:
    """Read an SGX signing key (PEM, RSA-3072, exponent 3), as ``gramine-sgx-sign`` will."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BundleError(
            f"cannot read the SGX signing key {path}: {error.strerror or error} "
            "(create one with `sanctorum keygen --sgx PATH`)"
        ) from None
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise BundleError(
            f"the SGX signing key {path} is passphrase-protected; Sanctorum passes the key "
            "file to gramine-sgx-sign and cannot pass a passphrase safely: use an unencrypted "
            "key kept offline, or sign with gramine-sgx-sign yourself"
        ) from None
    except ValueError as error:
        raise BundleError(f"{path} is not a PEM private key: {error}") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise BundleError(
            f"{path} is not an RSA key; SGX signs with RSA-3072 (exponent 3): create one with "
            "`sanctorum keygen --sgx PATH` (the Ed25519 key from `sanctorum keygen` signs the "
            "bundle, not the SGX enclave)"
        )
    _check_sgx_key(loaded.public_key(), str(path))
    return loaded


@dataclass(frozen=True)
class SgxKeyFile:
    """An SGX signing key and the file ``gramine-sgx-sign --key`` reads it from."""

    path: Path
    private_key: rsa.RSAPrivateKey

    @classmethod
    def load(cls, path: Path) -> SgxKeyFile:
        """Read and check the key at ``path`` (see :func:`load_sgx_key`)."""
        return cls(path.resolve(), load_sgx_key(path))

    @property
    def mrsigner(self) -> SHA256Hash:
        """The MRSIGNER of every enclave this key signs."""
        return mrsigner(self.private_key)


@dataclass(frozen=True)
class Sigstruct:
    """What an SGX enclave's SIGSTRUCT (``NAME.sig``) says about it."""

    mrenclave: SHA256Hash
    mrsigner: SHA256Hash
    product_id: int
    security_version: int
    debug: bool


def _signed_bytes(data: bytes) -> bytes:
    """The two ranges of a SIGSTRUCT that its RSA signature covers."""
    return data[:128] + data[_BODY_AT : _BODY_AT + 128]


def read_sigstruct(data: bytes, source: str, signer: rsa.RSAPublicKey | None = None) -> Sigstruct:
    """Parse a SIGSTRUCT; with ``signer``, also require that it is signed by that key.

    The RSA signature (PKCS#1 v1.5 over SHA-256, stored little-endian) is checked, so a
    SIGSTRUCT that another key signed, or that was altered, is refused with :class:`BundleError`.
    """
    if len(data) != SIGSTRUCT_SIZE:
        raise BundleError(f"{source} is {len(data)} bytes, not a {SIGSTRUCT_SIZE}-byte SIGSTRUCT")
    if data[:16] != _HEADER or data[_HEADER2_AT : _HEADER2_AT + 16] != _HEADER2:
        raise BundleError(f"{source} is not a SIGSTRUCT (its header is wrong)")
    modulus = data[_MODULUS_AT : _MODULUS_AT + _MODULUS_SIZE]
    (exponent,) = struct.unpack_from("<I", data, _EXPONENT_AT)
    if exponent != SGX_RSA_PUBLIC_EXPONENT:
        raise BundleError(f"{source} names public exponent {exponent}; SGX requires 3")
    if signer is not None:
        _check_sgx_key(signer, "the signing key")
        expected = signer.public_numbers().n.to_bytes(_MODULUS_SIZE, "little")
        if modulus != expected:
            raise BundleError(
                f"{source} is signed by another key (MRSIGNER {SHA256Hash.of(modulus)}), not "
                f"by the SGX key given (MRSIGNER {SHA256Hash.of(expected)}): gramine-sgx-sign "
                "ignored --key or the file is stale; remove it and build again"
            )
        signature = data[_SIGNATURE_AT : _SIGNATURE_AT + _MODULUS_SIZE][::-1]  # to big-endian
        try:
            signer.verify(signature, _signed_bytes(data), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise BundleError(
                f"{source}: the SIGSTRUCT signature does not verify under the SGX key given; "
                "the file was altered or is not gramine-sgx-sign's output"
            ) from None
    (flags,) = struct.unpack_from("<Q", data, _ATTRIBUTES_AT)
    product_id, security_version = struct.unpack_from("<HH", data, _ISV_PROD_ID_AT)
    return Sigstruct(
        mrenclave=SHA256Hash(data[_ENCLAVE_HASH_AT : _ENCLAVE_HASH_AT + 32]),
        mrsigner=SHA256Hash.of(modulus),
        product_id=product_id,
        security_version=security_version,
        debug=bool(flags & _DEBUG_FLAG),
    )
