"""Mail: one-way Noise X encrypted messages between clients and enclaves (DESIGN §7)."""

from sanctorum.mail.format import EnclaveMail, MailHeader, open_mail, read_mail_header, seal_mail
from sanctorum.mail.policy import MinSizePolicy
from sanctorum.mail.post_office import PostOffice
from sanctorum.mail.sequence import SequenceTracker

__all__ = [
    "EnclaveMail",
    "MailHeader",
    "MinSizePolicy",
    "PostOffice",
    "SequenceTracker",
    "open_mail",
    "read_mail_header",
    "seal_mail",
]
