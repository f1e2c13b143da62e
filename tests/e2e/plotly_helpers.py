"""Reading and clicking Plotly graphs of the dashboard from Playwright.

A Plotly point is covered by the drag layer, so a test converts data coordinates to page pixels
through ``gd._fullLayout`` (``rect.left + xaxis._offset + xaxis.l2p(x)``), moves the mouse there,
waits for the hover label to name the edge, then clicks. No in-page promise is ever returned
un-settled (``page.evaluate`` would wait for it without a timeout).
"""

from __future__ import annotations

from typing import Any

TRACES_JS = """(graphId) => {
  const gd = document.querySelector(`#${graphId} .js-plotly-plot`);
  if (!gd || !gd.data) return null;
  return gd.data.map(t => ({name: t.name || null, n: (t.x || []).length}));
}"""

EDGE_POSITION_JS = """([graphId, index]) => {
  const gd = document.querySelector(`#${graphId} .js-plotly-plot`);
  const trace = gd.data.find(t => t.name === 'edges');
  const fl = gd._fullLayout;
  let rect = gd.getBoundingClientRect();
  const pointY = rect.top + fl.yaxis._offset + fl.yaxis.l2p(trace.y[index]);
  if (pointY < 40 || pointY > window.innerHeight - 40) {  // bring the point into the viewport
    window.scrollBy(0, pointY - window.innerHeight / 2);
    rect = gd.getBoundingClientRect();
  }
  return {
    x: rect.left + fl.xaxis._offset + fl.xaxis.l2p(trace.x[index]),
    y: rect.top + fl.yaxis._offset + fl.yaxis.l2p(trace.y[index]),
    address: trace.customdata[index],
    count: trace.x.length,
  };
}"""

LAYOUT_TITLE_JS = """(graphId) => {
  const gd = document.querySelector(`#${graphId} .js-plotly-plot`);
  return gd && gd.layout && gd.layout.title ? (gd.layout.title.text || '') : '';
}"""


def traces(page: Any, graph_id: str) -> list[dict[str, Any]] | None:
    """``[{name, n}]`` of the Plotly graph inside ``#graph_id`` (``None`` before it renders)."""
    return page.evaluate(TRACES_JS, graph_id)


def trace_length(page: Any, graph_id: str, name: str) -> int:
    for t in traces(page, graph_id) or []:
        if t["name"] == name:
            return int(t["n"])
    return 0


def wait_for_trace(page: Any, graph_id: str, name: str, timeout_ms: int = 90_000) -> None:
    page.wait_for_function(
        """([graphId, name]) => {
          const gd = document.querySelector(`#${graphId} .js-plotly-plot`);
          return !!(gd && gd.data && gd.data.some(t => t.name === name && (t.x || []).length));
        }""",
        arg=[graph_id, name],
        timeout=timeout_ms,
    )


def edge_position(page: Any, graph_id: str, index: int) -> dict[str, Any]:
    return page.evaluate(EDGE_POSITION_JS, [graph_id, index])


def hover_edge(page: Any, graph_id: str, index: int) -> dict[str, Any]:
    """Move the mouse onto edge ``index``'s hit marker and wait for its hover label.

    In a dense layer the slots are ~3 px apart and the browser reports whole-pixel mouse
    positions, so the nearest point can be a neighbour: nudge by a pixel until the label names
    the edge (a user sees the same label before clicking)."""
    pos = edge_position(page, graph_id, index)
    layer, i, j = pos["address"]
    label = f"φ[{layer}] {i}→{j}"
    page.mouse.move(pos["x"] - 3, pos["y"] - 3)
    for dx in (0, 1, -1, 2, -2):
        page.mouse.move(pos["x"] + dx, pos["y"])
        try:
            page.wait_for_function(
                """([graphId, label]) => {
                  const el = document.querySelector(`#${graphId} .hoverlayer .hovertext`);
                  return !!(el && el.textContent.includes(label));
                }""",
                arg=[graph_id, label],
                timeout=1_500 if dx == 0 else 600,
            )
        except Exception:
            continue
        return {**pos, "x": pos["x"] + dx}
    shown = page.evaluate(
        """(graphId) => {
          const el = document.querySelector(`#${graphId} .hoverlayer .hovertext`);
          return el ? el.textContent : null;
        }""",
        graph_id,
    )
    raise AssertionError(f"hovering {label} at {pos} shows {shown!r}")


def click_edge(page: Any, graph_id: str, index: int) -> list[int]:
    pos = hover_edge(page, graph_id, index)
    page.mouse.click(pos["x"], pos["y"])
    return list(pos["address"])


def layout_title(page: Any, graph_id: str) -> str:
    return page.evaluate(LAYOUT_TITLE_JS, graph_id)
