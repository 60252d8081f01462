"""``sanctorum client --identity FILE`` and ``sanctorum poll``: a shell user as a long-lived
client of a real web host, one process per command."""

from __future__ import annotations

import fcntl
import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sanctorum import EnclaveClient, EnclaveMode, SHA256Hash
from sanctorum import cli as cli_module
from sanctorum.build import build
from sanctorum.cli import app
from sanctorum.web.service import EnclaveService
from tests.web.conftest import RunningHost, serve

runner = CliRunner()

# Numbers each sender's mails (in the persistent map, so across restarts) and remembers where
# to reach it; "say TEXT" also posts TEXT on topic "chat" to every other client that wrote.
BOARD = """
from sanctorum import Enclave, EnclaveMail
from sanctorum.common import Curve25519PublicKey


class Board(Enclave):
    persistent_map_size = 1 << 16

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        key = mail.authenticated_sender.encoded.hex()
        count = int(self.persistent_map.get("count:" + key, b"0")) + 1
        self.persistent_map["count:" + key] = str(count).encode()
        if routing_hint is not None:
            self.persistent_map["hint:" + key] = routing_hint.encode()
        text = mail.body.decode()
        reply = self.post_office(mail).encrypt_mail(f"{count}: {text}".encode())
        self.post_mail(reply, routing_hint)
        if text.startswith("say "):
            for name in list(self.persistent_map):
                if name.startswith("hint:") and name != "hint:" + key:
                    office = self.post_office(Curve25519PublicKey(bytes.fromhex(name[5:])), "chat")
                    note = office.encrypt_mail(f"{key[:8]} says {text[4:]}".encode())
                    self.post_mail(note, self.persistent_map[name].decode())
"""


@pytest.fixture(scope="module")
def board_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    project = tmp_path_factory.mktemp("board")
    (project / "board_enclave.py").write_text(BOARD)
    (project / "enclave.toml").write_text(
        "[enclave]\n"
        'name = "board"\n'
        'entry = "board_enclave:Board"\n'
        "product_id = 1\n"
        "revocation_level = 0\n"
        'sources = ["board_enclave.py"]\n'
        "persistent_map = true\n"
        "max_persistent_map_size = 65536\n"
    )
    built = build(project)
    return built.path, f"C:{built.code_hash} SEC:INSECURE"


class Board:
    """A web host serving the board enclave; :meth:`restart` stops it and serves the same
    state dir again (a new enclave instance, on a new port)."""

    def __init__(self, bundle: Path, state_dir: Path) -> None:
        self.bundle, self.state_dir = bundle, state_dir
        self.running = self._start()

    def _start(self) -> RunningHost:
        service = EnclaveService(self.bundle, EnclaveMode.SIMULATION, self.state_dir)
        service.start()
        return serve(service)

    @property
    def url(self) -> str:
        return self.running.url

    def restart(self) -> None:
        self.running.stop()
        self.running = self._start()


@pytest.fixture
def board(board_bundle: tuple[Path, str], tmp_path: Path) -> Iterator[Board]:
    running = Board(board_bundle[0], tmp_path / "state")
    yield running
    running.running.stop()


@pytest.fixture
def constraint(board_bundle: tuple[Path, str]) -> str:
    return board_bundle[1]


def cli(*args: str | Path) -> Result:
    return runner.invoke(app, [str(arg) for arg in args])


def reply_of(result: Result) -> str:
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("reply:")]
    return line.removeprefix("reply:").strip()


def saved(identity: Path) -> EnclaveClient:
    return EnclaveClient.restore(identity.read_bytes())


def send(board: Board, identity: Path, text: str, *options: str) -> str:
    """Sends ``text`` as the client saved in ``identity``; returns the reply."""
    return reply_of(cli("client", board.url, "--send", text, "--identity", identity, *options))


def test_identity_is_created_on_first_use_and_continued_by_later_processes(
    board: Board, constraint: str, tmp_path: Path
) -> None:
    alice = tmp_path / "ids" / "alice.id"
    alice.parent.mkdir()
    first = cli(
        "client", board.url, "--constraint", constraint, "--send", "hi", "--identity", alice
    )
    assert reply_of(first) == "1: hi"
    assert f"{alice} (new)" in first.output
    assert stat.S_IMODE(alice.stat().st_mode) == 0o600  # it holds the private key
    created = saved(alice)
    assert created.public_key.encoded.hex() in first.output

    # A separate process, without --constraint: the saved one is used, the client continues.
    command = [sys.executable, "-m", "sanctorum", "client", board.url, "--send", "again"]
    second = subprocess.run(
        [*command, "--identity", str(alice)], capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 0, second.stderr
    assert "reply:            2: again" in second.stdout
    assert "(restored)" in second.stdout
    # Repeating the saved constraint is fine; another topic continues the same client.
    assert send(board, alice, "x", "--constraint", constraint) == "3: x"
    assert send(board, alice, "y", "--topic", "other") == "4: y"
    assert send(board, alice, "z") == "5: z"  # no replay or sequence error on either topic
    assert send(board, alice, "w", "--topic", "other") == "6: w"
    # Without --identity the command works as before: a new client each time.
    fresh = cli("client", board.url, "--constraint", constraint, "--send", "anon")
    assert reply_of(fresh) == "1: anon"

    restored = saved(alice)
    assert restored.public_key == created.public_key
    assert restored.correlation_id == created.correlation_id
    topics = json.loads(alice.read_bytes())["topics"]
    assert (topics["default"][0], topics["other"][0]) == (4, 2)  # request counters
    assert stat.S_IMODE(alice.stat().st_mode) == 0o600
    # Nothing left behind but the identity and its lock file (no temporary files).
    assert sorted(path.name for path in alice.parent.iterdir()) == [".alice.id.lock", "alice.id"]


def test_poll_prints_mail_another_client_caused(
    board: Board, constraint: str, tmp_path: Path
) -> None:
    alice, bob = tmp_path / "alice.id", tmp_path / "bob.id"
    assert send(board, alice, "join", "--constraint", constraint) == "1: join"
    assert cli("poll", board.url, "--identity", alice).output == "(none)\n"
    assert send(board, bob, "say hi", "--constraint", constraint) == "1: say hi"
    bob_key = saved(bob).public_key.encoded.hex()[:8]

    polled = cli("poll", board.url, "--identity", alice)
    assert polled.exit_code == 0, polled.output
    assert polled.output == f"chat: {bob_key} says hi\n"
    assert cli("poll", board.url, "--identity", alice).output == "(none)\n"  # acknowledged

    for text in ("say one", "say two", "say three"):
        send(board, bob, text)
    assert cli("poll", board.url, "--identity", alice).output == f"chat: {bob_key} says one\n"
    every = cli("poll", board.url, "--identity", alice, "--all")
    assert every.output == f"chat: {bob_key} says two\nchat: {bob_key} says three\n"
    assert cli("poll", board.url, "--identity", alice, "--all").output == "(none)\n"
    # Alice's own conversation is untouched by what she polled.
    assert send(board, alice, "back") == "2: back"


def test_saved_clients_follow_an_enclave_restart(
    board: Board, constraint: str, tmp_path: Path
) -> None:
    alice, bob = tmp_path / "alice.id", tmp_path / "bob.id"
    for identity in (alice, bob):
        assert send(board, identity, "join", "--constraint", constraint) == "1: join"
    board.restart()  # a new enclave instance (new key), same sealed state
    assert send(board, bob, "say after") == "2: say after"
    # Mail from the new instance to a client that has not written to it is accepted.
    bob_key = saved(bob).public_key.encoded.hex()[:8]
    assert cli("poll", board.url, "--identity", alice).output == f"chat: {bob_key} says after\n"
    assert send(board, alice, "more") == "2: more"


def test_identity_mistakes_fail_clearly(board: Board, constraint: str, tmp_path: Path) -> None:
    missing = tmp_path / "nobody.id"
    result = cli("client", board.url, "--send", "hi", "--identity", missing)
    assert result.exit_code == 1
    assert "does not exist yet: give --constraint" in result.output
    assert not missing.exists()
    polled = cli("poll", board.url, "--identity", missing)
    assert polled.exit_code == 1
    assert "does not exist yet" in polled.output
    assert not missing.exists()

    alice = tmp_path / "alice.id"
    send(board, alice, "hi", "--constraint", constraint)
    before = alice.read_bytes()
    other = f"C:{SHA256Hash.of(b'another enclave')} SEC:INSECURE"
    clash = cli("client", board.url, "--constraint", other, "--send", "hi", "--identity", alice)
    assert clash.exit_code == 1
    assert "differs from the constraint saved in the identity" in clash.output
    assert alice.read_bytes() == before  # nothing sent, nothing changed

    broken = tmp_path / "broken.id"
    broken.write_text("{not json")
    bad = cli("poll", board.url, "--identity", broken)
    assert bad.exit_code == 1
    assert f"cannot use the identity {broken}" in bad.output
    assert broken.read_text() == "{not json"


def test_a_failed_check_writes_no_new_identity(board: Board, tmp_path: Path) -> None:
    identity = tmp_path / "alice.id"
    wrong = f"C:{SHA256Hash.of(b'another enclave')} SEC:INSECURE"
    result = cli("client", board.url, "--constraint", wrong, "--send", "hi", "--identity", identity)
    assert result.exit_code == 1
    assert "match none of" in result.output
    assert not identity.exists()


def test_one_identity_is_used_by_one_command_at_a_time(
    board: Board, constraint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = tmp_path / "alice.id"
    send(board, alice, "hi", "--constraint", constraint)
    monkeypatch.setattr(cli_module, "_IDENTITY_LOCK_WAIT", 0.2)
    with (tmp_path / ".alice.id.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another command is using the identity
        busy = cli("client", board.url, "--send", "again", "--identity", alice)
    assert busy.exit_code == 1
    assert "is in use by another sanctorum command" in busy.output
    assert send(board, alice, "again") == "2: again"  # once it is free
