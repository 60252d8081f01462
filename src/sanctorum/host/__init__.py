"""The host side: EnclaveHost, platforms, and where posted mail goes."""

from sanctorum.attestation.mock import MockConfiguration
from sanctorum.common.commands import MailCommand, PostMail, StoreSealedState
from sanctorum.host.host import EnclaveHost
from sanctorum.host.kds import KdsConfiguration
from sanctorum.host.mailbox import InMemoryMailbox

__all__ = [
    "EnclaveHost",
    "InMemoryMailbox",
    "KdsConfiguration",
    "MailCommand",
    "MockConfiguration",
    "PostMail",
    "StoreSealedState",
]
