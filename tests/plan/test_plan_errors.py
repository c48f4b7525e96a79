"""Every plan problem is a PlanError that names the file and says what differs."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import updlrm
from updlrm.plan import PLAN_SCHEMA, Plan, PlanError, Shard, check_schema, uniform_plan
from updlrm.specs import RowFormat, TableSpec, Topology

TABLES = [TableSpec("C1", 50_000, 8), TableSpec("C2", 300, 4, row_format=RowFormat.INT8, scale=0.5)]


def _saved(tmp_path, tables=TABLES):
    shards = [
        Shard(0, 0, 0, 8, range(25_000)),
        Shard(0, 1, 0, 8, range(25_000, 50_000)),
        Shard(1, 0, 0, 4, np.array([0, 7, 9])),
        Shard(1, 1, 0, 4, np.arange(300)),
    ]
    plan = Plan(tables, Topology(2), shards, host_rows={0: np.array([3, 4])}, workload_hash="w")
    return plan.save(tmp_path / "plan.json")


def _edit(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def test_other_tables_say_what_differs(tmp_path):
    path = _saved(tmp_path)
    bigger = [TableSpec("C1", 100_000, 8), TABLES[1]]
    with pytest.raises(
        PlanError,
        match=r"plan.json: the plan was built for other tables: table C1: plan has 50,000 "
        r"rows, the module has 100,000; rebuild",
    ):
        Plan.load(path, tables=bigger)
    with pytest.raises(PlanError, match=r"table C2: plan has int8 row format, the module has fp32"):
        Plan.load(path, tables=[TABLES[0], TableSpec("C2", 300, 4)])
    with pytest.raises(PlanError, match=r"table 1: plan names it 'C2', the module 'D2'"):
        Plan.load(path, tables=[TABLES[0], TableSpec("D2", 300, 4, row_format="int8", scale=0.5)])
    with pytest.raises(PlanError, match=r"plan has 2 tables \(C1, C2\), the module has 1 \(C1\)"):
        Plan.load(path, tables=TABLES[:1])


def test_module_with_a_plan_for_other_tables(tmp_path):
    path = _saved(tmp_path)
    bigger = [TableSpec("C1", 100_000, 8), TABLES[1]]
    for plan in (path, Plan.load(path)):
        with pytest.raises(PlanError, match="table C1: plan has 50,000 rows, the module has 100,000"):
            updlrm.TableBatchedEmbeddingBags(bigger, plan=plan, backend="emulator")


def test_missing_npz_names_the_file_and_the_fix(tmp_path):
    path = _saved(tmp_path)
    path.with_suffix(".npz").unlink()
    with pytest.raises(
        PlanError,
        match=r"plan\.npz: the plan's row arrays cannot be read \(No such file or "
        r"directory\); plan\.json needs the plan\.npz written beside it",
    ):
        Plan.load(path)


@pytest.mark.parametrize("key", ["shards", "tables", "topology", "placement_hash", "arrays_file"])
def test_missing_key_is_named(tmp_path, key):
    path = _saved(tmp_path)
    _edit(path, lambda doc: doc.pop(key))
    with pytest.raises(PlanError, match=f'plan.json: key "{key}" is missing'):
        Plan.load(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["shards"][1].update(dpu="x"), r'"shards\[1\]\.dpu" must be an integer, got "x"'),
        (lambda d: d["shards"][0]["rows"].pop("range"), r'"shards\[0\]\.rows" needs exactly one of "range" or "array"'),
        (lambda d: d["shards"][0].update(colz=[0, 8]), r'"shards\[0\]" has unknown key "colz"'),
        (
            lambda d: d["shards"][2]["rows"].update(array="nope"),
            r"shards\[2\] names array 'nope', which plan\.npz does not",
        ),
        (lambda d: d["shards"][2]["rows"].update(count=4), r"shards\[2\] has 3 rows in plan\.npz, the plan says 4"),
        (lambda d: d["host_rows"].update({"x": "host_0"}), r'"host_rows" key \'x\' is not a table index'),
        (lambda d: d["tables"][0].update(num_embeddings=7), r"table list was edited"),
        (lambda d: d["topology"].update(nr_dpus=0), r"a topology needs at least one DPU"),
        (lambda d: d.update(version=1), r"plan format version 1, this updlrm reads 2; rebuild it"),
        (lambda d: d.update(format="other"), r"not an updlrm plan \(format 'other'"),
    ],
    ids=["type", "rows", "unknown-key", "array-name", "count", "host-key", "tables", "topology", "version", "format"],
)
def test_malformed_documents_name_the_problem(tmp_path, edit, message):
    path = _saved(tmp_path)
    _edit(path, edit)
    with pytest.raises(PlanError, match=message):
        Plan.load(path)


def test_moving_a_shard_to_another_dpu_is_detected(tmp_path):
    path = _saved(tmp_path)
    # Still a valid placement (every row covered, within capacity), but not the one built.
    _edit(path, lambda d: d["shards"][2].update(dpu=1) or d["shards"][3].update(dpu=0))
    with pytest.raises(PlanError, match=r"shard assignment .* was edited .*placement hash mismatch"):
        Plan.load(path)


def test_placement_hash_covers_dpus_rows_columns_and_host_rows():
    base = uniform_plan(TABLES, Topology(4), "tiled")
    base.host_rows = {1: np.array([1, 2])}
    h = base.placement_hash()
    edits = [
        lambda p: setattr(p.shards[0], "dpu", (p.shards[0].dpu + 1) % 4),
        lambda p: setattr(p.shards[0], "rows", range(p.shards[0].rows.start, p.shards[0].rows.stop - 1)),
        lambda p: setattr(p.shards[0], "col_stop", p.shards[0].col_stop - 1),
        lambda p: p.host_rows.update({1: np.array([1, 3])}),
        lambda p: setattr(p, "topology", Topology(4, dpus_per_rank=2)),
    ]
    for edit in edits:
        p = uniform_plan(TABLES, Topology(4), "tiled")
        p.host_rows = {1: np.array([1, 2])}
        assert p.placement_hash() == h
        edit(p)
        assert p.placement_hash() != h


def test_hand_built_host_rows_none_means_no_host_cache():
    base = uniform_plan(TABLES, Topology(4), "tiled")
    plan = Plan(base.tables, base.topology, base.shards, host_rows=None)
    assert plan.host_rows == {}
    assert plan.placement_hash() == base.placement_hash()
    plan.validate()


def test_hand_built_host_rows_are_checked():
    base = uniform_plan(TABLES, Topology(4), "tiled")
    with pytest.raises(PlanError, match=r"host_rows must map table indices to row indices \(a dict\), not list"):
        Plan(base.tables, base.topology, base.shards, host_rows=[np.array([1])])
    plan = Plan(base.tables, base.topology, base.shards, host_rows={"1": [4, 2]})
    assert list(plan.host_rows) == [1] and plan.host_rows[1].dtype == np.int64
    plan.validate()
    stray = Plan(base.tables, base.topology, base.shards, host_rows={2: [0]})
    with pytest.raises(PlanError, match=r"host_rows names table index 2, but the plan has 2 tables"):
        stray.validate()


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such plan file"),
        ("{not json", "not a JSON plan"),
        (b"\xff\xfe\x00", "not a JSON plan"),
        ("[1, 2]", "not an updlrm plan"),
        ("dir", "is a directory"),
    ],
)
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "p.json"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(PlanError, match=message):
        Plan.load(path)


def _leaves(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, prefix + (i,))
    yield prefix


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_edit_is_loaded_faithfully_or_refused_with_a_plan_error(tmp_path, data):
    """Replace any node of the document by any JSON value: PlanError, or a plan equal to the saved one."""
    path = tmp_path / "plan.json"
    if not path.exists():
        _saved(tmp_path)
    original = json.loads(path.read_text())
    doc = json.loads(path.read_text())
    where = data.draw(st.sampled_from([p for p in _leaves(doc) if p]))
    value = data.draw(
        st.recursive(
            st.none() | st.booleans() | st.integers(-3, 60_000) | st.floats(allow_nan=False) | st.text(max_size=4),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=2),
            max_leaves=4,
        )
    )
    node = doc
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    try:
        plan = Plan.load(edited)
    except PlanError:
        return
    assert plan.placement_hash() == original["placement_hash"]
    assert [t.to_dict() for t in plan.tables] == original["tables"]


def test_schema_checker_names_nested_keys():
    with pytest.raises(PlanError, match=r'"topology.nr_dpus" must be an integer, got true'):
        check_schema({"nr_dpus": True}, PLAN_SCHEMA["topology"], "topology")


@pytest.mark.parametrize("name", ["", "../elsewhere.npz", "sub/plan.npz"])
def test_arrays_file_must_name_a_file_beside_the_plan(tmp_path, name):
    """Found by the any-edit hypothesis test: an empty name raised ValueError from pathlib."""
    plan = uniform_plan([TableSpec("a", 10, 4)], Topology(nr_dpus=2), "row_wise")
    path = plan.save(tmp_path / "plan.json")
    doc = json.loads(path.read_text())
    doc["arrays_file"] = name
    path.write_text(json.dumps(doc))
    with pytest.raises(PlanError, match='"arrays_file" must name a file beside the plan'):
        Plan.load(path)
