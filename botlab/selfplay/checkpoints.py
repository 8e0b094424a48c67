"""Learner state on disk: a resume state after every committed step, and Hugging Face checkpoints every N steps.

A resume state holds the fp32 trainable weights, the optimizer and the RNGs; the store records which one belongs to
the last committed step (kv rundir.RESUME_KEY), so a crash between saving and committing is harmless. What the
committed step no longer needs goes in `prune`, the daemon's prune job.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from botlab.selfplay.learner import Learner


def save_resume_state(run_dir: Path, step: int, learner: Learner) -> Path:
    folder = run_dir / "state" / f"step-{step:06d}"
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    torch.save(learner.trainable_state(), partial / "weights.pt")
    torch.save(learner.state_dict(), partial / "learner.pt")
    for path in (partial / "weights.pt", partial / "learner.pt", partial):
        _fsync(path)  # on disk before the step's commit names it
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    _fsync(folder.parent)
    return folder


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_resume_state(folder: Path, learner: Learner) -> None:
    learner.load_trainable_state(torch.load(folder / "weights.pt", weights_only=True))
    learner.load_state_dict(torch.load(folder / "learner.pt", weights_only=False))


def prune(run_dir: Path, committed_step: int, keep_checkpoints: int) -> list[Path]:
    """What the committed step no longer needs: older resume states, checkpoints beyond the newest keep_checkpoints,
    and partial writes of earlier steps; the folders removed. Folders of later steps are left alone: this runs as
    a job beside the next step, which may be writing them."""
    removed = []
    for kind, keep in (("state", 1), ("checkpoints", keep_checkpoints)):
        folders = [(_step_of(p), p) for p in (run_dir / kind).glob("step-*")]
        done = sorted((step, p) for step, p in folders if step is not None and step <= committed_step)
        whole = [p for _, p in done if not p.name.endswith(".partial")]
        removed += [p for _, p in done if p.name.endswith(".partial")] + whole[:-keep]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


def _step_of(folder: Path) -> int | None:
    """step-000012 and step-000012.partial -> 12."""
    digits = folder.name.removeprefix("step-").removesuffix(".partial")
    return int(digits) if digits.isdigit() else None


def save_checkpoint(run_dir: Path, step: int, learner: Learner, tokenizer, resume_state: Path) -> Path:
    """A Hugging Face folder that transformers and vLLM load directly, with the resume state beside the weights.
    Older checkpoints go in `prune`, after the commit."""
    folder = run_dir / "checkpoints" / f"step-{step:06d}"
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    learner.save_pretrained(partial, tokenizer)
    # Hard links: the resume state's files are never written again, and a copy would double the disk per checkpoint.
    shutil.copytree(resume_state, partial / "botlab_state", copy_function=_link_or_copy)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return folder


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or one without hard links
        shutil.copy2(src, dst)
