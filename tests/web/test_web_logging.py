"""The web host talks (issue 11): the URL it really serves on, one access line per request
(never a mail's contents), the enclave's lifecycle, JSON logs, and ``--mock module:Class``.

Every test runs the real ``sanctorum host`` command in a process of its own and reads its logs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sanctorum import EnclaveCallError, EnclaveInstanceInfo
from sanctorum.common.errors import EnclaveLoadError
from sanctorum.web.service import choose_enclave
from tests.web.conftest import RunningHost, web_client

_URL_LINE = re.compile(r"serving (\S+) \((\w+)\) on (http://127\.0\.0\.1:(\d+))$")
# uvicorn shuts down gracefully on SIGTERM, then dies of the signal as the sender expects.
_STOPPED = (0, -signal.SIGTERM)
_HUMAN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (INFO|WARNING|ERROR) +\S")


class LoggedHost:
    """``sanctorum host ... --port 0`` in its own process group; its log lines as they come."""

    def __init__(self, arguments: list[str], cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sanctorum", "host", "--port", "0", *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            start_new_session=True,  # a kill of the group takes the enclave process too
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, wanted: Callable[[str], bool], timeout: float = 30) -> str:
        """The first line for which ``wanted`` holds, waiting for it to be logged."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if wanted(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError("never logged; the logs:\n" + "\n".join(self.lines))
                self._changed.wait(min(left, 0.2))

    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(timeout=10)
        return self.process.returncode


class JsonHost(LoggedHost):
    """A LoggedHost with ``--log-format json``: its lines as parsed events."""

    def __init__(self, arguments: list[str], cwd: Path | None = None) -> None:
        super().__init__([*arguments, "--log-format", "json"], cwd)

    def event(self, name: str, timeout: float = 30, **fields: object) -> dict[str, object]:
        def wanted(line: str) -> bool:
            document = json.loads(line)
            return document["event"] == name and all(
                document.get(key) == value for key, value in fields.items()
            )

        found: dict[str, object] = json.loads(self.wait_for(wanted, timeout))
        return found

    def events(self, name: str) -> list[dict[str, object]]:
        documents = [json.loads(line) for line in self.text().splitlines()]
        return [document for document in documents if document["event"] == name]


@pytest.fixture
def hosts() -> Iterator[list[LoggedHost]]:
    started: list[LoggedHost] = []
    yield started
    for host in started:
        host.stop()


def _url(host: LoggedHost) -> str:
    match = _URL_LINE.search(host.wait_for(lambda line: _URL_LINE.search(line) is not None))
    assert match is not None
    return match.group(3)


def test_the_url_line_has_the_real_port_and_each_request_one_line_without_its_mail(
    bundle_for: Callable[[str], Path], tmp_path: Path, hosts: list[LoggedHost]
) -> None:
    host = LoggedHost([str(bundle_for("Recorder")), "--state-dir", str(tmp_path / "state")])
    hosts.append(host)
    line = host.wait_for(lambda line: _URL_LINE.search(line) is not None)
    match = _URL_LINE.search(line)
    assert match is not None
    assert match.group(1, 2) == ("recorder", "simulation")
    url, port = match.group(3), int(match.group(4))
    assert port != 0
    assert line.endswith(f"serving recorder (simulation) on http://127.0.0.1:{port}")
    assert httpx.get(f"{url}/health").json()["status"] == "ok"  # that port serves

    marker = f"secret-marker-{os.urandom(8).hex()}"
    client, transport = web_client(url)
    reply = client.send_mail(marker.encode())
    assert reply is not None
    assert reply.body == marker.upper().encode()
    raw = httpx.post(  # a body that is not a mail: refused, and still never logged
        f"{url}/deliver-mail", content=marker.encode(), headers={"Correlation-ID": "raw-sender"}
    )
    assert raw.status_code == 400
    transport.close()
    # Hostile request lines and headers are logged escaped, one line each.
    assert httpx.get(f"{url}/x%0Aforged%1b[31m").status_code == 404
    odd = httpx.post(f"{url}/poll-mail", headers={b"Correlation-ID": b"caf\xe9"})
    assert odd.status_code == 400

    correlation = re.escape(client.correlation_id)
    host.wait_for(
        lambda line: (
            re.search(rf"POST /deliver-mail 200 [\d.]+ ms correlation-id {correlation}$", line)
            is not None
        )
    )
    host.wait_for(lambda line: re.search(r"GET /health 200 [\d.]+ ms$", line) is not None)
    host.wait_for(lambda line: "POST /deliver-mail 400" in line and "raw-sender" in line)
    host.wait_for(lambda line: "GET /x\\nforged\\x1b[31m 404" in line)
    host.wait_for(lambda line: "POST /poll-mail 400" in line and "caf\\xe9" in line)
    logs = host.text()
    assert marker not in logs
    assert marker.upper() not in logs
    assert logs.count("GET /health") == 1  # one line per request: uvicorn's access log is off
    assert "HTTP/1.1" not in logs
    for line in logs.splitlines():
        assert _HUMAN_LINE.match(line), line  # no forged or stray lines
    assert host.stop() in _STOPPED
    assert "enclave recorder stopped" in host.text()


def test_json_logs_and_the_lifecycle_of_a_killed_enclave_process(
    bundle_for: Callable[[str], Path], tmp_path: Path, hosts: list[LoggedHost]
) -> None:
    host = JsonHost([str(bundle_for("Recorder")), "--state-dir", str(tmp_path / "state")])
    hosts.append(host)
    serving = host.event("serving")
    url = str(serving["url"])
    assert serving["urls"] == [url]
    assert (serving["enclave"], serving["mode"]) == ("recorder", "simulation")
    started = host.event("enclave_started")
    info = EnclaveInstanceInfo.deserialize(httpx.get(f"{url}/attestation").content)
    assert started["mode"] == "simulation"
    assert started["code_hash"] == str(info.code_hash)
    assert started["instance_key"] == info.encryption_key.encoded.hex()[:16]
    pid = started["pid"]
    assert isinstance(pid, int)

    client, transport = web_client(url)
    os.kill(pid, signal.SIGKILL)  # the enclave process, from outside
    reply = client.send_mail(b"after the kill")  # 503 while it restarts, then resent
    assert reply is not None
    crashed = host.event("enclave_crashed")
    assert (crashed["reason"], crashed["exit_status"], crashed["level"]) == (
        "killed",
        -signal.SIGKILL,
        "warning",
    )
    assert "SIGKILL" in str(crashed["detail"])
    restarted = host.event("enclave_restarted")
    assert restarted["reason"] == "killed"
    assert restarted["attempts"] == 1
    assert isinstance(restarted["pid"], int)
    assert restarted["pid"] != pid
    assert restarted["instance_key"] != started["instance_key"]
    assert restarted["code_hash"] == started["code_hash"]
    host.event("request", path="/deliver-mail", status=503)
    delivered = host.event(
        "request", path="/deliver-mail", status=200, correlation_id=client.correlation_id
    )
    assert delivered["method"] == "POST"
    assert isinstance(delivered["duration_ms"], float)
    transport.close()

    assert host.stop() in _STOPPED
    lines = host.text().splitlines()
    for line in lines:  # every line is one JSON object with the stable fields
        document = json.loads(line)
        assert set(document) >= {"time", "level", "event", "message"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document["time"])
    assert json.loads(lines[-1])["event"] == "enclave_stopped"
    assert len(host.events("enclave_crashed")) == len(host.events("enclave_restarted")) == 1


def test_a_failing_restart_is_logged_once_per_error_not_per_try(
    bundle_for: Callable[[str], Path], tmp_path: Path, hosts: list[LoggedHost]
) -> None:
    state = tmp_path / "state"
    host = JsonHost([str(bundle_for("Files")), "--state-dir", str(state)])
    hosts.append(host)
    url = str(host.event("serving")["url"])
    pid = host.event("enclave_started")["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    filesystem = state / "filesystem.bin"
    kept = filesystem.read_bytes()
    filesystem.write_bytes(b"")  # the restart must refuse it: FileSystemRollbackError
    headers = {"Correlation-ID": "c"}
    assert httpx.post(f"{url}/deliver-mail", content=b"x", headers=headers).status_code == 503
    emptied = host.event("enclave_restart_failed")
    assert emptied["level"] == "error"
    assert "FileSystemRollbackError" in str(emptied["error"])
    assert "emptied" in str(emptied["error"])
    time.sleep(2)  # about five more tries, each failing the same way
    assert httpx.get(f"{url}/health").json()["status"] == "restarting"
    filesystem.unlink()  # another error: logged once more
    host.wait_for(lambda line: "enclave_restart_failed" in line and "missing" in line)
    filesystem.write_bytes(kept)  # the right file again: the next try succeeds
    restarted = host.event("enclave_restarted", timeout=30)
    failures = host.events("enclave_restart_failed")
    assert [("emptied" in str(f["error"]), "missing" in str(f["error"])) for f in failures] == [
        (True, False),
        (False, True),
    ]
    assert isinstance(restarted["attempts"], int)
    assert restarted["attempts"] > len(failures) + 2  # it kept trying, quietly
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


_MODULE = '''
from sanctorum import Enclave, EnclaveMail


class Echo(Enclave):
    """Answers each mail with its body reversed."""

    def receive_mail(self, mail: EnclaveMail, routing_hint: str | None) -> None:
        reply = self.post_office(mail).encrypt_mail(mail.body[::-1])
        self.post_mail(reply, routing_hint)


def helper() -> None:
    pass
'''


def test_mock_serves_an_enclave_class_from_a_module_in_the_current_directory(
    tmp_path: Path, hosts: list[LoggedHost]
) -> None:
    (tmp_path / "echo_enclave.py").write_text(_MODULE)
    host = LoggedHost(["--mock", "echo_enclave:Echo", "--state-dir", "state"], cwd=tmp_path)
    hosts.append(host)
    url = _url(host)
    assert "serving Echo (mock) on" in host.text()
    client, transport = web_client(url)
    reply = client.send_mail(b"stressed")
    assert reply is not None
    assert reply.body == b"desserts"
    transport.close()
    assert host.stop() in _STOPPED
    assert "enclave Echo started (mock)" in host.text()


def test_a_bad_mock_spec_stops_the_host_command_with_the_error(tmp_path: Path) -> None:
    (tmp_path / "echo_enclave.py").write_text(_MODULE)
    command = [sys.executable, "-m", "sanctorum", "host", "--mock", "echo_enclave:Ehco"]
    run = subprocess.run(
        [*command, "--state-dir", "state", "--port", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert "error: the module 'echo_enclave'" in run.stderr
    assert "has no attribute 'Ehco' (did you mean 'Echo'?)" in run.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was made


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:Echo", "no module 'no_such_module_xyz'"),
        ("MODULE:Missing", "the module 'MODULE' .* has no attribute 'Missing'"),
        ("MODULE:helper", "'helper' in the module 'MODULE' is a function, not an Enclave"),
        ("MODULE:EnclaveMail", "is the class EnclaveMail, not an Enclave subclass"),
        ("MODULE", "is not module:Class"),
        ("MODULE:", "is not module:Class"),
        ("broken_MODULE:Echo", "importing the module 'broken_MODULE'.* raised ZeroDivisionError"),
        ("needy_MODULE:Echo", "importing the module 'needy_MODULE'.* No module named 'absent_dep"),
    ],
)
def test_bad_mock_specs_name_the_module_and_attribute(
    spec: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"spec_module_{os.urandom(4).hex()}"  # fresh: sys.modules keeps what was imported
    (tmp_path / f"{module}.py").write_text(_MODULE)
    (tmp_path / f"broken_{module}.py").write_text("1 / 0\n")
    (tmp_path / f"needy_{module}.py").write_text("import absent_dependency_xyz\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    spec = spec.replace("MODULE", module)
    with pytest.raises(EnclaveLoadError, match=message.replace("MODULE", module)):
        choose_enclave(None, spec, None)


def test_mock_and_bundle_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(EnclaveLoadError, match="not both"):
        choose_enclave(tmp_path / "x.enclave", "m:C", None)
    with pytest.raises(EnclaveLoadError, match="not neither"):
        choose_enclave(None, None, None)
    with pytest.raises(EnclaveLoadError, match="--mode simulation runs a bundle"):
        choose_enclave(None, "m:C", "simulation")
    with pytest.raises(EnclaveLoadError, match="use --mock module:Class"):
        choose_enclave(tmp_path / "x.enclave", None, "mock")
    assert choose_enclave(tmp_path / "x.enclave", None, None)[1].value == "simulation"


def test_an_application_serving_the_app_itself_gets_records_with_event_and_fields(
    web_host: Callable[[str], RunningHost], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sanctorum.web")
    host = web_host("Recorder")  # create_app in this process, no sanctorum host command
    response = httpx.post(f"{host.url}/poll-mail", headers={"Correlation-ID": "app-1"})
    assert response.status_code == 200

    def events(name: str) -> list[logging.LogRecord]:
        return [record for record in caplog.records if getattr(record, "event", None) == name]

    deadline = time.monotonic() + 10
    while not events("request") and time.monotonic() < deadline:
        time.sleep(0.01)  # logged once the answer was sent, by the server's thread
    (request,) = events("request")
    assert request.name == "sanctorum.web"
    fields = request.fields  # type: ignore[attr-defined]
    assert {key: fields[key] for key in ("method", "path", "status", "correlation_id")} == {
        "method": "POST",
        "path": "/poll-mail",
        "status": 200,
        "correlation_id": "app-1",
    }
    assert request.getMessage().startswith("POST /poll-mail 200 ")
    (started,) = events("enclave_started")
    assert started.fields["pid"] == host.service.host.process_id  # type: ignore[attr-defined]


def test_an_enclave_exception_is_logged_for_the_operator(
    bundle_for: Callable[[str], Path], tmp_path: Path, hosts: list[LoggedHost]
) -> None:
    """A 400 alone does not tell a bad request from an enclave bug: the exception is logged,
    with the enclave's traceback outside release mode."""
    host = JsonHost([str(bundle_for("Recorder")), "--state-dir", str(tmp_path / "state")])
    hosts.append(host)
    client, transport = web_client(str(host.event("serving")["url"]))
    with pytest.raises(EnclaveCallError):
        client.send_mail(b"fail")
    logged = host.event("enclave_exception")
    assert logged["level"] == "warning"
    assert "RuntimeError: handler failed" in str(logged["error"])
    assert "Traceback inside the enclave" in str(logged["error"])
    host.event("request", path="/deliver-mail", status=400)
    transport.close()
