"""The auction enclave: a sealed-bid auction that reveals only the winner and the price.

Clients send JSON commands as mail on any topic (the clients here use ``COMMAND_TOPIC``), and
each command is answered on its own topic:

``{"open": true}``
    The first client to send it becomes the auctioneer and bidding starts. Answer:
    ``{"opened": true, "auctioneer": KEY}`` (also to the auctioneer asking again); anyone else
    is refused. Bidders see the auctioneer's key in every acknowledgement, so they can check
    that the auctioneer they expect opened the auction (and not, say, the host's own client).
``{"bid": AMOUNT}``
    A whole number above 0. The sender's public key (the mail's authenticated sender)
    identifies the bidder; a bidder may raise its bid, never lower it. Answer:
    ``{"accepted": AMOUNT, "bids": N, "auctioneer": KEY}`` (N: bids this bidder placed), or
    ``{"refused": WHY}``; after the close: ``{"refused": "the auction is closed"}``. The
    auctioneer may not bid.
``{"close": true}``
    Only from the auctioneer. Ends the auction, answers ``{"winner": KEY, "price": AMOUNT}``
    and mails exactly that, on ``RESULT_TOPIC``, to every bidder (``winner`` and ``price`` are
    null if nobody bid). The highest bid wins; between equal bids, the one placed first.
    Nobody learns any other bid, ever. Closing again answers the same and mails nobody.

Everything lives in the persistent map, so the auction survives a restart of the enclave or of
its host: the auctioneer, and per bidder its public key, its bid, the order of that bid, and the
routing hint (the client's correlation id) under which the host queues its mail, which is what
the enclave needs to mail a bidder that has not written since the restart.
"""

from __future__ import annotations

import json
from typing import Any

from sanctorum import Enclave, EnclaveMail
from sanctorum.common import Curve25519PublicKey

COMMAND_TOPIC = "auction"
RESULT_TOPIC = "auction-result"

_AUCTIONEER = "auctioneer"
_RESULT = "result"
_NEXT_ORDER = "next-order"
_BIDDER = "bidder:"  # + the bidder's public key, hex
_MAX_AMOUNT = 2**63 - 1


class AuctionEnclave(Enclave):
    """A sealed-bid auction; see the module's documentation for the commands."""

    def receive_from_untrusted_host(self, data: bytes) -> bytes:
        # The host sees the traffic anyway; it may learn whether the auction is over.
        if data != b"status":
            raise ValueError("the host may only ask for b'status'")
        if _RESULT in self.persistent_map:
            return b"closed"
        return b"open" if _AUCTIONEER in self.persistent_map else b"not open"

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        sender = mail.authenticated_sender.encoded.hex()
        try:
            command = json.loads(mail.body)
        except ValueError:
            command = None
        if not isinstance(command, dict) or len(command) != 1:
            answer: dict[str, Any] = {"error": 'send {"open": true}, {"bid": N} or {"close": true}'}
        elif command.get("open") is True:
            answer = self._open(sender)
        elif "bid" in command:
            answer = self._bid(sender, command["bid"], routing_hint)
        elif command.get("close") is True:
            answer = self._close(sender)
        else:
            answer = {"error": f"unknown command {next(iter(command))!r}"}
        self.post_mail(self.post_office(mail).encrypt_mail(_encode(answer)), routing_hint)

    def _open(self, sender: str) -> dict[str, Any]:
        auctioneer = self.persistent_map.get(_AUCTIONEER)
        if auctioneer is None:
            self.persistent_map[_AUCTIONEER] = sender.encode()
        elif auctioneer.decode() != sender:
            return {"refused": "the auction was opened by another client"}
        return {"opened": True, "auctioneer": sender}

    def _bid(self, sender: str, amount: object, routing_hint: str | None) -> dict[str, Any]:
        auctioneer = self.persistent_map.get(_AUCTIONEER)
        if auctioneer is None:
            return {"refused": "the auction is not open yet"}
        if _RESULT in self.persistent_map:
            return {"refused": "the auction is closed"}
        if sender == auctioneer.decode():
            return {"refused": "the auctioneer may not bid"}
        if type(amount) is not int or not 0 < amount <= _MAX_AMOUNT:
            return {"refused": f"a bid is a whole number from 1 to {_MAX_AMOUNT}"}
        key = _BIDDER + sender
        bidder = json.loads(self.persistent_map.get(key, b'{"amount": 0, "bids": 0}'))
        if amount <= bidder["amount"]:
            return {"refused": f"a bid can only be raised: your bid is {bidder['amount']}"}
        order = int(self.persistent_map.get(_NEXT_ORDER, b"0"))
        self.persistent_map[_NEXT_ORDER] = str(order + 1).encode()
        bidder = {
            "amount": amount,
            "bids": bidder["bids"] + 1,
            "order": order,
            "hint": routing_hint,
        }
        self.persistent_map[key] = _encode(bidder)
        return {"accepted": amount, "bids": bidder["bids"], "auctioneer": auctioneer.decode()}

    def _close(self, sender: str) -> dict[str, Any]:
        auctioneer = self.persistent_map.get(_AUCTIONEER)
        if auctioneer is None or auctioneer.decode() != sender:
            return {"refused": "only the auctioneer may close the auction"}
        if _RESULT in self.persistent_map:
            closed: dict[str, Any] = json.loads(self.persistent_map[_RESULT])
            return closed
        bidders = {
            key.removeprefix(_BIDDER): json.loads(value)
            for key, value in self.persistent_map.items()
            if key.startswith(_BIDDER)
        }
        result: dict[str, Any] = {"winner": None, "price": None}
        if bidders:
            winner = min(bidders, key=lambda k: (-bidders[k]["amount"], bidders[k]["order"]))
            result = {"winner": winner, "price": bidders[winner]["amount"]}
        self.persistent_map[_RESULT] = _encode(result)
        notice = _encode(result)  # the winner and the price, nothing else
        for key, bidder in bidders.items():
            office = self.post_office(Curve25519PublicKey(bytes.fromhex(key)), RESULT_TOPIC)
            self.post_mail(office.encrypt_mail(notice), bidder["hint"])
        return result


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True).encode()
