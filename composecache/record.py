"""Record classes for composecache's own types, without the `dataclasses` module.

Every build pays for composecache's start-up: importing `dataclasses` (and the
`inspect` it pulls in) costs about 20 ms here and each class about 1 ms more,
because it compiles generated methods with exec().  That was a quarter of
composecache's whole overhead per invocation (bench/overhead.py).  `record`
does what those classes use (fields with defaults and default factories,
frozen, `eq=False`, repr) with shared methods that read a tuple of field
names, and it is declared with PEP 681's `dataclass_transform`, so type
checkers treat a record exactly like a dataclass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")
_MISSING: Any = object()
FIELDS = "__record_fields__"


class FrozenRecordError(AttributeError):
    """Assignment to a field of a frozen record."""


class _Field:
    __slots__ = ("default", "factory", "repr")

    def __init__(self, default: Any, factory: Callable[[], Any] | None, repr: bool) -> None:
        self.default = default
        self.factory = factory
        self.repr = repr


def field(*, default: Any = _MISSING, default_factory: Callable[[], Any] | None = None, repr: bool = True) -> Any:
    """A field's options, as dataclasses.field: default, default_factory, repr."""
    return _Field(default, default_factory, repr)


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    names, defaults = type(self).__record_fields__, type(self).__record_defaults__
    if len(args) > len(names):
        raise TypeError(f"{type(self).__name__}() takes {len(names)} arguments, got {len(args)}")
    values = dict(zip(names, args, strict=False))
    for name, value in kwargs.items():
        if name not in names or name in values:
            raise TypeError(f"{type(self).__name__}() got an unexpected or repeated argument {name!r}")
        values[name] = value
    for name in names:
        if name not in values:
            spec = defaults.get(name, _MISSING)
            if spec is _MISSING:
                raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
            values[name] = spec.factory() if spec.factory is not None else spec.default
        object.__setattr__(self, name, values[name])


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in type(self).__record_fields__)


def _repr(self: Any) -> str:
    hidden = type(self).__record_hidden__
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in type(self).__record_fields__ if name not in hidden)
    return f"{type(self).__qualname__}({shown})"


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented  # type: ignore[no-any-return]
    same: bool = _values(self) == _values(other)
    return same


def _hash(self: Any) -> int:
    return hash(_values(self))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenRecordError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenRecordError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")


def _make(cls: type[T], frozen: bool, eq: bool) -> type[T]:
    names: list[str] = []
    defaults: dict[str, _Field] = {}
    hidden: set[str] = set()
    for klass in reversed(cls.__mro__[:-1]):
        base_fields = klass.__dict__.get(FIELDS)
        if base_fields is not None and klass is not cls:
            for name in base_fields:
                if name not in names:
                    names.append(name)
            defaults.update(klass.__dict__["__record_defaults__"])
            hidden.update(klass.__dict__["__record_hidden__"])
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063 (inspect: slow import)
        if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
            continue
        if name not in names:
            names.append(name)
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, _Field):
            defaults[name] = value
            if not value.repr:
                hidden.add(name)
            if value.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, value.default)
        elif value is not _MISSING:
            defaults[name] = _Field(value, None, True)
    seen_default = False
    for name in names:
        if name in defaults:
            seen_default = True
        elif seen_default:
            raise TypeError(f"{cls.__name__}: field {name!r} without a default follows one with a default")
    setattr(cls, FIELDS, tuple(names))
    cls.__record_defaults__ = defaults  # type: ignore[attr-defined]
    cls.__record_hidden__ = frozenset(hidden)  # type: ignore[attr-defined]
    cls.__init__ = _init  # type: ignore[method-assign]
    cls.__repr__ = _repr  # type: ignore[method-assign]
    if eq:
        cls.__eq__ = _eq  # type: ignore[method-assign]
        cls.__hash__ = _hash if frozen else None  # type: ignore[assignment, method-assign]
    if frozen:
        cls.__setattr__ = _frozen_setattr  # type: ignore[method-assign]
        cls.__delattr__ = _frozen_delattr  # type: ignore[method-assign]
    return cls


@overload
def record(cls: type[T], /) -> type[T]: ...
@overload
def record(*, frozen: bool = False, eq: bool = True) -> Callable[[type[T]], type[T]]: ...
@dataclass_transform(field_specifiers=(field,))
def record(cls: type[T] | None = None, /, *, frozen: bool = False, eq: bool = True) -> Any:
    """Like @dataclasses.dataclass (and @dataclass(frozen=True), @dataclass(eq=False))."""
    if cls is not None:
        return _make(cls, frozen=False, eq=True)
    return lambda klass: _make(klass, frozen=frozen, eq=eq)


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of a record with some fields changed (dataclasses.replace)."""
    names = type(obj).__record_fields__  # type: ignore[attr-defined]
    unknown = set(changes) - set(names)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field {sorted(unknown)[0]!r}")
    return type(obj)(**{name: changes.get(name, getattr(obj, name)) for name in names})
