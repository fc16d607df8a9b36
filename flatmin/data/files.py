"""Where a dataset's files live under ``paths.data_dir``, and the one sentence said when they are missing.

Design convention: a dataset that is not on disk and cannot be downloaded says where flatmin
looked, which files to put there, and which option points elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flatmin.errors import DataNotFoundError


@dataclass(frozen=True)
class DatasetFiles:
    """The files a dataset needs, relative to ``paths.data_dir``.

    ``folder`` is the dataset's own folder, ``required`` the paths (or glob patterns) inside it that
    must match something, ``what`` names them for the user and ``source`` says where they come from.
    """

    title: str
    folder: str
    required: tuple[str, ...]
    what: str
    source: str

    def root(self, data_dir: Path | str) -> Path:
        return Path(data_dir) / self.folder

    def present(self, data_dir: Path | str) -> bool:
        root = self.root(data_dir)
        return all(any(root.glob(pattern)) for pattern in self.required)

    def not_found(self, data_dir: Path | str, download_failed: bool = False) -> DataNotFoundError:
        """The one-sentence error for these files missing from ``data_dir``."""
        failed = " and could not be downloaded" if download_failed else ""
        return DataNotFoundError(
            f"{self.title} not found in {self.root(data_dir)}{failed}: put {self.what} there ({self.source}), "
            f"or set paths.data_dir (or FLATMIN_DATA_DIR) to the folder that holds {self.folder}.")


def ensure_present(files: DatasetFiles, data_dir: Path | str, download: Callable[[], object] | None = None) -> None:
    """Return when ``files`` are on disk; otherwise run ``download`` (if given) and check again.

    Any failure (no network, a broken URL) ends in :meth:`DatasetFiles.not_found`.
    """
    if files.present(data_dir):
        return
    if download is None:
        raise files.not_found(data_dir)
    try:
        download()
    except Exception as error:
        raise files.not_found(data_dir, download_failed=True) from error
    if not files.present(data_dir):
        raise files.not_found(data_dir, download_failed=True)
