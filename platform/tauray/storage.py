"""Sweep folders on a local disk or an object store (``s3://``, ``gs://``: any URI pyarrow opens).

Ray Tune and Ray Train keep their state and checkpoints under any storage path ``pyarrow.fs``
can open; a sweep keeps its own files (its request, its clock, ``best_config.yaml``, the plots)
in the same folder, so that ``tauray tune --resume`` needs nothing but that folder and MLflow.
:func:`location` gives a :class:`~pathlib.Path` for a local folder and a :class:`RemotePath`
for a URI: the part of ``Path``'s interface a sweep uses (``/``, ``name``, ``parent``, reading,
writing, listing), over ``pyarrow.fs``. Credentials and endpoints come from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL`` for MinIO, ...), as for Ray itself.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

_SCHEMES = {"gcs": "gs"}  # pyarrow's type_name -> the URI scheme users write

OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")
"""The URI schemes ``pyarrow.fs`` (and so Ray Tune and Ray Train) can keep a sweep in."""


def is_uri(text: str) -> bool:
    """Whether ``text`` names storage by URI (``scheme://...``) rather than a local path."""
    return "://" in text and not text.startswith("file://")


class RemotePath:
    """A file or folder in an object store, named by URI, with the ``Path`` methods a sweep uses.

    Object stores have no folders: :meth:`mkdir` does nothing, and a "folder" exists when
    something is stored below it.

    Args:
        uri: ``scheme://bucket/key...`` (a trailing ``/`` is dropped).
    """

    def __init__(self, uri: str) -> None:
        if not is_uri(uri):
            raise ValueError(f"not a storage URI (scheme://...): {uri!r}")
        self.uri = uri.rstrip("/")

    # -- names
    def __truediv__(self, part: str) -> RemotePath:
        return RemotePath(f"{self.uri}/{str(part).strip('/')}")

    @property
    def name(self) -> str:
        return self.uri.rsplit("/", 1)[-1]

    @property
    def parent(self) -> RemotePath:
        scheme, rest = self.uri.split("://", 1)
        return RemotePath(f"{scheme}://{rest.rsplit('/', 1)[0]}") if "/" in rest else self

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"RemotePath({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def resolve(self) -> RemotePath:
        return self

    def expanduser(self) -> RemotePath:
        return self

    def is_absolute(self) -> bool:
        return True

    # -- the store
    def _fs(self) -> tuple[pafs.FileSystem, str]:
        return pafs.FileSystem.from_uri(self.uri)

    def _type(self) -> pafs.FileType:
        filesystem, path = self._fs()
        return filesystem.get_file_info(path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: an object store's folders exist through what is stored in them."""

    def read_bytes(self) -> bytes:
        filesystem, path = self._fs()
        with filesystem.open_input_stream(path) as stream:
            return bytes(stream.read())

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        """Store ``text`` (an object is replaced as a whole: a reader never sees half of it)."""
        data = text.encode(encoding)
        filesystem, path = self._fs()
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)
        return len(text)

    def iterdir(self) -> Iterator[RemotePath]:
        filesystem, path = self._fs()
        selector = pafs.FileSelector(path, allow_not_found=True, recursive=False)
        for info in filesystem.get_file_info(selector):
            yield self / info.base_name

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        """This folder's entries whose name matches ``pattern`` (one level, no ``**``)."""
        return (child for child in self.iterdir() if fnmatch.fnmatchcase(child.name, pattern))

    def upload(self, local: Path) -> None:
        """Copy the local file or folder ``local`` here (a folder: everything below it)."""
        filesystem, path = self._fs()
        if local.is_dir():
            pafs.copy_files(str(local), path, destination_filesystem=filesystem)
        else:
            with filesystem.open_output_stream(path) as stream:
                stream.write(local.read_bytes())


StoragePath = Path | RemotePath
"""A sweep folder or file: local, or in an object store."""


def location(text: str | Path, base: Path | None = None) -> StoragePath:
    """``text`` as a :data:`StoragePath`: a URI as :class:`RemotePath`, else an absolute path
    (relative ones below ``base``, the current directory by default)."""
    if isinstance(text, Path):
        path = text
    elif is_uri(text):
        return RemotePath(text)
    else:
        path = Path(text.removeprefix("file://"))
    path = path.expanduser()
    return path if path.is_absolute() else ((base or Path.cwd()) / path).resolve()


def check_storage_path(
    text: str | Path, option: str = "--storage-path", base: Path | None = None
) -> None:
    """Refuse a storage path nothing can be written to, before anything is created or started.

    A URI must use a scheme :data:`OBJECT_STORE_SCHEMES` names and name a bucket (the store
    itself is not contacted: credentials may live only on the cluster). A local path must not run
    through a file, and the folder it names (or the nearest one that exists) must accept a new
    folder: a probe folder is made there and removed at once, which catches read-only, virtual
    (``/proc``) and permission-denied places that ``os.access`` reports writable to root.

    Args:
        text: the path or URI as given.
        option: how the error names it.
        base: the folder relative paths are below (default: the working directory).

    Raises:
        ValueError: one line naming ``option``, the value and what is wrong.
    """
    shown = repr(str(text))
    if isinstance(text, str) and not text.strip():
        raise ValueError(f"{option} is empty; give a folder or an object store URI (s3://...)")
    if isinstance(text, str) and is_uri(text):
        scheme, _, rest = text.partition("://")
        if scheme.lower() not in OBJECT_STORE_SCHEMES:
            allowed = ", ".join(f"{name}://" for name in OBJECT_STORE_SCHEMES)
            raise ValueError(
                f"{option} {shown}: {scheme}:// is not a storage Ray can keep a sweep in; give a "
                f"local folder or one of {allowed}"
            )
        if not rest.strip("/"):
            raise ValueError(f"{option} {shown} names no bucket: write {scheme}://BUCKET/PREFIX")
        return
    existing = Path(str(location(text, base)))  # not a URI: a local path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {shown}: {existing} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tauray-probe-", dir=existing))
    except OSError as error:
        raise ValueError(
            f"{option} {shown}: cannot create folders in {existing} ({error.strerror or error})"
        ) from None


def write_text_atomic(target: StoragePath, text: str) -> None:
    """Replace ``target``'s content so that a reader (or a kill mid-write) never sees half of
    it: a local file through a temporary file and a rename, an object in one upload."""
    if isinstance(target, RemotePath):
        target.write_text(text)
        return
    partial = target.with_name(f".{target.name}.tmp")
    partial.write_text(text)
    partial.replace(target)


@contextlib.contextmanager
def local_folder(target: StoragePath) -> Iterator[Path]:
    """A local folder to write into, whose content ends up in ``target``: ``target`` itself
    when it is local, else a temporary folder uploaded to it when the block ends normally."""
    if isinstance(target, Path):
        target.mkdir(parents=True, exist_ok=True)
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="tauray-upload-") as scratch:
        yield Path(scratch)
        target.upload(Path(scratch))


def checkpoint_uri(checkpoint: Any) -> str | None:
    """Where a Ray ``Checkpoint`` lives, as a path (local) or a URI (an object store): what
    ``ray.train.Checkpoint(path=...)`` opens again, in any process."""
    path = getattr(checkpoint, "path", None)
    if not isinstance(path, str) or not path:
        return None
    filesystem = getattr(checkpoint, "filesystem", None)
    if filesystem is None or isinstance(filesystem, pafs.LocalFileSystem) or is_uri(path):
        return path
    kind = getattr(filesystem, "type_name", "")
    return f"{_SCHEMES.get(kind, kind)}://{path}" if kind else path
