"""Writes on a full disk: the error names the file being written (not a temporary name, not nothing),
nothing half-written is left behind, and a folder (an adapter) is fsynced before it replaces the old one."""

from __future__ import annotations

import errno
import os

import pytest

import cotune.files as files
from cotune.files import write_dir_atomic, write_json_atomic


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "eval.json"
    path.write_text('{"old": true}')
    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        write_json_atomic(path, {"new": True})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_text() == '{"old": true}' and os.listdir(tmp_path) == ["eval.json"]


def test_the_cli_line_for_an_os_error_without_a_file_has_no_dangling_colon(monkeypatch, capsys):
    import sys

    import cotune.cli  # noqa: F401

    cli = sys.modules["cotune.cli.app"]  # the package's `app` attribute is the Typer app itself
    monkeypatch.setattr(cli, "app", lambda **kw: no_space())
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err == "error: No space left on device", err


def _writer(names):
    def write(folder):
        for name in names:
            (folder / name).write_text(name)

    return write


def test_write_dir_atomic_fsyncs_every_file_before_the_swap(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        real(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    target = tmp_path / "adapter"
    write_dir_atomic(target, _writer(["adapter_model.safetensors", "adapter_config.json"]))
    assert sorted(os.listdir(target)) == ["adapter_config.json", "adapter_model.safetensors"]
    if os.path.exists("/proc/self/fd"):
        names = {os.path.basename(p) for p in synced}
        assert {"adapter_model.safetensors", "adapter_config.json"} <= names


def test_write_dir_atomic_on_a_full_disk_leaves_no_scratch_folder_and_names_the_target(tmp_path):
    target = tmp_path / "adapter"
    write_dir_atomic(target, _writer(["old"]))

    def full(folder):
        (folder / "half").write_text("x")
        no_space()

    with pytest.raises(OSError) as info:
        write_dir_atomic(target, full)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert os.listdir(tmp_path) == ["adapter"] and os.listdir(target) == ["old"]


def test_scratch_folders_of_killed_processes_are_removed(tmp_path):
    dead = 2**22 + 12345  # above any pid this machine hands out
    for pid in (dead, os.getpid()):
        (tmp_path / f".adapter.saving-{pid}").mkdir()
    (tmp_path / ".other.saving-1").mkdir()  # another target's: not ours to judge
    write_dir_atomic(tmp_path / "adapter", _writer(["a"]))
    assert sorted(os.listdir(tmp_path)) == [".other.saving-1", "adapter"]
