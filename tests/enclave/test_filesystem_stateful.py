"""The persistent filesystem against a model, with crashes and restarts from any commit.

A Hypothesis state machine writes, truncates and removes files, commits, crashes (losing
what was not committed), and has the host restart the filesystem from any record it has
seen. The filesystem must always read back exactly what the model says for the commit it was
mounted from, or refuse — never show other bytes.
"""

from __future__ import annotations

import random
from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sanctorum.common.errors import SealedStateError
from sanctorum.enclave.filesystem import (
    SECTOR_SIZE,
    EnclaveFileSystem,
    FileSystemRecord,
    PersistentVolume,
    persistent_volume,
)

CAPACITY = 48 * SECTOR_SIZE  # small, so freed sectors are soon used again
NAMES = st.sampled_from(["/a", "/b", "/dir/c"])
Files = dict[str, bytes]


class FileSystemMachine(RuleBasedStateMachine):
    commits = Bundle("commits")

    def __init__(self) -> None:
        super().__init__()
        self._directory = TemporaryDirectory()
        self.disk = Path(self._directory.name) / "fs"
        self.volume: PersistentVolume | None = None
        self.fs: EnclaveFileSystem | None = None
        self.model: Files = {}  # what the files hold now
        self.last: tuple[FileSystemRecord, Files] | None = None  # the last commit

    def _mount(self, record: FileSystemRecord | None) -> None:
        if self.fs is not None:
            self.fs.close()
            self.fs = None
        self.volume = persistent_volume(self.disk, CAPACITY, record)
        self.fs = EnclaveFileSystem(self.volume, None)
        self.fs.mkdir("/dir", exist_ok=True)

    @initialize(target=commits)
    def start(self) -> tuple[FileSystemRecord, Files]:
        self._mount(None)
        return self._commit()

    @rule(
        name=NAMES,
        offset=st.integers(0, 3 * SECTOR_SIZE),
        size=st.integers(0, 2 * SECTOR_SIZE),
        seed=st.integers(0, 2**32),
    )
    def write(self, name: str, offset: int, size: int, seed: int) -> None:
        assert self.fs is not None
        data = random.Random(seed).randbytes(size)
        current = bytearray(self.model.get(name, b""))
        if offset > len(current) and size:  # writing nothing past the end leaves no hole
            current.extend(bytes(offset - len(current)))
        current[offset : offset + size] = data
        with self.fs.open(name, "r+b" if name in self.model else "wb") as file:
            file.seek(offset)
            file.write(data)
        self.model[name] = bytes(current)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def truncate_or_remove(self, data: st.DataObject) -> None:
        assert self.fs is not None
        name = data.draw(st.sampled_from(sorted(self.model)))
        if data.draw(st.booleans()):
            self.fs.remove(name)
            del self.model[name]
        else:
            size = data.draw(st.integers(0, len(self.model[name])))
            with self.fs.open(name, "r+b") as file:
                file.truncate(size)
            self.model[name] = self.model[name][:size]

    @rule(target=commits)
    def commit(self) -> tuple[FileSystemRecord, Files]:
        return self._commit()

    def _commit(self) -> tuple[FileSystemRecord, Files]:
        assert self.volume is not None
        self.last = (self.volume.commit(), dict(self.model))
        return self.last

    @rule()
    def crash(self) -> None:
        """Stop without committing; the host restarts from the last sealed state."""
        assert self.last is not None
        self._mount(self.last[0])
        self.model = dict(self.last[1])

    @rule(commit=commits)
    def restart_from_a_commit_the_host_has_seen(
        self, commit: tuple[FileSystemRecord, Files]
    ) -> None:
        record, files = commit
        try:
            self._mount(record)
            self._check(files)
        except SealedStateError:  # refused: fine, as long as it is never wrong bytes
            assert self.last is not None
            self._mount(self.last[0])
            self.model = dict(self.last[1])
            return
        self.model = dict(files)
        self.last = commit  # the host rolled it back, and it goes on from there

    def _check(self, files: Files) -> None:
        assert self.fs is not None
        names = {f"/{name}" for name in self.fs.listdir("/") if name != "dir"}
        names |= {f"/dir/{name}" for name in self.fs.listdir("/dir")}
        assert names == set(files)
        for name, content in files.items():
            assert self.fs.read_bytes(name) == content

    @invariant()
    def reads_match_the_model(self) -> None:
        if self.fs is not None:
            self._check(self.model)

    def teardown(self) -> None:
        if self.fs is not None:
            self.fs.close()
        self._directory.cleanup()


FileSystemMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None
)
test_file_system_machine = FileSystemMachine.TestCase
