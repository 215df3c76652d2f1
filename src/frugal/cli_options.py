"""Command-line options derived from the stages' pydantic models, so a setting is declared once.

A command names the model it configures and, optionally, how some fields are spelled on the
command line; every other field of the model (nested models flattened, `a.b` as `--a-b`) gets
an option derived from it: its type (`Literal`s as choices, booleans as `--x/--no-x`, lists as
comma-separated values, dicts as repeated `NAME=VALUE`), its help (the field's description and
its default, read from the model) and no default of its own, so the model's default applies
when the option is not given. `--set key=value` (YAML values, as `frugal run` takes them)
reaches any field, and pydantic validates the result with errors that name the option.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NoReturn

import typer
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from rich.console import Console

from frugal.settings import (
    default_of,
    is_union,
    model_in,
    with_section_defaults,
    without_none,
)


@dataclass(frozen=True)
class Setting:
    """One field of a model as a command-line option."""

    path: str  # dotted path in the model, e.g. "lora.r"
    option: str  # "--lora-r"
    parameter: str  # the Python name typer passes it under
    annotation: Any  # the field's type
    info: FieldInfo
    default: Any = None  # the model's default here (a section's own, where it has one)

    @property
    def kind(self) -> str:
        return kind_of(self.annotation)

    def help(self) -> str:
        return self.info.description or ""

    def shown_default(self) -> str | bool:
        """The model's default as --help shows it (False: none worth showing)."""
        default = self.default
        return False if default is None or isinstance(default, BaseModel) else _show(default)

    def cli_annotation(self, short: str | None = None) -> Any:
        names = [self.option, *([short] if short else [])]
        shown = {"help": self.help(), "show_default": self.shown_default()}
        if self.kind == "bool":
            flag = f"{self.option}/--no-{self.option[2:]}"
            return Annotated[bool | None, typer.Option(flag, *names[1:], **shown)]
        if self.kind == "choice":
            choices = typing.get_args(without_none(self.annotation))
            return Annotated[Literal[choices] | None,  # type: ignore[valid-type]
                             typer.Option(*names, **shown)]
        if self.kind == "mapping":
            return Annotated[list[str] | None, typer.Option(
                *names, help=self.help() + " NAME=VALUE, repeatable.",
                show_default=shown["show_default"])]
        if self.kind == "list":
            return Annotated[list[str] | None, typer.Option(
                *names, help=self.help() + " Comma-separated or repeated.",
                show_default=shown["show_default"])]
        scalar = {"int": int, "float": float}.get(self.kind, str)
        return Annotated[scalar | None, typer.Option(*names, **shown)]

    def _holds_strings(self) -> bool:
        return _dict_values(self.annotation) is str

    def parse(self, value: Any) -> Any:
        """The option's value as the model expects it."""
        if self.kind == "list":
            parts = [part.strip() for item in value for part in item.split(",") if part.strip()]
            if "str" in _arg_kinds(self.annotation) and value == [self.default]:
                return parts[0]  # list[str] | str: its special word (all-linear), not a list
            return parts
        if self.kind == "mapping":
            mapping = {}
            for item in value:
                name, sep, rest = item.partition("=")
                if not sep or not name or not rest:
                    raise SettingsError(f"{self.option} {item!r}: expected NAME=VALUE")
                # Values are YAML (numbers, lists) unless the field holds strings (paths).
                mapping[name] = rest if self._holds_strings() else yaml.safe_load(rest)
            return mapping
        if self.kind == "str" and _allows_mapping(self.annotation):
            return yaml.safe_load(value)  # a count, or a YAML mapping such as {dates: 60}
        return value


def _allows_mapping(annotation: Any) -> bool:
    """A union with a dict in it (`int | dict[str, int]`): given as YAML on the command line."""
    args = typing.get_args(without_none(annotation)) if is_union(annotation) else ()
    return any(typing.get_origin(arg) is dict for arg in args)


def _dict_values(annotation: Any) -> Any:
    args = typing.get_args(without_none(annotation))
    return args[1] if len(args) == 2 else Any


def kind_of(annotation: Any) -> str:
    """How a field's type is given on the command line."""
    inner = without_none(annotation)
    kinds = _arg_kinds(inner)
    if "list" in kinds:
        return "list"
    if typing.get_origin(inner) is Literal:
        return "choice"
    if typing.get_origin(inner) is dict or inner is dict:
        return "mapping"
    for kind in ("bool", "int", "float"):
        if kinds == {kind}:
            return kind
    return "str"


def _arg_kinds(annotation: Any) -> set[str]:
    args = typing.get_args(annotation) if is_union(annotation) else (annotation,)
    found = set()
    for arg in args:
        origin = typing.get_origin(arg)
        if origin in (list, tuple):
            found.add("list")
        elif arg in (bool, int, float, str):
            found.add(arg.__name__)
        elif arg is not type(None):
            found.add("other")
    return found


def _show(value: Any) -> str:
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def settings_of(model: type[BaseModel], prefix: str = "",
                defaults: BaseModel | None = None) -> Iterator[Setting]:
    """Every leaf field of `model`, nested models flattened; `defaults` is the section's own
    default instance where its field has one (the local teacher's 256-token budget)."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        default = getattr(defaults, name) if defaults is not None else default_of(info)
        nested = model_in(info.annotation)
        if nested is not None:
            yield from settings_of(nested, f"{path}.",
                                   default if isinstance(default, BaseModel) else None)
            continue
        yield Setting(path=path, option="--" + path.replace(".", "-").replace("_", "-"),
                      parameter="setting_" + path.replace(".", "__"),
                      annotation=info.annotation, info=info, default=default)


@dataclass(frozen=True)
class Options:
    """The options a command derives from `model`: `rename` respells some (path -> option),
    `short` adds a one-letter name, `skip` leaves fields to the command's own parameters
    (they stay reachable with `--set`)."""

    model: type[BaseModel]
    rename: dict[str, str] | None = None
    short: dict[str, str] | None = None
    skip: frozenset[str] = frozenset()

    def settings(self) -> list[Setting]:
        rename = self.rename or {}
        found = []
        for setting in settings_of(self.model):
            if setting.path in self.skip or any(setting.path.startswith(f"{s}.")
                                                for s in self.skip):
                continue
            if setting.path in rename:
                setting = dataclasses.replace(setting, option=rename[setting.path])
            found.append(setting)
        return found


REGISTRY: dict[str, Options] = {}  # command name -> its options, for the tests and --help


def with_settings(command: str, options: Options) -> Callable[[Callable[..., Any]], Any]:
    """Give the decorated command one option per setting of `options.model`, plus `--set`.

    The command receives `settings`: a nested dict of what the user gave (options win over
    `--set`), to validate with `options.model` (see `build`).
    """
    settings = options.settings()
    REGISTRY[command] = options
    spellings = [s.option for s in settings]
    clashes = sorted({o for o in spellings if spellings.count(o) > 1})
    if clashes:  # two fields behind one option: one of them could never be set by it
        raise ValueError(f"frugal {command}: {', '.join(clashes)} would set two settings")

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(function, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "settings"]
        taken = {p.name for p in own}
        added = [
            inspect.Parameter(s.parameter, inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=s.cli_annotation((options.short or {}).get(s.path)))
            for s in settings if s.parameter not in taken
        ]
        added.append(inspect.Parameter(
            "set_", inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[list[str] | None, typer.Option(
                "--set", help="Any setting as KEY=VALUE (YAML value), e.g. "
                "--set lora.r=32; repeatable.")]))

        @functools.wraps(function)
        def wrapper(**kwargs: Any) -> Any:
            from frugal.recipes import RecipeError, apply_overrides

            given: dict[str, Any] = {}
            try:
                apply_overrides(given, kwargs.pop("set_", None) or [])
                for setting in settings:
                    value = kwargs.pop(setting.parameter, None)
                    if value is not None:
                        _put(given, setting.path, setting.parse(value))
            except (RecipeError, SettingsError) as error:
                fail(str(error))
            return function(**kwargs, settings=given)

        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*own, *added])
        wrapper.__annotations__ = {}
        return wrapper

    return decorate


def _put(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def build(model: type[BaseModel], settings: dict[str, Any], command: str) -> Any:
    """`model` from the given settings; a validation error names the options at fault."""
    try:
        return model.model_validate(with_section_defaults(model, settings))
    except ValidationError as error:
        raise SettingsError(describe(error, REGISTRY.get(command))) from None


class SettingsError(ValueError):
    """Settings pydantic refused, described with the options a user types."""


def fail(message: str) -> NoReturn:
    """End the command with one red line on stderr and exit status 1."""
    Console(stderr=True).print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(1)


def describe(error: ValidationError, options: Options | None) -> str:
    spelled = {s.path: s.option for s in options.settings()} if options else {}
    parts = []
    for problem in error.errors():
        path = ".".join(str(p) for p in problem["loc"] if not isinstance(p, int))
        where = spelled.get(path) or (f"--set {path}" if path else "settings")
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)
