"""The reconciler's diff: the fewest puts and deletes, idempotent, deterministic."""

from __future__ import annotations

from hypothesis import given, strategies as st

from v6nat_ebpf.reconciler import plan

tables = st.dictionaries(st.integers(0, 50), st.integers(0, 3), max_size=40)


@given(tables, tables)
def test_applying_the_plan_gives_the_desired_table(desired: dict[int, int], current: dict[int, int]) -> None:
    todo = plan(desired, current)
    result = dict(current)
    for key in todo.deletes:
        del result[key]
    result.update(todo.puts)
    assert result == desired
    # minimal: every write changes something, every delete removes a key not wanted
    assert all(current.get(k) != v for k, v in todo.puts)
    assert all(k not in desired for k in todo.deletes)
    assert todo.unchanged == sum(1 for k, v in desired.items() if current.get(k) == v)
    # idempotent: a second pass has nothing to do
    again = plan(desired, result)
    assert again.puts == () and again.deletes == ()


def test_a_changed_value_is_one_put_not_a_delete_and_put() -> None:
    todo = plan({"k": 2, "same": 1}, {"k": 1, "same": 1, "gone": 5})
    assert todo.puts == (("k", 2),) and todo.deletes == ("gone",) and todo.unchanged == 1
