"""Enclaves for the behaviour suite. They report their state through calls, so the same tests
run in mock mode (in process) and in simulation mode (in a child process)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

from sanctorum import Enclave, EnclaveInstanceInfo, EnclaveMail
from sanctorum.common import Curve25519PrivateKey, Curve25519PublicKey


class Recorder(Enclave):
    """Records what reaches it; replies to mail with the body upper-cased."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.mails: list[list[object]] = []

    def on_startup(self) -> None:
        self.events.append("startup")

    def on_shutdown(self) -> None:
        # Proof that on_shutdown ran, visible after the enclave is gone.
        path = os.environ.get("SANCTORUM_TEST_SHUTDOWN_FILE")
        if path:
            with open(path, "a") as file:
                file.write("shutdown\n")

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        command, _, argument = data.partition(b" ")
        if command == b"state":
            return json.dumps({"events": self.events, "mails": self.mails}).encode()
        self.events.append(f"call {data.decode(errors='replace')}")
        if command == b"ask":
            return self.call_untrusted_host(argument)
        if command == b"ask-then-raise":
            self.call_untrusted_host(argument)
            raise RuntimeError("failed after the host callback")
        if command == b"notify":  # notify KEY_HEX TOPIC ROUTING_HINT BODY: mail a client unasked
            key, topic, hint, body = argument.split(b" ", 3)
            office = self.post_office(
                Curve25519PublicKey(bytes.fromhex(key.decode())), topic.decode()
            )
            self.post_mail(office.encrypt_mail(body), hint.decode())
            return b"notified"
        if command == b"nested":
            answer = self.call_untrusted_host(b"go deeper")
            return b"outer(" + (answer or b"") + b")"
        if command == b"raise":
            raise ValueError("bad input from host")
        if command == b"none":
            return None
        if command == b"post":
            office = self.post_office(Curve25519PrivateKey.generate().public_key, "notes")
            self.post_mail(office.encrypt_mail(b"note"), "hint-1")
            return b"posted"
        if command == b"sign":
            return self.sign(argument)
        if command == b"quote":
            return self.create_attestation_quote(argument)
        if command == b"crash":
            os._exit(3)
        return data[::-1]

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        self.mails.append(
            [
                mail.body.decode(errors="replace"),
                mail.envelope.decode(errors="replace"),
                mail.topic,
                mail.sequence_number,
                mail.authenticated_sender.encoded.hex(),
            ]
        )
        if mail.body == b"fail":
            self.post_mail(self.post_office(mail).encrypt_mail(b"never sent"), routing_hint)
            raise RuntimeError("handler failed")
        if mail.body == b"silent":
            return
        if mail.body.startswith(b"ask "):  # the host answers while the mail is handled
            answer = self.call_untrusted_host(mail.body[4:]) or b"(none)"
            self.post_mail(self.post_office(mail).encrypt_mail(answer), routing_hint)
            return
        if mail.body == b"slow":
            time.sleep(1)
        reply = self.post_office(mail).encrypt_mail(mail.body.upper(), b"reply-envelope")
        self.post_mail(reply, routing_hint)


class Slow(Enclave):
    """Counts how many calls are inside it at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0
        self.lock = threading.Lock()

    def receive_from_untrusted_host(self, data: bytes) -> bytes:
        if data == b"most":
            return str(self.most_inside).encode()
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.05)
        with self.lock:
            self.inside -= 1
        return data


class SlowThreadSafe(Slow):
    thread_safe = True


class Counter(Enclave):
    """Counts mails in its persistent map; host calls read and change the map."""

    persistent_map_size = 4096

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        command, _, argument = data.partition(b" ")
        state = self.persistent_map
        if command == b"dump":
            return json.dumps(
                {key: value.decode() for key, value in sorted(state.items())}
            ).encode()
        if command == b"set":
            key, _, value = argument.partition(b"=")
            state[key.decode()] = value
            return b"ok"
        if command == b"delete":
            del state[argument.decode()]
            return b"ok"
        if command == b"set-then-fail":
            state["doomed"] = b"x"
            raise RuntimeError("failed after changing the map")
        if command == b"set-then-nested":  # a nested call that raises must commit nothing
            state["outer"] = b"kept"
            try:
                self.call_untrusted_host(b"nested")
            except Exception:
                state["outer caught"] = b"yes"
            return b"ok"
        if command == b"big":
            state["big"] = bytes(int(argument))
            return b"ok"
        if command == b"notify":  # notify KEY_HEX TOPIC ROUTING_HINT BODY: mail a client unasked
            key, topic, hint, body = argument.split(b" ", 3)
            destination = Curve25519PublicKey(bytes.fromhex(key.decode()))
            self.post_mail(
                self.post_office(destination, topic.decode()).encrypt_mail(body), hint.decode()
            )
            return b"notified"
        return None

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        count = int(self.persistent_map.get("count", b"0")) + 1
        self.persistent_map["count"] = str(count).encode()
        self.post_mail(self.post_office(mail).encrypt_mail(str(count).encode()), routing_hint)


class ThreadSafeCounter(Counter):
    thread_safe = True


class Files(Enclave):
    """Reads and writes files for the host: persistent ones, and scratch ones under /tmp."""

    filesystem_size = 8 << 20
    memory_filesystem_size = 256 << 10

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        command, _, argument = data.partition(b" ")
        path, _, content = argument.decode().partition("=")
        files = self.filesystem
        if command == b"write":
            files.mkdir(os.path.dirname(path) or "/", parents=True, exist_ok=True)
            files.write_text(path, content)
            return b"ok"
        if command == b"read":
            return files.read_bytes(path)
        if command == b"list":
            return json.dumps(files.listdir(path)).encode()
        if command == b"make":  # make PATH=SIZE: deterministic bytes, returns their SHA-256
            data = _pattern(int(content))
            files.write_bytes(path, data)
            return hashlib.sha256(data).hexdigest().encode()
        if command == b"hash":
            return hashlib.sha256(files.read_bytes(path)).hexdigest().encode()
        return None


def _pattern(size: int) -> bytes:
    block = hashlib.sha256(str(size).encode()).digest() * 2048
    return (block * (size // len(block) + 1))[:size]


class Peer(Enclave):
    """Talks to another enclave of its own code: ``trust ATTESTATION`` checks the other's
    attestation inside this enclave; ``send TEXT`` mails it; mail from it is recorded, and a
    ping is answered with a pong."""

    def __init__(self) -> None:
        self.peer: EnclaveInstanceInfo | None = None
        self.heard: list[str] = []

    def receive_from_untrusted_host(self, data: bytes) -> bytes | None:
        command, _, argument = data.partition(b" ")
        if command == b"trust":
            own = self.enclave_instance_info
            constraint = f"C:{own.code_hash} SEC:INSECURE"  # only enclaves of this very code
            self.peer = self.verify_enclave(argument, constraint)
            return b"trusted"
        if command == b"send":
            if self.peer is None:
                raise RuntimeError("no peer trusted yet")
            self.post_mail(self.post_office(self.peer, "peers").encrypt_mail(argument), "peer")
            return b"sent"
        return json.dumps(self.heard).encode()

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        if self.peer is None or mail.authenticated_sender != self.peer.encryption_key:
            raise PermissionError("mail from an enclave this one has not verified")
        self.heard.append(mail.body.decode())
        if mail.body.startswith(b"ping"):
            pong = self.post_office(mail).encrypt_mail(b"pong:" + mail.body)
            self.post_mail(pong, routing_hint)
