"""``m6gen chat``: an interactive recommendation session from the command line.

    m6gen chat                                # default model, MovieLens-100K
    m6gen chat --model runs/lora1 --k 5       # a trained output directory (has m6gen_config.json)
    python scripts/interactive.py --data DIR  # the same session as a script

The session itself is :class:`m6gen.commands.chat_repl.ChatSession`; this module checks the options,
loads the data and the model, and starts it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from m6gen.commands.chat_repl import ChatSession
from m6gen.commands.chat_session import ChatArgs, ChatError, ChatSettings, read_session
from m6gen.config import (
    DataArgs,
    DecodeArgs,
    DeviceArgs,
    ModelArgs,
    PriorArgs,
    PromptArgs,
    RerankArgs,
    RuntimeArgs,
    option,
)
from m6gen.prompts import user_vars


@dataclass
class ChatStartArgs:
    """Where the session starts."""

    _argument_group_name = "chat session"

    user: str | None = option(None, "start from this user's test history")
    session: str | None = option(None, "start from a file written by `save`")


GROUPS = [
    DataArgs,
    PromptArgs,
    ModelArgs,
    DeviceArgs,
    DecodeArgs,
    PriorArgs,
    RerankArgs,
    RuntimeArgs,
    ChatArgs,
    ChatStartArgs,
]
HELP = "interactive session: type titles you liked, get recommendations"


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen chat", HELP, _run, argv)


def _run(args) -> int:
    from m6gen.commands.common import (
        UsageError,
        item_features,
        load_data,
        load_recommender,
        required_cold_items,
        unknown_user,
    )
    from m6gen.prompts import TemplateLibrary

    # Neither a title the terminal cannot show nor input bytes that are not UTF-8 may end the session.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")
    if sys.stdin.isatty():
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    try:  # option values are checked before the slow model load
        settings = ChatSettings(
            k=args.k,
            beams=args.beams,
            template=args.template or "titles",
            rank_by=args.rank_by,
            diversity=args.diversity,
            novelty=args.novelty,
            open=args.open,
            cold_only=args.cold_only,
            tokens=args.tokens,
            sample=args.sample,
        )
    except ChatError as err:
        raise UsageError(str(err)) from None
    t0 = time.time()
    ds, split = load_data(args)
    if args.user and args.user not in split.train:  # checked before the slow model load, as above
        raise UsageError(f"--user: {unknown_user(args.user, split, ds.interactions)}")
    if args.cold_only:
        required_cold_items(split, len(ds.catalog))  # checked before the slow model load
    try:  # a file that is not a session fails here, not after the slow model load
        saved = read_session(Path(args.session).expanduser()) if args.session else None
    except ChatError as err:
        raise UsageError(f"--session {err}") from None
    start = split.test_history(args.user) if args.user else []
    rec = load_recommender(args, ds.catalog, preview=(start, user_vars(args.user, ds.profiles) if args.user else {}))
    rec.features = item_features(ds, split)
    library = TemplateLibrary(args.templates, max_history=args.max_history)
    settings = dataclasses.replace(settings, template=rec.template.name)
    session = ChatSession(rec, split=split, profiles=ds.profiles, library=library, settings=settings)
    session.say(
        f"m6gen chat: {len(ds.catalog)} items, {len(split.users)} users, model {args.model or 'default'} "
        f"(ready in {time.time() - t0:.1f} s). Type titles you liked, then `rec`; `help` lists commands."
    )
    try:
        if args.user:
            session.cmd_user(args.user)
        if saved is not None:
            session.load_state(saved, args.session)
    except ChatError as err:  # e.g. a session file naming a template that is not there: one line, exit 2
        raise UsageError(str(err)) from None
    return session.run()
