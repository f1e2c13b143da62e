"""The run page's message text: auto-symbolic counts, the buttons' words, no cut mid-word."""

from __future__ import annotations

from app.dashboard.messages import auto_symbolic_text, sampled_rows_note, shorten, ui_words


def test_auto_symbolic_counts_each_edge_once():
    # all 32 symbolic: 16 fixed now, 16 before
    everything = {"n_fixed": 16, "n_edges": 32, "n_numeric": 0, "n_already_symbolic": 16}
    assert auto_symbolic_text(everything, 0.9) == (
        "Auto-symbolic fixed 16 of 32 edges; 16 edges already symbolic."
    )
    # 25 pruned, 2 fixed, 5 left: not "30 stayed splines"
    pruned = {"n_fixed": 2, "n_edges": 32, "n_numeric": 5, "n_inactive": 25}
    assert auto_symbolic_text(pruned, 0.99) == (
        "Auto-symbolic fixed 2 of 32 edges; 25 edges pruned or unused; "
        "5 edges left as splines (best R² below 0.99)."
    )
    nothing = {"n_fixed": 0, "n_edges": 4, "n_numeric": 0, "n_inactive": 4}
    assert auto_symbolic_text(nothing, 0.9) == (
        "Auto-symbolic fixed 0 of 4 edges; 4 edges pruned or unused; no edge left to fit."
    )
    # the time budget ran out: the untried edges are not "no edge left to fit"
    late = {"n_fixed": 0, "n_edges": 12, "n_numeric": 0, "n_out_of_time": 12}
    assert auto_symbolic_text(late, 0.9) == (
        "Auto-symbolic fixed 0 of 12 edges; 12 edges left as splines: time ran out "
        "(click again to continue)."
    )


def test_server_messages_use_the_buttons_names_and_are_not_cut_mid_word():
    api = (
        "3 edge(s) are still numeric: (layer 0, 0→0). Fix them (fix or auto_symbolic with a "
        "lower r2_threshold) or prune them before asking for a formula."
    )
    assert ui_words(api) == (
        "3 edge(s) are still numeric: (layer 0, 0→0). Fix them (Fix or Auto-symbolic with a "
        "lower R² threshold) or prune them before asking for a formula."
    )
    long = "word " * 200
    short = shorten(long, 240)
    assert short.endswith("word …") and len(short) <= 242
    assert shorten("short", 240) == "short"


def test_runs_table_cells_say_rows_used_and_settings():
    from app.dashboard.messages import rows_used, settings_text

    assert rows_used({"n_rows_used": 415, "n_rows_dropped": 1130}) == "415 (1,130 dropped)"
    assert rows_used({"n_rows_used": 366, "n_rows_dropped": 0}) == "366"
    assert rows_used({}) == ""
    config = {"steps": 3000, "lr": 0.01, "early_stopping_patience": 100}
    assert settings_text(config) == "3,000 · 0.01 · early stop 100"
    assert settings_text({**config, "early_stopping_patience": None}) == "3,000 · 0.01 · all steps"
    assert settings_text({"model_options": {}}) == ""


def test_sampled_rows_are_named_only_when_sampled():
    sampled = {"rows_used": 2048, "rows_total": 12500}
    assert sampled_rows_note(sampled) == "Computed on 2,048 of 12,500 training rows."
    assert sampled_rows_note(sampled, "Candidates computed").startswith("Candidates computed on")
    assert sampled_rows_note({"rows_used": 300, "rows_total": 300}) is None
    assert sampled_rows_note({"suggestions": []}) is None  # an older server says nothing


def test_compare_config_diff_splits_differing_from_shared_settings():
    from app.dashboard import create_dash_app

    create_dash_app("http://127.0.0.1:9/api")  # pages register with an app
    from app.dashboard.pages.compare import config_diff

    shared = {"steps": 300, "hidden": [5], "train_rows": list(range(1200))}
    runs = [
        {"id": 4, "config": shared | {"lr": 0.01, "early_stopping_patience": 100}},
        {"id": 7, "config": shared | {"lr": 0.1, "model_options": {"members": 5}}},
    ]
    differing, same = config_diff(runs)
    assert [r["setting"] for r in differing] == ["early_stopping_patience", "lr", "model_options"]
    assert differing[0] == {"setting": "early_stopping_patience", "4": "100", "7": "–"}
    assert differing[2]["7"] == "members=5" and differing[2]["4"] == "–"
    assert [r["setting"] for r in same] == ["hidden", "steps", "train_rows"]
    assert same[2]["4"] == same[2]["7"] == "1,200 rows"  # row lists are counted, not listed
    assert config_diff(runs[:1])[0] == []  # one run: nothing differs
    assert config_diff([{"id": 1, "config": None}, {"id": 2}]) == ([], [])
