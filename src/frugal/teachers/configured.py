"""The teacher a distillation's settings name, built (its module imported only when chosen)."""

from __future__ import annotations

from frugal.settings.distill import DistillConfig
from frugal.teachers.base import Teacher


def make_teacher(config: DistillConfig) -> Teacher:
    if config.teacher == "openai":
        if config.openai is None:
            raise ValueError(
                "the openai teacher needs an endpoint and a model. Fix: pass --model (and "
                "--base-url for a local server), or set distill.openai in the recipe."
            )
        from frugal.teachers.openai_teacher import OpenAITeacher

        return OpenAITeacher(config.openai)
    if config.teacher == "hf" and config.local.style == "chat":
        from frugal.teachers.served_chat import ServedChatTeacher

        return ServedChatTeacher(config.local)
    if config.teacher in ("hf", "self"):
        from frugal.teachers.local import HFTeacher, SelfTeacher

        return (HFTeacher if config.teacher == "hf" else SelfTeacher)(config.local)
    from frugal.teachers.offline import DatasetTeacher, ProgramTeacher

    return ProgramTeacher() if config.teacher == "program" else DatasetTeacher()
