"""The sub-commands by name, each a module with ``GROUPS``, ``HELP`` and ``main(argv)``."""

from __future__ import annotations

import importlib

COMMANDS = {
    "demo": "m6gen.commands.demo",
    "data": "m6gen.commands.data",
    "prompts": "m6gen.commands.prompts",
    "recommend": "m6gen.commands.recommend",
    "chat": "m6gen.commands.chat",
    "eval": "m6gen.commands.eval",
    "tune-prompts": "m6gen.commands.tune",
    "train": "m6gen.commands.train",
    "fit-readout": "m6gen.commands.fit_readout",
    "baselines": "m6gen.commands.baselines",
    "serve": "m6gen.commands.serve",
}


def command(name: str):
    return importlib.import_module(COMMANDS[name])


def all_groups() -> list[type]:
    """Every option group any command takes (each once)."""
    groups: dict[type, None] = {}
    for name in COMMANDS:
        groups.update(dict.fromkeys(command(name).GROUPS))
    return list(groups)
