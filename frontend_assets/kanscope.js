/* Clientside callbacks of the kanscope dashboard (loaded by Dash from the assets folder). */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  kanscope: {
    /* Outline the clicked edge's slot on the diagram without a figure round trip. */
    highlightEdge: function (clickData, diagram) {
      const noUpdate = window.dash_clientside.no_update;
      if (!clickData || !clickData.points || !diagram || !diagram.width) return noUpdate;
      const point = clickData.points.find(
        (p) => Array.isArray(p.customdata) && p.customdata.length === 3
      );
      if (!point) return noUpdate;
      const [layer, i, j] = point.customdata;
      const width = diagram.width;
      const slots = width[layer] * width[layer + 1];
      const cx = (i * width[layer + 1] + j + 0.5) / slots;
      const style = diagram.shape;
      const half = Math.max(style.slot_fill / slots / 2, style.min_half);
      const gd = document.querySelector("#run-network .js-plotly-plot");
      if (!gd || !window.Plotly) return noUpdate;
      window.Plotly.relayout(gd, {
        shapes: [
          {
            type: "rect", xref: "x", yref: "y", layer: "above", name: style.name,
            x0: cx - half, x1: cx + half, y0: layer + style.bottom, y1: layer + style.top,
            line: style.line,
          },
        ],
      });
      return [layer, i, j];
    },

    /* Click on an edge → draw its curve at once from the curves the page already holds; the
       server callback then replaces the figure with the full detail (data points, candidates). */
    edgePreview: function (clickData, curves) {
      const noUpdate = window.dash_clientside.no_update;
      if (!clickData || !clickData.points || !curves || !curves.edges) return noUpdate;
      const point = clickData.points.find(
        (p) => Array.isArray(p.customdata) && p.customdata.length === 3
      );
      if (!point) return noUpdate;
      const [layer, i, j] = point.customdata;
      const curve = curves.edges[layer + "-" + i + "-" + j];
      if (!curve) return noUpdate;
      const [xs, ys, symbolic] = curve;
      const input = layer === 0 && curves.inputs ? curves.inputs[i] : null;
      const title = "φ[" + layer + "] " + i + "→" + j + (input ? " (" + input + ")" : "");
      return {
        data: [
          {
            x: xs, y: ys, mode: "lines", type: "scatter",
            name: symbolic ? "φ(x) = " + symbolic : "φ(x) (spline)",
            line: { color: symbolic ? "#c0392b" : "#1f2d3d", width: 2.5 },
          },
        ],
        layout: {
          title: { text: title, font: { size: 14 } },
          height: 340,
          margin: { l: 50, r: 10, t: 40, b: 40 },
          xaxis: { title: { text: "input" + (input ? " (" + input + ")" : "") } },
          yaxis: { title: { text: "φ(x)" } },
          legend: { orientation: "h", y: -0.2 },
          showlegend: true,
          plot_bgcolor: "#fafafa",
          uirevision: "edge-" + layer + "-" + i + "-" + j,
          annotations: [
            {
              text: "loading data points…", xref: "paper", yref: "paper", x: 1, y: 1.1,
              showarrow: false, font: { size: 11, color: "#6b7785" },
            },
          ],
        },
      };
    },
  },
});
