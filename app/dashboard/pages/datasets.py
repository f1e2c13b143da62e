import dash
from dash import html

dash.register_page(__name__, path="/", name="Datasets", title="Datasets · kanscope")

layout = html.Div([html.H2("Datasets")])
