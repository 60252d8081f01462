"""Private set intersection: two parties each learn the items they share, and nothing else.

Parties send JSON commands as mail (the clients here use ``COMMAND_TOPIC``):

``{"submit": [ITEM, ...]}``
    The first two clients to submit are the two parties; each submits once (up to
    ``MAX_ITEMS`` strings of at most ``MAX_ITEM_SIZE`` UTF-8 bytes). The first is answered
    ``{"waiting": true}``; the second ``{"shared": [...]}``, the sorted items both submitted,
    and the first party is mailed the same on ``RESULT_TOPIC``. Anyone else is refused.
``{"result": true}``
    A party asking again: ``{"shared": [...]}`` once both submitted, else ``{"waiting": true}``.

Neither party ever learns an item the other holds alone, nor how many it holds; the host sees
only padded mail. The submissions live in the persistent map, so a restart loses nothing.
"""

from __future__ import annotations

import json
from typing import Any

from sanctorum import Enclave, EnclaveMail
from sanctorum.common import Curve25519PublicKey

COMMAND_TOPIC = "psi"
RESULT_TOPIC = "psi-result"
MAX_ITEMS = 10_000
MAX_ITEM_SIZE = 256
_PARTY = "party:"


class PsiEnclave(Enclave):
    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        answer = self._answer(mail, routing_hint)
        self.post_mail(
            self.post_office(mail).encrypt_mail(json.dumps(answer).encode()), routing_hint
        )

    def _answer(self, mail: EnclaveMail, routing_hint: str | None) -> dict[str, Any]:
        try:
            command = json.loads(mail.body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return {"error": "a command is a JSON object"}
        if not isinstance(command, dict) or len(command) != 1:
            return {"error": 'a command is {"submit": [...]} or {"result": true}'}
        me = mail.authenticated_sender.encoded.hex()
        parties = self._parties()
        if "result" in command:
            if me not in parties:
                return {"refused": "only the two parties may ask for the result"}
            return self._result()
        items = command.get("submit")
        if items is None:
            return {"error": 'a command is {"submit": [...]} or {"result": true}'}
        if me in parties:
            return {"refused": "each party submits once"}
        if len(parties) == 2:
            return {"refused": "two parties have submitted already"}
        problem = _check(items)
        if problem:
            return {"refused": problem}
        record = {"hint": routing_hint, "items": sorted(set(items))}
        self.persistent_map[_PARTY + me] = json.dumps(record).encode()
        if not parties:
            return {"waiting": True}
        result = self._result()
        (first,) = parties
        office = self.post_office(Curve25519PublicKey(bytes.fromhex(first)), RESULT_TOPIC)
        hint = parties[first]["hint"]
        self.post_mail(office.encrypt_mail(json.dumps(result).encode()), hint)
        return result

    def _parties(self) -> dict[str, dict[str, Any]]:
        return {
            key[len(_PARTY) :]: json.loads(value)
            for key, value in self.persistent_map.items()
            if key.startswith(_PARTY)
        }

    def _result(self) -> dict[str, Any]:
        parties = list(self._parties().values())
        if len(parties) < 2:
            return {"waiting": True}
        shared = set(parties[0]["items"]) & set(parties[1]["items"])
        return {"shared": sorted(shared)}


def _check(items: object) -> str | None:
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        return "submit a list of strings"
    if len(items) > MAX_ITEMS:
        return f"at most {MAX_ITEMS} items"
    if any(len(item.encode("utf-8", "surrogatepass")) > MAX_ITEM_SIZE for item in items):
        return f"an item is at most {MAX_ITEM_SIZE} bytes of UTF-8"
    return None
