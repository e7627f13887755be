from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters.jsonpointer import (
    MISSING,
    PointerError,
    array_index,
    locate,
    parse,
    parse_member,
    render,
    resolve,
)
from gateway.adapters.routemap import Pointer

DOCUMENT: dict[str, Any] = {
    "items": ["zero", "one", {"a/b": {"c~d": 7}}],
    "": {"": "empty keys"},
    "*": "a star",
    "01": "a member named 01",
    "none": None,
}


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", ()),
        ("/", ("",)),
        ("/items", ("items",)),
        ("/a~1b/c~0d", ("a/b", "c~d")),
        ("/~01", ("~1",)),  # ~0 first would give "/": the order of RFC 6901 section 4
        ("/~10", ("/0",)),
        ("//x/", ("", "x", "")),
        ("/items/*", ("items", "*")),
    ],
)
def test_parse_unescapes_tokens(text: str, tokens: tuple[str, ...]) -> None:
    assert parse(text) == tokens
    assert render(tokens) == text


@pytest.mark.parametrize("text", ["items", "~1", "#/items", "/a~2", "/a~", "/~~1", "/x/~a"])
def test_parse_refuses_what_is_not_a_pointer(text: str) -> None:
    with pytest.raises(PointerError):
        parse(text)


@pytest.mark.parametrize(
    ("text", "message"), [("", "must start with '/'"), ("/", "empty token"), ("/a//b", "empty token")]
)
def test_route_map_pointers_name_a_member(text: str, message: str) -> None:
    with pytest.raises(PointerError, match=message):
        parse_member(text)
    with pytest.raises(ValueError, match=message):
        Pointer.parse(text)


def test_route_map_pointers_refuse_a_bad_escape() -> None:
    with pytest.raises(ValueError, match="'~' must be followed by '0' or '1'"):
        Pointer.parse("/card~2number")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("", DOCUMENT),
        ("/items/0", "zero"),
        ("/items/1", "one"),
        ("/items/2/a~1b/c~0d", 7),
        ("/", {"": "empty keys"}),
        ("//", "empty keys"),
        ("/*", "a star"),  # outside ``locate``, "*" is a member name like any other
        ("/01", "a member named 01"),  # on an object, any string is a member name
        ("/none", None),
    ],
)
def test_resolve_finds(text: str, value: Any) -> None:
    assert resolve(DOCUMENT, parse(text)) == value


@pytest.mark.parametrize(
    "text",
    [
        "/items/01",  # a leading zero: not an index
        "/items/00",
        "/items/-",  # the item after the last: nothing to read
        "/items/3",
        "/items/1e0",
        "/items/+1",
        "/items/-1",
        "/items/ 1",
        "/items/1 ",
        "/items/\u0661",  # ARABIC-INDIC DIGIT ONE: str.isdigit() and int() accept it
        "/items/\u00b2",  # SUPERSCRIPT TWO: str.isdigit() accepts it, int() raises
        "/items/" + "9" * 5000,  # int() of more than 4300 digits raises
        "/items/*",
        "/items/0/x",  # a member of a string
        "/none/x",
        "/missing",
        "/0",
    ],
)
def test_resolve_misses(text: str) -> None:
    assert resolve(DOCUMENT, parse(text)) is MISSING


def test_array_index_is_rfc_6901s() -> None:
    assert [array_index(t, 11) for t in ("0", "1", "10", "11", "01", "", "-", "1.0", "\uff11")] == [
        0, 1, 10, None, None, None, None, None, None,
    ]  # fmt: skip


def test_locate_expands_wildcards_in_document_order_with_concrete_pointers() -> None:
    document = {"a": [{"x/y": 1, "z": 2}, "text", {"x/y": 3}], "b": {"p": {"x/y": 4}, "q~": {"x/y": 5}}}
    assert [(key, pointer) for _, key, pointer in locate(document, parse("/a/*/x~1y"))] == [
        ("x/y", "/a/0/x~1y"),
        ("x/y", "/a/2/x~1y"),
    ]
    assert [pointer for _, _, pointer in locate(document, parse("/b/*/x~1y"))] == ["/b/p/x~1y", "/b/q~0/x~1y"]
    assert [pointer for _, _, pointer in locate(document, parse("/*"))] == ["/a", "/b"]
    ((container, key, pointer),) = locate(document, parse("/a/1"))
    assert container is document["a"] and key == 1 and pointer == "/a/1"
    assert locate(document, parse("/a/01")) == []
    assert locate(document, parse("/a/*/missing")) == []
    assert locate(document, ()) == []


# member names made of the characters that need escaping, digits and a star, so every trap comes up
keys = st.text(alphabet="~/0123*a", max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=12) | st.dictionaries(keys, children, max_size=4),
    max_leaves=30,
)


def escaped(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


@settings(max_examples=300, deadline=None)
@given(json_values, st.data())
def test_a_pointer_built_by_escaping_keys_resolves_to_the_indexed_value(document: Any, data: st.DataObject) -> None:
    node, text, path = document, "", []
    while isinstance(node, (dict, list)) and node and data.draw(st.booleans()):
        key: str | int = data.draw(
            st.sampled_from(sorted(node)) if isinstance(node, dict) else st.integers(0, len(node) - 1)
        )
        text += "/" + (escaped(key) if isinstance(key, str) else str(key))
        path.append(key)
        node = node[key]  # type: ignore[index]
    assert parse(text) == tuple(str(k) for k in path)
    assert resolve(document, parse(text)) is node
    if path and "*" not in path:  # in ``locate``, "*" is every member
        ((container, last, concrete),) = locate(document, parse(text))
        assert container[last] is node and last == path[-1] and concrete == text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(), max_size=12), st.text(alphabet="0123456789-+e .", max_size=4))
def test_an_array_token_names_an_item_only_as_its_decimal_index(items: list[int], token: str) -> None:
    expected = items[int(token)] if token in {str(i) for i in range(len(items))} else MISSING
    assert resolve(items, (token,)) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(keys, max_size=4))
def test_render_and_parse_are_inverse(tokens: list[str]) -> None:
    assert parse(render(tokens)) == tuple(tokens)
