import dash
from dash import html

dash.register_page(__name__, path="/runs", name="Runs", title="Runs · kanscope")

layout = html.Div([html.H2("Runs")])
