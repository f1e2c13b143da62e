import dash
from dash import html

dash.register_page(__name__, path="/train", name="Train", title="Train · kanscope")

layout = html.Div([html.H2("Train")])
