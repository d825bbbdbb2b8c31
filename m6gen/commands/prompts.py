"""``m6gen prompts``: every template (or one) rendered for a real user, the held-out target after it.

m6gen prompts --user 196 --template instruct
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from m6gen.config import DataArgs, ModelArgs, PromptArgs, option


@dataclass
class PromptsArgs:
    """Whose prompts to show."""

    _argument_group_name = "prompts command"

    users: str | None = option(None, "comma-separated user ids (default: the first user)")
    chat_tokenizer: bool = option(
        False,
        "render with --model's tokenizer, as the model reads the prompt: its end-of-text token ({{ eos }}) and "
        "its chat template (about 10 s for the default GGUF model; a --model folder with its own tokenizer.json, "
        "such as a trained run, is always rendered with it)",
    )


GROUPS = [DataArgs, PromptArgs, ModelArgs, PromptsArgs]
HELP = "render every template (or only --template) for a user (--users a,b: for each)"


def run(args) -> int:
    from m6gen.commands.common import load_data, pick_users, resolve_prompt_args
    from m6gen.prompts import TemplateError, TemplateLibrary

    if args.model:  # not loaded unless its tokenizer is asked for, but a wrong path is still named
        from m6gen.model import resolve_model

        resolve_model(args.model, args.gguf_file)
    ds, split = load_data(args)
    users = pick_users(split, args.users, 1, ds.interactions)
    only = args.template  # asked for by name or path: render just that one
    resolve_prompt_args(args)
    lib = TemplateLibrary(args.templates, max_history=args.max_history)
    tokenizer = None
    own_tokenizer = bool(args.model) and Path(args.model, "tokenizer.json").is_file()  # quick to load
    if args.chat_tokenizer or own_tokenizer:  # {{ eos }} and chat-style templates need the model's tokens
        from m6gen.model import load_tokenizer

        tokenizer = load_tokenizer(args.model, args.gguf_file)
    retriever = None
    if args.candidates:  # what a candidate template lists: the retriever's items for this history
        from m6gen.baselines.sasrec import load_sasrec

        retriever = load_sasrec(args.candidates, len(ds.catalog))
    broken: dict[str, str] = {}  # every template shown: a broken one is named at the end, the others still shown
    templates = []
    for name in [only] if only else lib.names():
        try:
            templates.append(lib.load_template(name))
        except TemplateError as err:
            if only:
                raise
            broken[name] = str(err)
    if tokenizer is None:  # said once the templates load: an unknown one is then the only line
        print(
            "(without the model's tokenizer: {{ eos }} shows as nothing and chat templates in a generic form; "
            "--chat-tokenizer shows the prompt exactly as the model reads it)"
        )
    from m6gen.hybrid.placeholders import saved_placeholders

    cf = saved_placeholders(args.model)  # a hybrid run's {{ it.cf }} placeholders, as its model reads them
    state = saved_placeholders(args.model, state=True)  # and its {{ it.state }} ones
    for user in users:
        show_user(args, ds, split, user, templates, tokenizer, retriever, len(users) > 1, cf, state, broken)
    for message in broken.values():
        print(f"error: {message}", file=sys.stderr)
    return 2 if broken else 0


def show_user(args, ds, split, user, templates, tokenizer, retriever, many: bool, cf, state, broken: dict[str, str]):
    """Each template's prompt for ``user``; a template that fails to render is recorded in ``broken``
    (name -> message) and skipped, as one that failed to load is."""
    from m6gen.baselines.retrieval import retrieve
    from m6gen.prompts import TemplateError, user_vars

    history = [ds.catalog[i] for i in split.test_history(user)]
    candidates = []
    if retriever is not None:
        found = retrieve(retriever, [split.test_history(user)], args.n_candidates)
        candidates = [ds.catalog[int(i)] for i in found[0]]
    for tpl in templates:
        if tpl.name in broken:
            continue
        try:
            prompt = tpl.render_prompt(
                history,
                user=user_vars(user, ds.profiles),
                tokenizer=tokenizer,
                candidates=candidates,
                cf=cf,
                state=state,
            )
            target = tpl.render_target(ds.catalog[split.test[user]])
        except TemplateError as err:
            broken[tpl.name] = str(err)
            continue
        who = f" for user {user}" if many else ""
        print(f"===== template {tpl.name!r}{who}: {tpl.description}")
        print(prompt + "\u2502" + target + "\u2502  <- target (held out)")


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen prompts", HELP, run, argv)
