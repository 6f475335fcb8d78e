"""Saving an adapter: on a full disk the error names the adapter folder and no scratch folder is left;
scratch folders of killed runs do not pile up; the files are fsynced before the swap."""

from __future__ import annotations

import errno
import os

import pytest

import cotune.files as files
from cotune.training.adapter_folder import save_adapter


class Model:
    """Stands in for a peft model: ``save_pretrained`` writes the adapter files, or fails as safetensors
    does on a full disk (its own exception type, not an OSError)."""

    def __init__(self, full: bool = False):
        self.full = full

    def save_pretrained(self, folder):
        open(os.path.join(folder, "adapter_config.json"), "w").close()
        if self.full:
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        with open(os.path.join(folder, "adapter_model.safetensors"), "wb") as f:
            f.write(b"weights")


def test_a_full_disk_names_the_adapter_and_leaves_the_old_one_whole(tmp_path):
    target = tmp_path / "adapter"
    save_adapter(Model(), {"n": 1}, target)
    with pytest.raises(OSError) as info:
        save_adapter(Model(full=True), {"n": 2}, target)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert sorted(os.listdir(tmp_path)) == ["adapter"]  # no .adapter.saving-<pid> left behind
    assert (target / "adapter_model.safetensors").read_bytes() == b"weights"


def test_scratch_folders_of_killed_saves_are_cleared_and_files_are_fsynced(tmp_path, monkeypatch):
    killed = tmp_path / f".adapter.saving-{2**22 + 4321}"  # a pid no process has
    killed.mkdir()
    (killed / "adapter_model.safetensors").write_bytes(b"half")
    synced = []
    real = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    save_adapter(Model(), {"n": 1}, tmp_path / "adapter")
    assert sorted(os.listdir(tmp_path)) == ["adapter"]
    assert len(synced) >= 3  # the two adapter files and the metadata, then the folders
