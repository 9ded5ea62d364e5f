"""The launcher's look at a profile's container: is it usable here, and which image is it.

:func:`check` runs before anything of a launch is created: the runtime's program is installed,
the image exists, and for Charliecloud ``USER`` is set and every mount target exists in a
directory image (ch-run cannot make one in a read-only image). :func:`digest` names the image
by content: the SHA-256 of an image file (``.sif``, ``.sqfs``), a digest of a directory
image's tree (every path, mode, link target and file content), or Podman's image id. Digests
are cached under ``$XDG_CACHE_HOME/blocktrain/image-digests`` by the image's stat signature,
so they are computed again only when the image changed.

The image builder (``make training-image``) takes the digest through :func:`digest` too, which
fills the cache before the first launch. Must not render command lines: that is
:mod:`.runtime`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

from blocktrain.core.atomic import write_text_atomic
from blocktrain.errors import BlocktrainError
from blocktrain.launch.containers.runtime import Container, Runtime, data_dirs, task_binds

_CHUNK = 1 << 20
_SHARED_TMP = PurePosixPath("/tmp")  # noqa: S108 - ch-run mounts the host's /tmp there


def check_launch(
    container: Container | None, project_root: Path, environ: Mapping[str, str]
) -> None:
    """Refuse a container that cannot run here, before anything of a launch is created."""
    if container is not None:
        data = data_dirs(environ, str(Path.home()))
        check(container, project_root, data, environ.get("USER"))


def check(container: Container, project_root: Path, data: Sequence[str], user: str | None) -> None:
    """Raise a one-line :class:`BlocktrainError` naming the fix when the container cannot run.

    ``data`` are the data cache's folders the tasks mount; the first, the persistent cache, is
    made when missing (no runtime mounts a missing folder). ``user`` is ``$USER``.
    """
    program = container.executable
    if shutil.which(program) is None:
        raise BlocktrainError(
            f"container runtime {container.runtime}: {program} is not installed here (not on "
            "PATH); install it (docs/containers.md) or set another container.runtime"
        )
    if container.runtime == "podman":
        podman_id(container.image)
        return
    image = Path(container.image)
    if not image.exists():
        raise BlocktrainError(
            f"container image {image} not found; build it with `make training-image` or fix "
            "container.image in the profile"
        )
    if data:
        Path(data[0]).mkdir(parents=True, exist_ok=True)
    if container.runtime == "charliecloud":
        _check_charliecloud(container, image, str(project_root), data, user)


def _check_charliecloud(
    container: Container, image: Path, project_root: str, data: Sequence[str], user: str | None
) -> None:
    if not user:
        raise BlocktrainError("ch-run needs USER in the environment: export USER=$(id -un)")
    if not image.is_dir():
        return  # a SquashFS image: its folders cannot be looked at without mounting it
    for bind in task_binds(container, project_root, data):
        target = PurePosixPath(bind.target)
        if target.is_relative_to(_SHARED_TMP) or (image / target.relative_to("/")).is_dir():
            continue
        raise BlocktrainError(
            f"image {image} has no folder {bind.target} to mount {bind.source} on (ch-run "
            f"cannot make one); rebuild it with `make training-image MOUNTS={bind.target}`"
        )


def tags(container: Container | None) -> dict[str, str]:
    """The MLflow tags naming the environment a run ran in."""
    if container is None:
        return {}
    return {
        "container.runtime": container.runtime,
        "container.image": container.image,
        "container.digest": digest(container.runtime, container.image),
    }


def digest(runtime: Runtime, image: str) -> str:
    """``sha256:<hex>`` naming the image's content."""
    if runtime == "podman":
        return podman_id(image)
    path = Path(image)
    if not path.exists():
        raise BlocktrainError(f"image {path} not found; build it with `make training-image`")
    signature = _signature(path)
    cache = _cache_file(path)
    cached: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(cache.read_text())
    if cached.get("signature") == signature:
        return str(cached["digest"])
    known = cached.get("files")
    files: dict[str, list[object]] = known if isinstance(known, dict) else {}  # pyright: ignore[reportUnknownVariableType]
    value = tree_digest(path, files) if path.is_dir() else file_digest(path)
    with contextlib.suppress(OSError):  # no writable cache: compute again next time
        cache.parent.mkdir(parents=True, exist_ok=True)
        record = {"image": str(path.resolve()), "signature": signature, "digest": value}
        write_text_atomic(cache, json.dumps({**record, "files": files}))
    return value


def podman_id(image: str) -> str:
    """Podman's id of an image in its storage."""
    try:
        done = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Id}}", image],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BlocktrainError(f"podman image inspect {image} failed: {exc}") from None
    if done.returncode != 0 or not done.stdout.strip():
        raise BlocktrainError(
            f"podman has no image {image}; load it with `podman load -i ARCHIVE` (an archive "
            "from `make training-image ARCHIVE=...`) or fix container.image in the profile"
        )
    return "sha256:" + done.stdout.strip().removeprefix("sha256:")


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(_CHUNK):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"


def tree_digest(root: Path, known: dict[str, list[object]] | None = None) -> str:
    """One SHA-256 over a line per entry, sorted by path: type, permissions, path, and the
    size and content digest of a file or the target of a link. Times and owners do not
    count, so the same tree copied elsewhere has the same digest.

    ``known`` maps a file to ``[inode, size, mtime_ns, sha256]`` from an earlier call: a file
    whose first three are unchanged is not read again (a rebuild changes few files). It is
    updated to this tree's files.
    """
    earlier = dict(known or {})
    if known is not None:
        known.clear()
    sha = hashlib.sha256()
    for relative, info in _entries(root):
        mode = f"{stat.S_IMODE(info.st_mode):o}"
        if stat.S_ISLNK(info.st_mode):
            line = f"l {relative} -> {(root / relative).readlink()}"
        elif stat.S_ISREG(info.st_mode):
            key: list[object] = [info.st_ino, info.st_size, info.st_mtime_ns]
            before = earlier.get(relative)
            content = before[3] if before and before[:3] == key else file_digest(root / relative)
            if known is not None:
                known[relative] = [*key, content]
            line = f"f {mode} {relative} {info.st_size} {content}"
        elif stat.S_ISDIR(info.st_mode):
            line = f"d {mode} {relative}"
        else:
            line = f"o {mode} {relative}"
        sha.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return f"sha256:{sha.hexdigest()}"


def _entries(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below ``root`` with its ``lstat``, sorted by path; links not followed."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        base = Path(folder)
        for name in sorted([*dirs, *files]):
            path = base / name
            yield str(path.relative_to(root)), path.lstat()


def _signature(path: Path) -> str:
    """Changes whenever any entry of the image is replaced, resized or modified."""
    if not path.is_dir():
        info = path.stat()
        return f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"
    sha = hashlib.sha256()
    for relative, info in _entries(path):
        sha.update(f"{relative}\0{info.st_ino}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return sha.hexdigest()


def _cache_file(path: Path) -> Path:
    home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return Path(home) / "blocktrain" / "image-digests" / f"{key}.json"
