import dash
from dash import html

dash.register_page(__name__, path="/compare", name="Compare", title="Compare · kanscope")

layout = html.Div([html.H2("Compare")])
