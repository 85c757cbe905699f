"""The README's node, topic and parameter tables equal what the code declares (scripts/readme_tables.py),
and the documented topics are the ones the nodes really create."""
from __future__ import annotations

import importlib.util
import re

import pytest

from ros_harness import REPO_ROOT

_spec = importlib.util.spec_from_file_location("readme_tables", REPO_ROOT / "scripts" / "readme_tables.py")
readme_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_tables)


def test_readme_tables_are_up_to_date():
    text = (REPO_ROOT / "README.md").read_text()
    current = readme_tables.readme_block(text)
    assert current is not None, "README.md has no generated node tables: run scripts/readme_tables.py --write"
    assert current == readme_tables.block(), "README tables are stale: run scripts/readme_tables.py --write"


def test_generated_tables_list_every_parameter_with_its_default():
    from monother_ros.ros.depth_node import DEPTH_PARAMETERS

    text = readme_tables.generate()
    section = text.split("### thermal_depth", 2)[2].split("\n### ", 1)[0]  # the one under "## Parameters"
    rows = re.findall(r"^\| `([^`]+)` \| ([\w\[\]]+) \| `([^`]*)` \|", section, flags=re.M)
    assert [(n, t, d) for n, t, d in rows] == [(n, t, d) for n, t, d, _ in DEPTH_PARAMETERS.rows()]
    assert "| `teacher.slop_s` | double | `0.05` | largest stamp difference" in section
    # The runtime column: dynamic parameters (ros2 param set) are marked, the rest read-only.
    runtime = dict(re.findall(r"^\| `([^`]+)` \|.*\| (dynamic|read-only) \|$", section, flags=re.M))
    assert runtime == {n: ("dynamic" if n in DEPTH_PARAMETERS.dynamic_names() else "read-only")
                       for n, *_ in DEPTH_PARAMETERS.rows()}
    assert runtime["max_depth_m"] == "dynamic" and runtime["backend"] == "read-only"


def test_sim_topic_constants_are_all_documented():
    import monother_ros.ros.sim_node as sim_node

    documented = {row[0] for row in readme_tables.node_topics("sim_rig", sim_node)}
    constants = {v for k, v in vars(sim_node).items() if k.endswith("_TOPIC") and isinstance(v, str)}
    assert constants <= documented


@pytest.mark.ros
def test_documented_depth_topics_are_the_ones_the_node_creates():
    import monother_ros.ros.depth_node as depth_node
    from ros_harness import ros_context, wait_for
    from test_ros_depth_node import make_node

    rows = [r for r in readme_tables.node_topics("thermal_depth", depth_node) if "teacher.enabled" not in r[5]
            and "transport compressed" not in r[5]]
    absolute = lambda t: t if t.startswith("/") else "/" + t  # noqa: E731
    want_out = {absolute(r[0]) for r in rows if r[1] == "out"}
    want_in = {absolute(r[0]) for r in rows if r[1] == "in"}
    ignore = {"/rosout", "/parameter_events"}
    with ros_context() as context:
        node = make_node(context, lazy=False)

        def names(kind):
            getter = getattr(node, f"get_{kind}_names_and_types_by_node")
            return {t for t, _ in getter("thermal_depth", "/")} - ignore

        assert wait_for(lambda: names("publisher") == want_out and names("subscriber") == want_in, 10.0), (
            names("publisher"), names("subscriber"))
        node.destroy_node()
