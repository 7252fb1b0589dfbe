import re

from aibridge.mcp.naming import MAX_NAME_LENGTH, assign_ids, is_allowed, tool_id


def test_tool_id_is_prefixed_sanitised_and_cut_to_64_characters() -> None:
    assert tool_id("coder", "list_workspaces") == "bmcp_coder_list_workspaces"
    assert tool_id("my.server", "get weather/now") == "bmcp_my_server_get_weather_now"
    long = tool_id("srv", "x" * 100)
    assert len(long) == MAX_NAME_LENGTH
    assert long.startswith("bmcp_srv_xxx")


def test_colliding_names_are_disambiguated_stably() -> None:
    pairs = [("a", "get.x"), ("a", "get_x"), ("b", "y" * 80), ("b", "y" * 81)]
    first = assign_ids(pairs)
    again = assign_ids(list(reversed(pairs)))
    assert first == again
    assert len(set(first.values())) == 4
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", n) for n in first.values())
    # The first in sorted order keeps the plain name.
    assert first[("a", "get.x")] == "bmcp_a_get_x"
    assert first[("a", "get_x")] != "bmcp_a_get_x"


def test_deny_wins_over_allow_and_allow_restricts() -> None:
    allow = re.compile(r"^(add|echo|fail)$")
    deny = re.compile(r"^fail$")
    assert is_allowed("add", allow, deny)
    assert not is_allowed("fail", allow, deny)
    assert not is_allowed("lookup", allow, deny)
    assert is_allowed("lookup", None, deny)
    assert not is_allowed("fail", None, deny)
    assert is_allowed("anything", None, None)
