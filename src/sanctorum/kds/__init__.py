"""The key derivation service (KDS): keys that do not depend on one machine.

A KDS is itself an enclave. It holds master keys and derives from them, for each **key spec**
(a name, a master key type and a policy constraint), a key it hands only to enclaves whose
attestation meets the spec's policy. See docs/kds.md.
"""

from sanctorum.kds.spec import KeySpec, MasterKeyType, derive_spec_key

__all__ = ["KeySpec", "MasterKeyType", "derive_spec_key"]
