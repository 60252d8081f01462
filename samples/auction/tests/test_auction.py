"""The auction sample: the enclave's rules, and a whole auction over the real web host, with
bidders as separate processes and the host SIGKILLed mid-auction.

The sanctorum pytest plugin runs the rules in every mode the run selects (mock and simulation by
default, ``--enclave-mode``) and the web host with the bundle of each mode that has one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from auction_client import command
from auction_enclave import COMMAND_TOPIC, RESULT_TOPIC

from sanctorum import EnclaveClient, EnclaveHost, InProcessTransport
from sanctorum.build import BuildResult
from sanctorum.enclave.sealing import SIMULATION_SECRET_ENV

SAMPLE = Path(__file__).resolve().parents[1]
Clients = Callable[[], EnclaveClient]

# -- the enclave's rules -----------------------------------------------------------------------


@pytest.fixture
def auction(enclave_host: EnclaveHost) -> EnclaveHost:
    """The auction enclave, started in this run's mode."""
    return enclave_host


def _key(client: EnclaveClient) -> str:
    return client.public_key.encoded.hex()


def _notices(client: EnclaveClient) -> list[tuple[str, dict[str, object]]]:
    mails = []
    while (mail := client.poll_mail()) is not None:
        mails.append((mail.topic, json.loads(mail.body)))
    return mails


def test_only_the_auctioneer_closes_and_only_the_winner_is_revealed(
    auction: EnclaveHost, enclave_client_factory: Clients
) -> None:
    alice, bob, carol, dave, eve = (enclave_client_factory() for _ in range(5))
    assert command(bob, {"bid": 100}) == {"refused": "the auction is not open yet"}
    assert command(eve, {"close": True}) == {"refused": "only the auctioneer may close the auction"}
    assert auction.call_enclave(b"status") == b"not open"

    assert command(alice, {"open": True}) == {"opened": True, "auctioneer": _key(alice)}
    assert command(alice, {"open": True}) == {"opened": True, "auctioneer": _key(alice)}
    assert command(eve, {"open": True}) == {"refused": "the auction was opened by another client"}
    assert command(bob, {"bid": 100}) == {"accepted": 100, "bids": 1, "auctioneer": _key(alice)}
    assert command(carol, {"bid": 150})["accepted"] == 150
    assert command(bob, {"bid": 200}) == {"accepted": 200, "bids": 2, "auctioneer": _key(alice)}
    assert command(carol, {"bid": 120}) == {"refused": "a bid can only be raised: your bid is 150"}
    assert command(dave, {"bid": 200})["accepted"] == 200  # a tie: bob bid 200 first
    assert command(alice, {"bid": 999}) == {"refused": "the auctioneer may not bid"}
    for bad in (0, -5, "300", 2.5, True, 2**63):
        assert "refused" in command(eve, {"bid": bad}), bad
    assert "error" in command(eve, {"sell": True})
    assert "error" in command(eve, {"bid": 1, "close": True})
    garbage = eve.send_mail(b"not json", topic=COMMAND_TOPIC)
    assert garbage is not None
    assert "error" in json.loads(garbage.body)
    for intruder in (eve, bob):
        refused = command(intruder, {"close": True})
        assert refused == {"refused": "only the auctioneer may close the auction"}
    assert auction.call_enclave(b"status") == b"open"

    result = {"winner": _key(bob), "price": 200}
    assert command(alice, {"close": True}) == result
    assert auction.call_enclave(b"status") == b"closed"
    for bidder in (bob, carol, dave):  # exactly the winner and the price: no other bid
        assert _notices(bidder) == [(RESULT_TOPIC, result)]
    assert _notices(eve) == []  # never bid, never told
    assert _notices(alice) == []  # told in the answer to close
    assert command(carol, {"bid": 500}) == {"refused": "the auction is closed"}
    assert command(alice, {"close": True}) == result  # again: the same, and nobody is mailed
    assert all(_notices(client) == [] for client in (alice, bob, carol, dave, eve))


def test_an_auction_without_bids_has_no_winner(enclave_client: EnclaveClient) -> None:
    alice = enclave_client
    command(alice, {"open": True})
    assert command(alice, {"close": True}) == {"winner": None, "price": None}


def test_bidders_are_told_after_a_restart_they_did_not_write_after(
    auction: EnclaveHost, enclave_client_factory: Clients
) -> None:
    alice, bob, carol = (enclave_client_factory() for _ in range(3))
    command(alice, {"open": True})
    command(bob, {"bid": 10})
    command(carol, {"bid": 20})
    auction.restart()  # a new instance, from the sealed state
    alice.start(InProcessTransport(auction))
    assert command(alice, {"close": True}) == {"winner": _key(carol), "price": 20}
    for bidder in (bob, carol):  # their clients have not seen the new instance yet
        assert _notices(bidder) == [(RESULT_TOPIC, {"winner": _key(carol), "price": 20})]


def test_a_notice_from_an_instance_that_is_gone_still_reaches_the_bidder(
    auction: EnclaveHost, enclave_client_factory: Clients
) -> None:
    alice, bob = enclave_client_factory(), enclave_client_factory()
    command(alice, {"open": True})
    command(bob, {"bid": 10})
    auction.restart()  # instance B
    alice.start(InProcessTransport(auction))
    command(alice, {"close": True})  # B seals bob's notice
    auction.restart()  # instance C, before bob looked
    assert _notices(bob) == [(RESULT_TOPIC, {"winner": _key(bob), "price": 10})]


# -- a whole auction over the real web host, with a SIGKILL ------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class WebHost:
    """``sanctorum host`` as a subprocess in its own process group, so that a SIGKILL takes
    the enclave process with it."""

    def __init__(self, bundle: Path, mode: str, state_dir: Path, env: dict[str, str]) -> None:
        self.bundle, self.mode, self.state_dir, self.env = bundle, mode, state_dir, env
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "sanctorum", "host", str(self.bundle)]
        command += ["--state-dir", str(self.state_dir), "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--mode", self.mode],
            stdout=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the web host exited during start-up")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("the web host did not come up")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        self.process = None


class Run:
    """``python ARGV…`` running as a process of its own (with the host's environment)."""

    def __init__(self, host: WebHost, *argv: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=host.env,
        )

    def finish(self, status: int = 0) -> str:
        out, err = self.process.communicate(timeout=60)
        assert self.process.returncode == status, (self.process.returncode, out, err)
        return out


def script(host: WebHost, name: str, identity: Path, *args: str) -> Run:
    """``python NAME URL IDENTITY ARGS…``: a run of ``bidder.py`` or ``auctioneer.py``."""
    return Run(host, str(SAMPLE / name), host.url, str(identity), *args)


def run(host: WebHost, name: str, identity: Path, *args: str, status: int = 0) -> str:
    return script(host, name, identity, *args).finish(status)


def finish_all(runs: list[Run]) -> list[str]:
    return [run.finish() for run in runs]


@pytest.fixture
def web_host(
    enclave_bundle: BuildResult, enclave_mode: str, tmp_path: Path
) -> Iterator[tuple[WebHost, str]]:
    """``sanctorum host`` serving the auction's bundle (simulation mode by default), and the
    constraint its clients check: the one the build printed."""
    env = {**os.environ, SIMULATION_SECRET_ENV: str(tmp_path / "platform-secret")}
    host = WebHost(enclave_bundle.path, enclave_mode, tmp_path / "state", env)
    host.start()
    try:
        yield host, enclave_bundle.constraints["code"]
    finally:
        host.kill()


def test_an_auction_over_the_web_host_survives_a_sigkill(
    web_host: tuple[WebHost, str], tmp_path: Path
) -> None:
    host, constraint = web_host
    ids = tmp_path / "identities"
    ids.mkdir()
    auctioneer = ids / "auctioneer"
    bidder = {name: ids / name for name in ("ann", "ben", "cat", "dan", "eli", "fay")}
    gus = ids / "gus"  # a shell user, with the sanctorum command line
    first_use = ("--constraint", constraint)

    opened = run(host, "auctioneer.py", auctioneer, *first_use, "open")
    auctioneer_key = opened.split()[-1]
    # Before the kill: four bidders at once; then ann raises her bid.
    before = [
        script(host, "bidder.py", bidder[name], *first_use, "bid", amount)
        for name, amount in (("ann", "100"), ("ben", "150"), ("cat", "120"))
    ]
    gus_bids = Run(
        host, "-m", "sanctorum", "client", host.url, "--identity", str(gus), *first_use,
        "--topic", COMMAND_TOPIC, "--send", '{"bid": 130}',
    )  # fmt: skip
    assert [out.splitlines()[0] for out in finish_all(before)] == [
        "accepted 100 (1 bids)",
        "accepted 150 (1 bids)",
        "accepted 120 (1 bids)",
    ]
    reply = json.dumps({"accepted": 130, "auctioneer": auctioneer_key, "bids": 1})
    assert f"reply:            {reply}\n" in gus_bids.finish()
    assert f"auctioneer {auctioneer_key}" in run(host, "bidder.py", bidder["ann"], "bid", "160")

    host.kill()  # SIGKILL, mid-auction
    # Dan bids while the host is down: his client retries until it is back.
    dan = script(host, "bidder.py", bidder["dan"], *first_use, "bid", "140")
    host.start()  # the same state dir: a new enclave instance
    assert dan.finish().startswith("accepted 140 (1 bids)")

    # After the restart: a new bidder and a re-bid at once, a refused lower bid, then a tie.
    after = [
        script(host, "bidder.py", bidder["eli"], *first_use, "bid", "170"),
        script(host, "bidder.py", bidder["ben"], "bid", "200"),
    ]
    assert [out.splitlines()[0] for out in finish_all(after)] == [
        "accepted 170 (1 bids)",
        "accepted 200 (2 bids)",  # ben's bid from before the kill was counted once
    ]
    lower = run(host, "bidder.py", bidder["cat"], "bid", "110", status=3)
    assert lower == "refused: a bid can only be raised: your bid is 120\n"
    tie = run(host, "bidder.py", bidder["fay"], *first_use, "bid", "200")
    assert tie.startswith("accepted 200 (1 bids)")
    impostor = run(host, "auctioneer.py", bidder["cat"], "close", status=3)
    assert impostor == "refused: only the auctioneer may close the auction\n"

    closed = run(host, "auctioneer.py", auctioneer, "close")
    ben_key = EnclaveClient.restore(bidder["ben"].read_bytes()).public_key.encoded.hex()
    assert closed == f"winner {ben_key} price 200\n"  # ben bid 200 before fay did
    late = run(host, "bidder.py", bidder["fay"], "bid", "300", status=3)
    assert late == "refused: the auction is closed\n"

    # Every bidder gets the result, also ann and gus, whose clients last talked to the
    # instance that was killed.
    results = {
        name: script(host, "bidder.py", path, "result", "--wait", "20")
        for name, path in bidder.items()
    }
    gus_polls = Run(host, "-m", "sanctorum", "poll", host.url, "--identity", str(gus))
    for name, result in results.items():
        mine = " (you won)" if name == "ben" else ""
        assert result.finish() == f"winner {ben_key} price 200{mine}\n", name
    notice = json.dumps({"price": 200, "winner": ben_key})
    assert gus_polls.finish() == f"{RESULT_TOPIC}: {notice}\n"
    # The notice was read once: asked again, nothing comes.
    again = run(host, "bidder.py", bidder["ann"], "result", "--wait", "0", status=4)
    assert again.startswith("no result")
    # Identity files stay private; no temporary files are left behind.
    names = sorted(path.name for path in ids.iterdir())
    assert names == sorted(["auctioneer", *bidder, "gus", ".gus.lock"])
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in ids.iterdir())
