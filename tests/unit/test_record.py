"""composecache.record behaves like the dataclasses it replaces, for everything composecache uses."""

from __future__ import annotations

import dataclasses

import pytest

from composecache.record import FrozenRecordError, field, record, replace


@record
class Mutable:
    name: str
    size: int = 0
    tags: list[str] = field(default_factory=list)
    secret: str = field(default="", repr=False)


@record(frozen=True)
class Frozen:
    name: str
    size: int = 1


@record(eq=False)
class ByIdentity:
    name: str


@dataclasses.dataclass
class Reference:
    name: str
    size: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)
    secret: str = dataclasses.field(default="", repr=False)


def test_construction_defaults_and_factories_match_dataclasses() -> None:
    for args, kwargs in (((), {"name": "a"}), (("a", 3), {}), (("a",), {"tags": ["x"], "secret": "s"})):
        ours, theirs = Mutable(*args, **kwargs), Reference(*args, **kwargs)  # type: ignore[arg-type]
        assert (ours.name, ours.size, ours.tags, ours.secret) == (theirs.name, theirs.size, theirs.tags, theirs.secret)
        assert repr(ours).replace("Mutable", "Reference") == repr(theirs).replace("test_record.", "")


def test_default_factories_are_called_per_instance() -> None:
    first, second = Mutable("a"), Mutable("b")
    first.tags.append("x")
    assert second.tags == []


def test_equality_and_hash() -> None:
    assert Mutable("a", 1) == Mutable("a", 1) and Mutable("a", 1) != Mutable("a", 2)
    assert Mutable("a") != Frozen("a")
    with pytest.raises(TypeError):
        hash(Mutable("a"))  # like a dataclass with eq and not frozen
    assert hash(Frozen("a", 2)) == hash(Frozen("a", 2)) and {Frozen("a"), Frozen("a")} == {Frozen("a")}
    one = ByIdentity("a")
    same = one
    assert one != ByIdentity("a") and one == same and len({one, ByIdentity("a")}) == 2  # eq=False: by identity


def test_frozen_records_cannot_change() -> None:
    item = Frozen("a")
    with pytest.raises(FrozenRecordError):
        item.name = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del item.size  # type: ignore[misc]


def test_replace_copies_with_changes() -> None:
    item = Frozen("a", 1)
    assert replace(item, size=5) == Frozen("a", 5) and item.size == 1
    with pytest.raises(TypeError, match="no field"):
        replace(item, colour="red")


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [((), {}, "missing argument 'name'"), (("a", 1, [], "s", "extra"), {}, "takes 4 arguments"),
     (("a",), {"name": "b"}, "repeated argument"), ((), {"name": "a", "colour": "red"}, "unexpected")],
)  # fmt: skip
def test_bad_arguments_are_type_errors(args: tuple[object, ...], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Mutable(*args, **kwargs)  # type: ignore[arg-type]


def test_a_field_without_default_after_one_with_default_is_refused() -> None:
    with pytest.raises(TypeError, match="follows one with a default"):

        @record
        class Bad:
            first: int = 0
            second: int  # type: ignore[misc]
