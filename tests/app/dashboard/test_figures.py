"""Unit tests of the dashboard's pure figure builders (API JSON in, Plotly figure out)."""

from __future__ import annotations

import math

import pytest

from app.dashboard import figures


def make_network(width: list[int], n_points: int = 32, symbolic_every: int = 0) -> dict:
    """A network JSON shaped like the API's ``NetworkOut``."""
    layers = []
    count = 0
    for index, (n_in, n_out) in enumerate(zip(width, width[1:], strict=False)):
        edges = []
        for j in range(n_out):
            for i in range(n_in):
                count += 1
                xs = [-1 + 2 * k / (n_points - 1) for k in range(n_points)]
                edges.append(
                    {
                        "i": i,
                        "j": j,
                        "score": (i * n_out + j + 1) / (n_in * n_out),
                        "symbolic": "sin"
                        if symbolic_every and count % symbolic_every == 0
                        else None,
                        "active": True,
                        "x": xs,
                        "y": [math.sin(3 * x + i) * (j + 1) for x in xs],
                    }
                )
        layers.append({"index": index, "in_dim": n_in, "out_dim": n_out, "edges": edges})
    return {
        "run_id": 1,
        "width": width,
        "input_names": [f"feature {k}" for k in range(width[0])],
        "output_names": ["HV"],
        "layers": layers,
        "node_scores": [[1.0] * w for w in width],
    }


def trace(fig, name):
    matches = [t for t in fig.data if t.name == name]
    assert matches, f"no trace named {name!r} in {[t.name for t in fig.data]}"
    return matches[0]


def test_network_figure_has_one_hit_point_per_edge_with_its_address():
    net = make_network([3, 2, 1])
    fig = figures.network_figure(net)
    hits = trace(fig, "edges")
    assert len(hits.x) == 3 * 2 + 2 * 1
    assert sorted(tuple(c) for c in hits.customdata) == sorted(
        [(0, i, j) for i in range(3) for j in range(2)] + [(1, i, 0) for i in range(2)]
    )


def test_network_figure_uses_few_traces_even_for_a_large_network():
    net = make_network([10, 16, 16, 1], symbolic_every=7)
    fig = figures.network_figure(net)
    n_edges = 10 * 16 + 16 * 16 + 16
    # the issue calls it "416 edges"; 10·16 + 16·16 + 16·1 is 432
    assert len(trace(fig, "edges").x) == n_edges
    # slots + (numeric, symbolic) x 8 levels x (links, curves) + nodes + hits
    assert len(fig.data) <= 1 + 2 * figures.OPACITY_LEVELS * 2 + 2


def test_large_network_draws_mini_plots_only_for_the_top_edges():
    net = make_network([10, 16, 16, 1])
    fig = figures.network_figure(net)
    curve_points = sum(
        sum(v is None for v in t.x) for t in fig.data if t.name and "-curves-" in t.name
    )
    # one None terminator per mini-plot: the top-k of the two big layers + all 16 of the last
    assert curve_points == figures.TOP_K_MINI_PLOTS + 16
    chosen = figures.mini_plot_edges(figures.iter_edges(net))
    big = [e for e in figures.iter_edges(net) if e.layer < 2]
    weakest_chosen = min(e.score for e in big if (e.layer, e.i, e.j) in chosen)
    strongest_left = max(e.score for e in big if (e.layer, e.i, e.j) not in chosen)
    assert weakest_chosen >= strongest_left
    small = figures.network_figure(make_network([3, 2, 1]))
    small_curves = sum(
        sum(v is None for v in t.x) for t in small.data if t.name and "-curves-" in t.name
    )
    assert small_curves == 8


def test_mini_plots_stay_inside_their_slot():
    net = make_network([3, 2, 1])
    fig = figures.network_figure(net)
    for t in fig.data:
        if not (t.name and "-curves-" in t.name):
            continue
        ys = [v for v in t.y if v is not None]
        for y in ys:
            frac = y - math.floor(y)
            assert figures.SLOT_BOTTOM - 1e-9 <= frac <= figures.SLOT_TOP + 1e-9
        xs = [v for v in t.x if v is not None]
        assert min(xs) >= 0 and max(xs) <= 1


def test_opacity_follows_attribution_and_symbolic_edges_are_coloured():
    net = make_network([4, 1], symbolic_every=4)
    fig = figures.network_figure(net)
    symbolic = [t for t in fig.data if t.name and t.name.startswith("symbolic-")]
    numeric = [t for t in fig.data if t.name and t.name.startswith("spline-")]
    assert symbolic and numeric
    assert all(t.line.color == figures.SYMBOLIC_COLOR for t in symbolic)
    assert figures.opacity_level(0.0) == 0
    assert figures.opacity_level(1.0) == figures.OPACITY_LEVELS - 1
    assert figures.opacity_level(0.2) < figures.opacity_level(0.6)
    levels = [figures.level_alpha(k) for k in range(figures.OPACITY_LEVELS)]
    assert levels == sorted(levels) and levels[-1] == pytest.approx(1.0)


def test_pruned_edges_are_not_drawn_or_clickable():
    net = make_network([3, 1])
    net["layers"][0]["edges"][1]["active"] = False
    fig = figures.network_figure(net)
    assert [0, 1, 0] not in [list(c) for c in trace(fig, "edges").customdata]
    assert len(trace(fig, "edges").x) == 2


def test_selection_shape_surrounds_the_slot_and_rejects_bad_addresses():
    (shape,) = figures.selection_shapes([3, 2, 1], [0, 2, 1])
    cx, w = figures.slot_geometry(3, 2, 2, 1)
    assert shape["x0"] <= cx - w / 2 and shape["x1"] >= cx + w / 2
    assert shape["y0"] < figures.SLOT_BOTTOM and shape["y1"] > figures.SLOT_TOP
    assert figures.selection_shapes([3, 2, 1], [0, 3, 0]) == []
    assert figures.selection_shapes([3, 2, 1], [5, 0, 0]) == []
    assert figures.selection_shapes([3, 2, 1], [0, -1, 0]) == []
    assert figures.selection_shapes([3, 2, 1], None) == []
    fig = figures.network_figure(make_network([3, 2, 1]), selected=[1, 1, 0])
    assert [s.name for s in fig.layout.shapes] == [figures.SELECTED_SHAPE_NAME]
    assert not figures.network_figure(make_network([3, 2, 1])).layout.shapes


def test_network_figure_survives_null_and_non_finite_samples():
    net = make_network([2, 1])
    net["layers"][0]["edges"][0]["y"][3] = None
    net["layers"][0]["edges"][0]["score"] = None
    net["layers"][0]["edges"][1]["x"] = [0.0, 0.0, 0.0]
    fig = figures.network_figure(net)
    for t in fig.data:
        assert all(v is None or math.isfinite(v) for v in (t.y or []))


def test_uirevision_is_kept_so_zoom_survives_updates():
    fig = figures.network_figure(make_network([2, 1]), uirevision="run-7")
    assert fig.layout.uirevision == "run-7"
    assert figures.loss_figure([], uirevision="run-7").layout.uirevision == "run-7"


def test_edge_figure_shows_curve_data_and_candidate_overlay():
    edge = {
        "layer": 0,
        "i": 1,
        "j": 0,
        "x": [0.0, 0.5, 1.0],
        "y": [0.0, 0.25, 1.0],
        "data_x": [0.1, 0.9],
        "data_y": [0.01, 0.8],
        "symbolic": None,
    }
    suggestion = {"name": "x^2", "r2": 0.99, "complexity": 2, "params": [1.0, 0.0, 1.0, 0.0]}
    preview = figures.candidate_preview(edge, suggestion)
    assert preview["y"] == pytest.approx([0.0, 0.25, 1.0])
    fig = figures.edge_figure(edge, input_name="VEC", candidate=preview)
    names = [t.name for t in fig.data]
    assert names[0] == "data (pre-activations)"
    assert names[1].startswith("φ(x)")
    assert names[2] == "candidate: x^2 (R² 0.990)"
    assert "VEC" in fig.layout.title.text


def test_candidate_preview_drops_non_finite_values_and_unknown_names():
    edge = {"x": [-1.0, 0.0, 1.0]}
    preview = figures.candidate_preview(edge, {"name": "1/x", "params": [1, 0, 1, 0]})
    assert preview["y"][1] is None and preview["y"][2] == pytest.approx(1.0)
    assert figures.candidate_preview(edge, {"name": "os.system", "params": [1, 0, 1, 0]})["y"] == []
    assert figures.candidate_preview(edge, {"name": "x", "params": None})["y"] == []


def test_loss_figure_and_extension_skip_missing_values():
    metrics = [
        {"step": 1, "train_loss": 1.0, "val_loss": None},
        {"step": 2, "train_loss": 0.5, "val_loss": 0.7},
    ]
    fig = figures.loss_figure(metrics)
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[1].x) == [2]
    assert fig.layout.yaxis.type == "log"
    data, indices = figures.loss_extension(metrics)
    assert indices == [0, 1]
    assert data == {"x": [[1, 2], [2]], "y": [[1.0, 0.5], [0.7]]}


def test_compare_and_predictions_figures():
    fig = figures.compare_loss_figure(
        [("run 1", [{"step": 1, "train_loss": 1.0, "val_loss": 2.0}]), ("run 2", [])]
    )
    assert [t.name for t in fig.data] == ["run 1 val", "run 1 train", "run 2 train"]
    pred = figures.predictions_figure([1.0, 2.0, None], [1.1, 1.9, 3.0])
    assert list(pred.data[-1].x) == [1.0, 2.0]
    assert list(pred.data[0].x) == [1.0, 2.0]  # the ideal line spans the data


def test_formula_markdown_puts_dollars_on_their_own_lines():
    text = figures.formula_markdown(r"0.5 x^{2}", label="HV")
    assert text.splitlines() == ["HV", "", "$$", r"0.5 x^{2}", "$$"]
    assert figures.formula_markdown("  ") == ""


# ── pure form helpers (app/dashboard/forms.py) ──────────────────────────────────────────────


def test_parse_hidden_accepts_lists_and_says_what_to_fix():
    from app.dashboard.forms import parse_hidden

    assert parse_hidden("5") == [5]
    assert parse_hidden(" [8, 4] ") == [8, 4]
    assert parse_hidden("") == []
    for bad in ("0", "-3", "2.5", "five", "²"):
        with pytest.raises(ValueError, match="positive whole number"):
            parse_hidden(bad)


def test_build_payload_matches_the_run_schema():
    from app.api.schemas import RunCreate
    from app.dashboard.forms import build_payload

    selection = {
        "dataset_id": 3,
        "target": "HV",
        "features": ["VEC", "Delta"],
        "task": "regression",
    }
    values = dict(
        model="kan",
        hidden="4, 2",
        name="",
        grid=5,
        k=3,
        basis="rbf",
        update_grid=0,
        activation="silu",
        steps=50,
        lr=0.01,
        optimizer="adam",
        batch=None,
        lamb=0.001,
        val=0.2,
        patience=None,
        seed=1,
    )
    payload = build_payload(selection, values)
    parsed = RunCreate.model_validate(payload)  # the API's own schema accepts it
    assert parsed.hidden == [4, 2] and parsed.basis == "rbf" and parsed.target_columns == ["HV"]
    mlp = build_payload(selection, {**values, "model": "mlp", "activation": "tanh"})
    assert RunCreate.model_validate(mlp).activation == "tanh" and "grid" not in mlp
    with pytest.raises(ValueError, match="Steps"):
        build_payload(selection, {**values, "steps": None})
    # early stopping (the Train form's default) needs validation rows to watch
    stopping = {**values, "patience": 100}
    assert build_payload(selection, stopping)["early_stopping_patience"] == 100
    assert build_payload(selection, {**stopping, "val": 0.0})["early_stopping_patience"] is None
    # "off" in the form is sent as null: the API's own default (unset) would stop early
    off = RunCreate.model_validate(payload)  # values: patience None, val 0.2
    assert payload["early_stopping_patience"] is None and off.early_stopping_patience is None


def test_estimate_parameters():
    from app.dashboard.forms import estimate_parameters

    assert estimate_parameters("mlp", [3, 4, 1], 5, 3) == 3 * 4 + 4 + 4 * 1 + 1
    assert estimate_parameters("kan", [2, 1], 5, 3) == 2 * 9 + 1


def test_upload_warnings_name_the_problem():
    from app.dashboard.forms import upload_warnings

    semicolons = {"columns": [{"name": "x1;x2;y", "kind": "categorical", "top_values": ["1;2;3"]}]}
    assert any("semicolons" in w for w in upload_warnings(semicolons))
    mixed = {
        "columns": [
            {"name": "x2", "kind": "categorical", "top_values": ["2", "5", "five"]},
            {"name": "y", "kind": "numeric"},
        ]
    }
    (warning,) = upload_warnings(mixed)
    assert "“x2” mixes numbers and text" in warning and "five" in warning
    clean = {
        "columns": [
            {"name": "Phases", "kind": "categorical", "top_values": ["BCC", "FCC"]},
            {"name": "HV", "kind": "numeric"},
        ]
    }
    assert upload_warnings(clean) == []


def test_default_target_prefers_target_names_over_element_symbols():
    from app.dashboard.forms import default_target

    stats = [{"name": n, "kind": "numeric"} for n in ("Al", "Y", "HV", "VEC")]
    assert default_target(stats) == "HV"
    assert (
        default_target([{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"}]) == "b"
    )
    assert default_target([]) is None


def test_initial_selection_remembers_the_users_choice_for_the_same_dataset_only():
    from app.dashboard.forms import initial_selection

    stats = [{"name": n, "kind": "numeric"} for n in ("Al", "VEC", "HV")]
    stats.append({"name": "Phase", "kind": "categorical"})
    assert initial_selection(stats, None, 1) == ("HV", ["Al", "VEC"], "regression")
    chosen = {
        "dataset_id": 1,
        "target": "Phase",
        "features": ["VEC", "gone"],
        "task": "classification",
    }
    assert initial_selection(stats, chosen, 1) == ("Phase", ["VEC"], "classification")
    assert initial_selection(stats, chosen, 2) == ("HV", ["Al", "VEC"], "regression")


def test_hit_markers_of_dense_layers_are_never_within_plotlys_tie_distance():
    """Plotly's closest-hover clamps distances under 3 px to zero: neighbours would tie."""
    net = make_network([10, 16, 16, 1])
    fig = figures.network_figure(net)
    hits = trace(fig, "edges")
    width_px = figures.ASSUMED_PLOT_WIDTH_PX
    y_lo, y_hi = fig.layout.yaxis.range
    px_per_y = (fig.layout.height - 30) / (y_hi - y_lo)
    points = sorted(zip(hits.x, hits.y, strict=True))
    closest = min(
        math.hypot((x2 - x1) * width_px, (y2 - y1) * px_per_y)
        for (x1, y1), (x2, y2) in (
            (points[a], points[b])
            for a in range(len(points))
            for b in range(a + 1, min(a + 40, len(points)))
        )
    )
    assert closest >= 5.0, closest
    small = trace(figures.network_figure(make_network([3, 2, 1])), "edges")
    assert {round(y - math.floor(y), 6) for y in small.y} == {0.5}  # sparse: no staggering


def test_edge_figure_thins_many_data_points_evenly():
    n = 1000
    edge = {"x": [0.0, 1.0], "y": [0.0, 1.0], "data_x": list(range(n)), "data_y": list(range(n))}
    data = figures.edge_figure(edge).data[0]
    assert len(data.x) == figures.MAX_EDGE_DATA_POINTS
    assert data.x[0] == 0 and data.x[-1] >= n - n / figures.MAX_EDGE_DATA_POINTS - 1
    assert list(data.x) == list(data.y)  # pairs stay together


def test_loss_figure_marks_the_step_whose_weights_were_kept():
    from app.dashboard.figures import loss_figure

    points = [{"step": s, "train_loss": 1 / s, "val_loss": abs(s - 5) + 1} for s in range(1, 11)]
    marked = loss_figure(points, best_step=5)
    assert [(shape.x0, shape.x1) for shape in marked.layout.shapes] == [(5, 5)]
    assert "step 5" in marked.layout.annotations[0].text
    assert not loss_figure(points).layout.shapes
    assert loss_figure(points, task="regression").layout.yaxis.title.text == (
        "MSE (standardised target)"
    )


def test_input_edges_are_drawn_in_the_columns_own_units():
    from app.dashboard.figures import edge_curves_for_client, edge_figure, in_units

    assert in_units([-1.0, None, 2.0], [10.0, 0.5]) == [9.5, None, 11.0]
    assert in_units([1.0], None) == [1.0]
    edge = {
        "layer": 0, "i": 0, "j": 0, "x": [-1.0, 1.0], "y": [0.0, 1.0], "data_x": [0.0],
        "data_y": [0.5], "input_scale": [8.0, 2.0],
    }  # fmt: skip
    candidate = {"name": "x", "r2": 1.0, "x": [-1.0, 1.0], "y": [0.0, 1.0]}
    fig = edge_figure(edge, input_name="PROPERTY: grain size ($\\mu$m)", candidate=candidate)
    assert [list(t.x) for t in fig.data] == [[8.0], [6.0, 10.0], [6.0, 10.0]]
    assert fig.layout.xaxis.title.text == "PROPERTY: grain size (μm) (data units)"
    hidden = edge_figure({**edge, "layer": 1, "i": 2, "input_scale": None})
    assert hidden.layout.xaxis.title.text == "hidden node 1.2"  # as the diagram labels it
    network = {
        "input_names": ["VEC"], "input_scales": [[8.0, 2.0]],
        "layers": [
            {"index": 0, "in_dim": 1, "out_dim": 1, "edges": [
                {"i": 0, "j": 0, "score": 1.0, "symbolic": None, "active": True,
                 "x": [-1.0, 1.0], "y": [0.0, 1.0]},
            ]},
        ],
    }  # fmt: skip
    client = edge_curves_for_client(network)
    assert client["edges"]["0-0-0"][0] == [6.0, 10.0]
    assert client["x_titles"] == ["VEC (data units)"]


def test_a_zoom_is_remembered_and_reapplied_but_other_relayouts_are_not_zooms():
    import plotly.graph_objects as go

    from app.dashboard.figures import keep_zoom, zoom_from_relayout

    box = {"xaxis.range[0]": 0.3, "xaxis.range[1]": 0.6, "yaxis.range[0]": 0, "yaxis.range[1]": 1}
    zoom = zoom_from_relayout(box)
    assert zoom == {"xaxis": [0.3, 0.6], "yaxis": [0.0, 1.0]}
    assert zoom_from_relayout({"shapes": []}) is None  # the selection outline, not a zoom
    assert zoom_from_relayout({"xaxis.autorange": True}) == {"xaxis": None}
    fig = keep_zoom(go.Figure(layout={"xaxis": {"range": [-0.01, 1.01]}}), zoom)
    assert list(fig.layout.xaxis.range) == [0.3, 0.6]
    reset = keep_zoom(go.Figure(layout={"xaxis": {"range": [-0.01, 1.01]}}), {"xaxis": None})
    assert list(reset.layout.xaxis.range) == [-0.01, 1.01]
