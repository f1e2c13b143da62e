import dash
from dash import html

dash.register_page(__name__, path_template="/runs/<run_id>", name="Run", title="Run · kanscope")


def layout(run_id: str | None = None, **_: object) -> html.Div:
    return html.Div([html.H2(f"Run {run_id}")])
