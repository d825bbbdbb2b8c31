"""Prompt templates: load Jinja2 files from ``prompts/`` and render a user's history into prompt and target text.

A template is one file ``<name>.jinja`` with two blocks: ``prompt`` (the user's behavior, what the
model reads) and ``target`` (how one item's title is written after the prompt, what the model
writes). The variables are documented in ``prompts/README.md``. Templates run in Jinja's immutable
sandbox, so a template file cannot reach Python internals or mutate the data it is given.
"""

from __future__ import annotations

import os
import re
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from m6gen.data.catalog import Item

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "prompts"
ENV_VAR = "M6GEN_PROMPTS"  # folder(s) searched before the default one, os.pathsep-separated
SUFFIX = ".jinja"
PARTIAL = "_"  # _name.jinja: a file for {% import %}/{% include %}, not a template of its own
BLOCKS = ("prompt", "target")
# The plain chat layout used when the tokenizer has no chat template (or none was given).
FALLBACK_TURN = "<|{role}|>\n{content}\n"
FALLBACK_GENERATION_PROMPT = "<|assistant|>\n"

_DESCRIPTION = re.compile(r"\A\s*\{#-?(.*?)-?#\}", re.DOTALL)


class TemplateError(ValueError):
    """A template cannot be found, loaded or rendered; the message names the file and line."""


class _RecordingLoader(jinja2.FileSystemLoader):
    """A FileSystemLoader that remembers the files it loaded, to find their frames in a traceback."""

    def __init__(self, searchpath: Sequence[Path]):
        super().__init__([str(p) for p in searchpath])
        self.filenames: set[str] = set()

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        self.filenames.add(filename)
        return source, filename, uptodate


def item_vars(item: Item, cf: str = "", state: str = "") -> dict[str, Any]:
    """The plain dict a template sees for one item (``history`` entries and ``item``).

    ``cf``: what ``{{ it.cf }}`` renders, the item's collaborative-token placeholder (see
    :mod:`m6gen.hybrid`); "" for a model without collaborative tokens or an item without a vector.
    ``state``: what ``{{ it.state }}`` renders, the user-state token after this item (the
    collaborative model's state after the history up to here); "" likewise.
    """
    return {
        "title": item.title,
        "raw_title": item.raw_title or item.title,
        "year": item.year,  # None when unknown
        "genres": list(item.genres),
        "description": item.description or "",
        "item_id": item.item_id,
        "extra": dict(item.extra),
        "cf": cf,
        "state": state,
    }


def user_vars(user: str, profiles: dict[str, dict[str, str]] | None) -> dict[str, Any]:
    """The ``user`` variable templates see: the user's profile fields plus ``user_id``."""
    return {**(profiles or {}).get(user, {}), "user_id": user}


def fallback_chat(messages: list[dict[str, str]]) -> str:
    """The chat layout used without a tokenizer chat template.

    Each turn is ``<|role|>\\ncontent\\n``, then ``<|assistant|>\\n`` opens the answer.
    """
    turns = "".join(FALLBACK_TURN.format(role=m["role"], content=m["content"]) for m in messages)
    return turns + FALLBACK_GENERATION_PROMPT


def _chat_helper(tokenizer):
    """The ``chat(messages)`` function given to templates, bound to one tokenizer (or none)."""

    def chat(messages) -> str:
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return fallback_chat(msgs)

    return chat


class PromptTemplate:
    """One template file, loaded and checked; renders prompts and targets.

    Args:
        path: the ``.jinja`` file.
        name: the name it is known by (default: the file name without ``.jinja``).
        max_history: keep only the last ``max_history`` items of a history (None: keep all).
        search_path: further folders for ``{% import %}``/``{% include %}`` (the file's own folder comes first).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        max_history: int | None = 20,
        search_path: Sequence[Path] = (),
    ):
        if max_history is not None and max_history < 1:
            raise ValueError(f"max_history must be >= 1 or None, got {max_history}")
        self.path = Path(path).expanduser().resolve()
        self.name = name or self.path.name.removesuffix(SUFFIX)
        self.max_history = max_history
        if not self.path.is_file():
            raise TemplateError(f"template file not found: {self.path}")
        folders = [self.path.parent, *(Path(p).resolve() for p in search_path if Path(p).resolve() != self.path.parent)]
        self._loader = _RecordingLoader(folders)
        self._env = ImmutableSandboxedEnvironment(
            loader=self._loader,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            # A block tag on its own line leaves no blank line behind; output is never stripped otherwise.
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )
        try:
            self._template = self._env.get_template(self.path.name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(self._where(exc.filename or str(self.path), exc.lineno, exc)) from exc
        except UnicodeDecodeError as exc:
            raise TemplateError(
                f"template {self.path}: byte offset {exc.start}: not UTF-8 text (save it as UTF-8)"
            ) from None
        missing = [b for b in BLOCKS if b not in self._template.blocks]
        if missing:
            raise TemplateError(
                f"{self.path}: missing block(s) {', '.join(missing)}; a template needs "
                "{% block prompt %}...{% endblock %} and {% block target %}...{% endblock %}"
            )
        match = _DESCRIPTION.match(self.path.read_text(encoding="utf-8-sig"))
        self.description = " ".join(match.group(1).split()) if match else ""

    def reads(self, variable: str) -> bool:
        """Whether the template's own source uses ``variable`` (e.g. ``candidates``; partials not searched)."""
        from jinja2 import meta

        source = self.path.read_text(encoding="utf-8-sig")
        return variable in meta.find_undeclared_variables(self._env.parse(source))

    def __repr__(self) -> str:
        return f"PromptTemplate(name={self.name!r}, path='{self.path}', max_history={self.max_history})"

    @staticmethod
    def _where(filename: str, lineno: int | None, exc: BaseException) -> str:
        message = " ".join(str(getattr(exc, "message", None) or exc).split())
        line = f", line {lineno}" if lineno else ""
        return f"template {filename}{line}: {type(exc).__name__}: {message}"

    def _render_block(self, block: str, variables: dict[str, Any]) -> str:
        context = self._template.new_context(variables)
        try:
            try:
                return "".join(self._template.blocks[block](context))
            except Exception:
                # Rewrites the traceback so template frames carry template line numbers, and re-raises.
                self._env.handle_exception()
        except jinja2.TemplateSyntaxError as exc:  # e.g. a broken {% include %}d file
            raise TemplateError(self._where(exc.filename or str(self.path), exc.lineno, exc)) from exc
        except Exception as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in self._loader.filenames]
            filename, lineno = (frames[-1].filename, frames[-1].lineno) if frames else (str(self.path), None)
            raise TemplateError(self._where(filename, lineno, exc) + f" (in block {block!r})") from exc

    def render_prompt(
        self,
        history: Sequence[Item],
        *,
        user: dict[str, Any] | None = None,
        k: int = 10,
        tokenizer=None,
        candidates: Sequence[Item] | None = None,
        cf: Callable[[int], str] | None = None,
        state: Callable[[int], str] | None = None,
    ) -> str:
        """Render the ``prompt`` block for a time-ordered history (oldest first, most recent last).

        Args:
            history: the user's items, oldest first; only the last ``max_history`` are shown.
            user: profile fields (``user_id`` included when known); ``user.user_id`` is "" when absent.
            k: how many recommendations are asked for (templates may mention it).
            tokenizer: a Hugging Face tokenizer whose chat template ``chat(...)`` uses and whose
                end-of-text token ``eos`` is; None: plain fallback chat layout, ``eos`` empty.
            candidates: the items a retriever proposes for this user (``m6gen train --candidates``),
                for templates that list them (``candidates.jinja``); empty when there is no retriever.
            cf: catalog index -> what ``{{ it.cf }}`` renders for a history item (the model's
                collaborative placeholder, see :mod:`m6gen.hybrid`); None: "" for every item.
            state: catalog index -> what ``{{ it.state }}`` renders after a history item (the
                model's user-state placeholder); None: "" for every item.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        shown = history[-self.max_history :] if self.max_history is not None else history
        variables = {
            "history": [
                item_vars(it, cf(it.index) if cf is not None else "", state(it.index) if state is not None else "")
                for it in shown
            ],
            "n_history": len(shown),
            "n_total": len(history),
            "candidates": [item_vars(it) for it in candidates or ()],
            "user": {"user_id": "", **(user or {})},
            "k": k,
            "chat": _chat_helper(tokenizer),
            # The end-of-text token as text ("" without a tokenizer): a history written as targets
            # each closed by it reads exactly like the decoder's outputs (see prompts/sequence.jinja).
            "eos": (getattr(tokenizer, "eos_token", None) or "") if tokenizer is not None else "",
        }
        text = self._render_block("prompt", variables)
        if not text.strip():
            raise TemplateError(
                f"template {self.path}: block 'prompt' rendered empty text "
                f"(user {variables['user']['user_id']!r}); the model needs something to read"
            )
        return text

    def render_target(self, item: Item) -> str:
        """Render the ``target`` block for one item: the text the model learns to write after the prompt.

        Only ``item`` is defined here, so the catalog's target texts cannot depend on a history.
        """
        text = self._render_block("target", {"item": item_vars(item)})
        if not text.strip():
            raise TemplateError(f"template {self.path}: block 'target' rendered empty text for item {item.item_id!r}")
        return text

    def render_targets(self, items: Sequence[Item]) -> list[str]:
        """Every item's target text; a :class:`TemplateError` when two items' texts are the same,
        since generated text must name exactly one item (e.g. a target of ``raw_title`` on a
        catalog with repeated titles: ``title`` is the unique display title)."""
        texts = [self.render_target(it) for it in items]
        first: dict[str, int] = {}
        for i, text in enumerate(texts):
            j = first.setdefault(text.strip(), i)
            if j != i:
                raise TemplateError(
                    f"template {self.path}: block 'target' renders the same text {text.strip()!r} for "
                    f"items {items[j].item_id!r} and {items[i].item_id!r}; a target must tell items "
                    f"apart (item.title is unique)"
                )
        return texts

    def render_example(self, history: Sequence[Item], next_item: Item, **kw) -> tuple[str, str]:
        """The (prompt, target) pair for one training or evaluation example; ``kw`` go to ``render_prompt``."""
        return self.render_prompt(history, **kw), self.render_target(next_item)


def _env_folders() -> list[Path]:
    value = os.environ.get(ENV_VAR, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


class TemplateLibrary:
    """The templates available by name: ``folder`` (or ``$M6GEN_PROMPTS``) first, then the shipped ``prompts/``.

    A file ``<name>.jinja`` in any of these folders is available as ``name``; on a name clash the
    earlier folder wins, so a user's folder can override a shipped template.

    Args:
        folder: a folder of ``.jinja`` files searched before the shipped ones (default: ``$M6GEN_PROMPTS``).
        max_history: passed to every template loaded from this library.
    """

    def __init__(self, folder: str | Path | None = None, *, max_history: int | None = 20):
        extra = [Path(folder).expanduser()] if folder is not None else _env_folders()
        for f in extra:
            if not f.is_dir():
                source = "--templates" if folder is not None else f"${ENV_VAR}"
                raise TemplateError(f"template folder not found: {f} (from {source})")
        folders = [f.resolve() for f in extra]
        if DEFAULT_FOLDER not in folders:
            folders.append(DEFAULT_FOLDER)
        self.folders = folders
        self.max_history = max_history

    def __repr__(self) -> str:
        return f"TemplateLibrary(folders={[str(f) for f in self.folders]})"

    def _paths(self) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        for f in self.folders:
            if f.is_dir():
                for p in sorted(f.glob(f"*{SUFFIX}")):
                    if not p.name.startswith(PARTIAL):
                        paths.setdefault(p.name.removesuffix(SUFFIX), p)
        return paths

    def names(self) -> list[str]:
        """The available template names, sorted."""
        return sorted(self._paths())

    def get(self, name: str, *, max_history: int | None = None) -> PromptTemplate:
        """The template called ``name`` (``max_history`` default: the library's)."""
        paths = self._paths()
        name = name.removesuffix(SUFFIX)
        if name not in paths:
            available = ", ".join(sorted(paths)) or "none"
            where = ", ".join(str(f) for f in self.folders)
            raise TemplateError(f"unknown template {name!r}; available: {available} (searched {where})")
        return PromptTemplate(
            paths[name],
            name=name,
            max_history=self.max_history if max_history is None else max_history,
            search_path=self.folders,
        )

    def load_template(self, name_or_path: str | Path, *, max_history: int | None = None) -> PromptTemplate:
        """A template by name, or from a path to a ``.jinja`` file (which may live outside the library folders)."""
        path = Path(name_or_path).expanduser()
        if path.is_file():
            return PromptTemplate(
                path,
                max_history=self.max_history if max_history is None else max_history,
                search_path=self.folders,
            )
        if len(path.parts) > 1:
            raise TemplateError(f"template file not found: {path}")
        return self.get(str(name_or_path), max_history=max_history)

    def describe(self) -> list[tuple[str, str]]:
        """``(name, description)`` for every available template, for listings."""
        return [(name, self.get(name).description) for name in self.names()]
