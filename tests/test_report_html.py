"""The HTML report and the closing summary read as a person reads them (issue 29: "The report a user reads").

A small hand-made report, rendered: labelled rows with units and separators, a change column,
what was removed (kept/total per group, the time steps), and the profile section only when the
report has one. Then the compress summary's list of what was removed.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from svtprune.cli.render import print_compress
from svtprune.report import render_html
from svtprune.report_format import change, layer_labels, short_name, short_names, size

GROUPS = [
    {"group": "net.patch_embed.stages.0.conv_bn.block.0", "before": 8, "after": 8, "ratio": 0.0},
    {"group": "net.blocks.0.mlp.fc1.0", "before": 256, "after": 51, "ratio": 0.8},
    {"group": "net.blocks.1.mlp.fc1.0", "before": 256, "after": 77, "ratio": 0.7},
]
SIDE = {"param_bytes": 646332, "file_bytes": 2399564, "accuracy": 90.2, "accuracy_search": 87.8,
        "latency_ms_b1": 2.773, "latency_ms_b64": 156.71, "fastest_ms_b1": 2.439, "fastest_ms_b64": 151.56,
        "latency_ms_b1_1thread": 2.753, "peak_rss_mb": 72.5, "peak_rss_mb_runtime_only": 45.8}  # fmt: skip
SMALLER = {"param_bytes": 448716, "file_bytes": 502105, "accuracy": 89.2, "accuracy_search": 86.559,
           "latency_ms_b1": 2.349, "latency_ms_b64": 134.58, "fastest_ms_b1": 2.112, "fastest_ms_b64": 120.39,
           "latency_ms_b1_1thread": 1.821, "peak_rss_mb": 68.0, "peak_rss_mb_runtime_only": 45.8}  # fmt: skip
PROFILE = {
    "original": [
        {"layer": "/blocks.0/mlp/fc1/Conv", "op": "Conv", "ms": 0.5, "share": 0.5},
        {"layer": "blocks.0.attn.q_lif", "op": "Add", "ms": 0.3, "share": 0.3},
    ],
    "result": [{"layer": "blocks.0.attn.q_lif", "op": "Add", "ms": 0.2, "share": 0.4}],
}


def energy_side(rate: float) -> dict:
    layers = [
        {"node": "node_Conv_1", "op": "Conv", "spike_input": False, "firing_rate": 1.0},
        {"node": "node_Conv_2", "op": "Conv", "spike_input": True, "firing_rate": rate},
    ]
    return {"layers": layers, "energy_uJ_per_image": 58.5 * rate / 0.1, "total_sops": 6406142.0 * rate / 0.1,
            "total_macs_real_input": 11467776.0, "images": 64}  # fmt: skip


@pytest.fixture()
def report() -> dict:
    """A compress report with the keys render_html and print_compress read (numbers from a real run)."""
    return {
        "command": "compress", "method": "primesvt", "metric": "top1 accuracy", "model": "missing.onnx",
        "data": {"images": 4000, "search_images": 500, "held_out_images": 500},
        "constraints": {"search_budget_points": 1.0, "objective": "memory", "time_limit": None},
        "original": dict(SIDE, accuracy_judged=86.559), "compressed": dict(SMALLER),
        "memory_saving": 0.30575, "accuracy_drop": 1.0, "constraints_met": True, "reason": "constraints met",
        "speedup": {"b1": 1.155, "b64": 1.259}, "speedup_median": {"b1": 1.181, "b64": 1.164},
        "energy_saving": 0.383,
        "energy": {"original": energy_side(0.1), "compressed": energy_side(0.06),
                   "constants": {"E_MAC_pJ": 4.6, "E_AC_pJ": 0.9, "source": "Horowitz 2014"}},
        "groups": copy.deepcopy(GROUPS),
        "sensitivity": {g["group"]: [[0.2, 86.0, 600000], [0.4, 85.0, 550000]] for g in GROUPS},
        "evaluations": [{"label": "a", "accuracy": 86.0, "param_bytes": 600000}],
        "timesteps": {"original": 4, "chosen": 3, "stem_once": None, "reason": "3 steps meet the speed goal",
                      "candidates": [{"timesteps": 3, "accuracy_search": 90.0, "verdict": "accepted",
                                      "accuracy_held": 91.5, "latency_ms_b1": 1.538, "speedup": 1.301}]},
        "wall_seconds": 77.0, "images_forwarded": 22828,
    }  # fmt: skip


def test_the_summary_is_a_table_with_units_separators_and_a_change_column(report: dict) -> None:
    page = render_html(report)
    table = page[page.index("id='compare'") : page.index("</table>", page.index("id='compare'"))]
    assert "Parameters" in table and "param_bytes</th>" not in table  # labels, the key only as a tooltip
    assert "646,332 B (631.2 KiB)" in table and "2,399,564 B (2.3 MiB)" in table
    assert "90.20%" in table and "89.20%" in table and "-1.00 pt" in table
    assert "-30.6%" in table and "1.18x faster" in table and "72.5 MiB" in table
    assert "<th>change</th>" in table
    text = re.sub(r"data:image/png;base64,[^']*", "", page)
    assert not re.search(r"\bMB\b|\bkB\b", text)  # one set of units: KiB and MiB
    assert page.count("data:image/png;base64,") >= 4


def test_the_removed_table_gives_kept_over_total_per_group_and_the_time_steps(report: dict) -> None:
    page = render_html(report)
    removed = page[page.index("id='removed'") : page.index("</table>", page.index("id='removed'"))]
    assert "blocks.0.mlp.fc1</th><td>51 / 256</td><td>-80%</td>" in removed
    assert "patch_embed.stages.0.conv_bn.block</th><td>8 / 8</td><td>none</td>" in removed
    assert "time steps</th><td>3 / 4</td><td>-25%</td>" in removed
    assert "title='net.blocks.0.mlp.fc1.0'" in removed  # the full name on hover


def test_the_profile_section_appears_only_with_a_profile(report: dict) -> None:
    assert "Where the time goes" not in render_html(report)
    page = render_html(dict(report, profile=PROFILE))
    assert "Where the time goes" in page and "id='profile'" in page
    for side, share in (("original", "50.0%"), ("result", "40.0%")):
        start = page.index(f"id='profile-{side}'")
        table = page[start : page.index("</table>", start)]
        assert share in table and "ms</td>" in table
    assert "blocks.0.mlp.fc1</th>" in page[page.index("id='profile-original'") :]


def test_short_names_drop_the_exporters_noise() -> None:
    assert short_name("/blocks.3/attn/qkv/Conv") == "blocks.3.attn.qkv"
    assert short_name("net.blocks.0.mlp.fc1.0.weight") == "blocks.0.mlp.fc1"
    assert short_name("onnx::Conv_12") == "Conv_12"
    assert short_name("node_Conv_860") == "Conv_860"
    assert short_name("net.blocks.0") == "blocks.0"  # the block's own index stays
    assert short_name("x.weight[axis 0, source]") == "x"
    names = short_names(["a.blocks.0.fc.0", "b.blocks.0.fc.0"])
    assert names == {"a.blocks.0.fc.0": "a.blocks.0.fc", "b.blocks.0.fc.0": "b.blocks.0.fc"}
    clash = ["net.x.1.y.0", "net.x.1.y.Conv"]  # two that would read the same keep their full names
    assert short_names(clash) == {name: name for name in clash}
    segment = {"from node_Conv_9": "from blocks.1.attn.qkv"}  # a profiled segment named by its weight
    assert layer_labels(["from node_Conv_9"], {"node_Conv_9": "net.blocks.1.attn.qkv.weight"}) == segment


def test_units_and_changes() -> None:
    assert size(900) == "900 B" and size(646332) == "646,332 B (631.2 KiB)"
    assert size(3 * 2**20) == "3,145,728 B (3.0 MiB)"
    assert change(2.0, 1.0, "ms") == "2.00x faster" and change(1.0, 2.0, "ms") == "2.00x slower"
    assert change(100, 8, "bytes") == "-92.0%" and change(100, 100, "bytes") == "same"
    assert change(90.2, 89.2, "accuracy") == "-1.00 pt"


def test_the_closing_summary_lists_what_was_removed(report: dict, capsys: pytest.CaptureFixture) -> None:
    print_compress(report, Path("small.onnx"))
    said = capsys.readouterr().out
    lines = [" ".join(line.split()) for line in said.splitlines()]
    assert "removed (kept/total):" in lines
    assert lines.index("blocks.0.mlp.fc1 51/256 channels (-80%)") < lines.index(
        "blocks.1.mlp.fc1 77/256 channels (-70%)"
    )
    assert "1 of 3 groups kept whole" in lines and "time steps 3 of 4" in lines
    assert lines[-2].startswith("model: small.onnx")  # the files stay last


def test_the_closing_summary_counts_the_groups_past_the_first_few(report: dict, capsys: pytest.CaptureFixture) -> None:
    report["groups"] = [{"group": f"net.blocks.{i}.mlp.fc1.0", "before": 64, "after": 32 + i} for i in range(11)]
    report["timesteps"] = None
    print_compress(report, Path("small.onnx"))
    said = " ".join(capsys.readouterr().out.split())
    assert "blocks.0.mlp.fc1 32/64 channels (-50%)" in said and "blocks.7.mlp.fc1" in said
    assert "blocks.8.mlp.fc1" not in said and "and 3 more groups (69 channels removed)" in said
    assert "time steps" not in said and "kept whole" not in said


def test_layers_are_named_by_their_weights_where_the_model_can_be_read() -> None:
    from svtprune.report_format import node_names

    model = Path(__file__).resolve().parents[1] / "models" / "reference" / "spikformer_fmnist.onnx"
    names = node_names(model)
    assert names["node_Conv_860"] == "net.patch_embed.stages.1.conv_bn.block.0.weight"
    assert names["node_matmul"] == "blocks.0.attn.matmul"  # attention's product: the module before it
    assert "node_MatMul_779" not in names  # the head's weight has no module name: the node's name stays
    assert node_names("missing.onnx") == {} and node_names(None) == {}
