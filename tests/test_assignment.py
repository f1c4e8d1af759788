"""Weighted rendezvous assignment: pure, the same answer everywhere, minimal moves."""

from __future__ import annotations

from collections import Counter

from daemon.refresh.assignment import Member, assign

LOGINS = [f"EVAL_{n:04d}" for n in range(1_200)]


def members(*names: str, weight: float = 14, capacity: int = 10_000) -> list[Member]:
    return [Member(name, weight, capacity) for name in names]


def moved(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(before[login] != after[login] for login in before)


def test_every_login_has_one_owner_whatever_the_order_of_members() -> None:
    three = members("a", "b", "c")
    owners = assign(LOGINS, three)
    assert set(owners) == set(LOGINS)
    assert owners == assign(list(reversed(LOGINS)), list(reversed(three)))
    assert min(Counter(owners.values()).values()) > 1_200 / 3 * 0.85
    assert assign(LOGINS, []) == {}


def test_a_joining_member_takes_about_its_share_and_nothing_else_moves() -> None:
    before = assign(LOGINS, members("a", "b", "c"))
    after = assign(LOGINS, members("a", "b", "c", "d"))
    assert {after[login] for login in LOGINS if before[login] != after[login]} == {"d"}
    assert 0.2 < moved(before, after) / len(LOGINS) < 0.3


def test_a_leaving_member_moves_only_its_own_logins() -> None:
    before = assign(LOGINS, members("a", "b", "c"))
    after = assign(LOGINS, members("a", "c"))
    assert {login for login in LOGINS if before[login] != after[login]} == {
        login for login in LOGINS if before[login] == "b"
    }


def test_members_win_in_proportion_to_their_configured_budget() -> None:
    owners = assign(LOGINS, [Member("small", 5, 10_000), Member("large", 15, 10_000)])
    share = Counter(owners.values())["large"] / len(LOGINS)
    assert 0.7 < share < 0.8


def test_no_member_is_given_more_than_it_keeps_alive_while_another_has_room() -> None:
    owners = assign(LOGINS[:30], [Member("a", 14, 15), Member("b", 14, 15)])
    assert Counter(owners.values()) == {"a": 15, "b": 15}
    # More logins than every address keeps alive: the rest still have an owner each.
    crowded = Counter(assign(LOGINS[:100], [Member("a", 14, 15), Member("b", 14, 15)]).values())
    assert sum(crowded.values()) == 100
    assert min(crowded.values()) >= 15
