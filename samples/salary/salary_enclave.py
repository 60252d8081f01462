"""A salary benchmark: employers pool their salaries; each learns the aggregate and where its
own pay stands, and nothing else.

Employers send JSON commands as mail (the clients here use ``COMMAND_TOPIC``):

``{"submit": [SALARY, ...], "employers": N}``
    An employer's salaries (whole numbers above 0, at most ``MAX_SALARIES``), once. The first
    submission fixes N, how many employers take part (at least ``MIN_EMPLOYERS``): every later
    one must name the same N. Until N have submitted the answer is ``{"waiting": K}`` (K
    submitted so far); the N-th is answered with its result, and every other employer is
    mailed its own on ``RESULT_TOPIC``. No submission is taken after that.
``{"result": true}``
    An employer asking again: its result, or ``{"waiting": K}``.

A result is ``{"employers": N, "salaries": COUNT, "p25": ..., "median": ..., "p75": ...,
"mean": ..., "percentile": P}``: quartiles and mean over everyone's salaries, and P, the share
(in percent) of all salaries below this employer's own median. Nobody learns another
employer's salaries, and nothing is released before N have submitted (so no one can learn a
newcomer's data by comparing two releases). With N employers, each can still work out the
aggregate of the N-1 others: choose N with that in mind.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from sanctorum import Enclave, EnclaveMail
from sanctorum.common import Curve25519PublicKey

COMMAND_TOPIC = "salary"
RESULT_TOPIC = "salary-result"
MIN_EMPLOYERS = 3
MAX_SALARIES = 100_000
_EMPLOYER = "employer:"
_SIZE = "employers"


class SalaryEnclave(Enclave):
    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        answer = self._answer(mail, routing_hint)
        office = self.post_office(mail)
        self.post_mail(office.encrypt_mail(json.dumps(answer).encode()), routing_hint)

    def _answer(self, mail: EnclaveMail, routing_hint: str | None) -> dict[str, Any]:
        try:
            command = json.loads(mail.body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return {"error": "a command is a JSON object"}
        if not isinstance(command, dict):
            return {"error": "a command is a JSON object"}
        me = mail.authenticated_sender.encoded.hex()
        employers = self._employers()
        if command == {"result": True}:
            if me not in employers:
                return {"refused": "only employers that submitted may ask"}
            return self._result(employers, me)
        if set(command) != {"submit", "employers"}:
            return {"error": 'a command is {"submit": [...], "employers": N} or {"result": true}'}
        size = self.persistent_map.get(_SIZE)
        wanted = command["employers"]
        if type(wanted) is not int or wanted < MIN_EMPLOYERS or wanted > 10_000:
            return {"refused": f"employers is a whole number from {MIN_EMPLOYERS} to 10000"}
        if size is not None and int(size) != wanted:
            return {"refused": f"this benchmark is for {int(size)} employers"}
        if me in employers:
            return {"refused": "each employer submits once"}
        if size is not None and len(employers) >= int(size):
            return {"refused": "the benchmark is complete"}
        salaries = command["submit"]
        if (
            not isinstance(salaries, list)
            or not 0 < len(salaries) <= MAX_SALARIES
            or not all(type(pay) is int and 0 < pay < 10**9 for pay in salaries)
        ):
            return {"refused": f"submit 1 to {MAX_SALARIES} whole numbers above 0"}
        self.persistent_map[_SIZE] = str(wanted).encode()
        record = {"hint": routing_hint, "salaries": salaries}
        self.persistent_map[_EMPLOYER + me] = json.dumps(record).encode()
        employers[me] = record
        if len(employers) < wanted:
            return {"waiting": len(employers)}
        for other, their in employers.items():  # complete: everyone else is told
            if other != me:
                office = self.post_office(Curve25519PublicKey(bytes.fromhex(other)), RESULT_TOPIC)
                result = json.dumps(self._result(employers, other)).encode()
                self.post_mail(office.encrypt_mail(result), their["hint"])
        return self._result(employers, me)

    def _employers(self) -> dict[str, dict[str, Any]]:
        return {
            key[len(_EMPLOYER) :]: json.loads(value)
            for key, value in self.persistent_map.items()
            if key.startswith(_EMPLOYER)
        }

    def _result(self, employers: dict[str, dict[str, Any]], me: str) -> dict[str, Any]:
        size = int(self.persistent_map[_SIZE])
        if len(employers) < size:
            return {"waiting": len(employers)}
        everyone = sorted(pay for record in employers.values() for pay in record["salaries"])
        p25, median, p75 = statistics.quantiles(everyone, n=4, method="inclusive")
        own = statistics.median(employers[me]["salaries"])
        below = sum(1 for pay in everyone if pay < own)
        return {
            "employers": size,
            "salaries": len(everyone),
            "p25": p25,
            "median": median,
            "p75": p75,
            "mean": round(statistics.fmean(everyone), 2),
            "percentile": round(100 * below / len(everyone), 1),
        }
