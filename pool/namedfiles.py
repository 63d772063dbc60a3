"""A folder of documents named by what they describe (``schedules/NAME.json``,
``groups/NAME.json``): each one is its owner's, written whole (by a command, or by hand)
and read the safe way, and checked by the parser of its kind on every read."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Generic, TypeVar

import orjson

from .errors import InvalidJobSpec
from .safeio import Folder, Owners

MAX_DOCUMENT_BYTES = 1024 * 1024
T = TypeVar("T")


class NamedFiles(Generic[T]):
    """``parse(document, name, where)`` checks one document (raises InvalidJobSpec or a
    subclass); in a shared spool the group reads them, as it reads statuses."""

    def __init__(self, folder: Folder, owners: Callable[[], Owners], mode: Callable[[], int],
                 parse: Callable[[object, str, str], T], encode: Callable[[T], object]) -> None:
        self.folder = folder
        self._owners = owners
        self._mode = mode
        self.parse = parse
        self.encode = encode

    @property
    def owners(self) -> Owners:
        return self._owners()

    @property
    def mode(self) -> int:
        return self._mode()

    def names(self) -> list[str]:
        return sorted(n[:-5] for n in self.folder.listdir() if n.endswith(".json") and not n.startswith("."))

    def stamp(self, name: str) -> tuple[int, int, int] | None:
        """What changes whenever the file is written (None: it is gone)."""
        try:
            st = os.stat(f"{name}.json", dir_fd=self.folder.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_ino, st.st_size

    def read(self, name: str) -> T:
        """Raises FileNotFoundError, UnsafeFile, InvalidJobSpec."""
        where = f"{os.path.basename(self.folder.path)}/{name}.json"
        data = self.folder.read(f"{name}.json", self.owners, MAX_DOCUMENT_BYTES)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidJobSpec(f"{where} is not JSON: {exc}") from None
        return self.parse(doc, name, where)

    def written_at(self, name: str) -> float:
        return os.stat(f"{name}.json", dir_fd=self.folder.fd, follow_symlinks=False).st_mtime

    def write(self, name: str, value: T) -> None:
        self.folder.write_atomic(f"{name}.json", orjson.dumps(self.encode(value), option=orjson.OPT_INDENT_2),
                                 self.mode)

    def remove(self, name: str) -> bool:
        """False when there was none."""
        return self.folder.unlink(f"{name}.json")

    def make(self, like: str) -> None:
        """Made by a client in a spool made before this folder was (its manager makes it at
        start): as private or shared as the folder ``like`` is."""
        path = self.folder.path
        if os.path.isdir(path):
            return
        st = os.stat(like)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            return
        os.chown(path, -1, st.st_gid)
        os.chmod(path, st.st_mode & 0o7777)
