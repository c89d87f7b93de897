"""Output folders written whole: a case's files go into a temporary folder that is moved into
place only when complete, so an interrupted run never leaves a half-written case."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp-"


def temp_folder(target: str | os.PathLike[str]) -> Path:
    """A new empty hidden folder beside ``target`` to write its contents into."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}{TEMP_MARK}{secrets.token_hex(4)}")
    temp.mkdir()
    return temp


def replace_folder(temp: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Move the finished ``temp`` folder to ``target``, replacing an older one."""
    temp, target = Path(temp), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}{TEMP_MARK}old-{secrets.token_hex(4)}")
        target.rename(old)
        temp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        temp.rename(target)
    return target


def remove_folder(path: str | os.PathLike[str]) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_temp_folders(parent: str | os.PathLike[str]) -> int:
    """Delete what interrupted runs left in ``parent`` (their temporary folders); returns how
    many."""
    parent = Path(parent)
    stale = [p for p in parent.glob(f".*{TEMP_MARK}*") if p.is_dir()] if parent.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def read_json_or_none(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None
