"""The enclave filesystem as an ``fsspec`` filesystem, so pandas and friends can use it.

Use it inside the enclave: ``self.filesystem.fsspec()``, then for example
``pandas.read_csv(fs.open("/data/input.csv"))``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsspec import AbstractFileSystem

if TYPE_CHECKING:
    from sanctorum.enclave.filesystem import EnclaveFileSystem


# fsspec ships no type hints, so mypy sees its base class as Any.
class EnclaveFsspec(AbstractFileSystem):  # type: ignore[misc]
    protocol = "sanctorum"
    root_marker = "/"
    cachable = False  # one instance per enclave filesystem object

    def __init__(self, filesystem: EnclaveFileSystem, **options: Any) -> None:
        super().__init__(**options)
        self._fs = filesystem

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        text = str(path)
        if text.startswith("sanctorum://"):
            text = text[len("sanctorum://") :]
        return "/" + text.strip("/")

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        stat = self._fs.stat(path)
        kind = "directory" if stat.is_dir else "file"
        return {"name": path, "size": stat.size, "type": kind}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        if not self._fs.is_dir(path):
            entries = [self.info(path)]
        else:
            entries = [self.info(path.rstrip("/") + "/" + name) for name in self._fs.listdir(path)]
        return entries if detail else [entry["name"] for entry in entries]

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        return self._fs.open(self._strip_protocol(path), mode)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self._fs.mkdir(self._strip_protocol(path), parents=create_parents, exist_ok=False)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self._fs.mkdir(self._strip_protocol(path), parents=True, exist_ok=exist_ok)

    def rmdir(self, path: str) -> None:
        self._fs.rmdir(self._strip_protocol(path))

    def _rm(self, path: str) -> None:
        path = self._strip_protocol(path)
        if self._fs.is_dir(path):
            self._fs.rmdir(path)
        else:
            self._fs.remove(path)

    def rm_file(self, path: str) -> None:
        self._fs.remove(self._strip_protocol(path))

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        self._fs.rename(self._strip_protocol(path1), self._strip_protocol(path2))

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        self._fs.write_bytes(
            self._strip_protocol(path2), self._fs.read_bytes(self._strip_protocol(path1))
        )
