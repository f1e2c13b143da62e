/* Clientside callbacks of the kanscope dashboard (loaded by Dash from the assets folder). */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  kanscope: {
    /* Outline the selected edge's slot on the diagram without a figure round trip. Runs when
       the browser is idle (after the edge plot is painted): a relayout of a 400-edge diagram
       done in the click's own frame delayed the edge plot by ~150 ms. */
    highlightEdge: function (selected, diagram) {
      const noUpdate = window.dash_clientside.no_update;
      if (!Array.isArray(selected) || selected.length !== 3 || !diagram || !diagram.width) {
        return noUpdate;
      }
      const [layer, i, j] = selected;
      const width = diagram.width;
      if (layer < 0 || layer >= width.length - 1) return noUpdate;
      const slots = width[layer] * width[layer + 1];
      const cx = (i * width[layer + 1] + j + 0.5) / slots;
      const style = diagram.shape;
      const half = Math.max(style.slot_fill / slots / 2, style.min_half);
      const shape = {
        type: "rect", xref: "x", yref: "y", layer: "above", name: style.name,
        x0: cx - half, x1: cx + half, y0: layer + style.bottom, y1: layer + style.top,
        line: style.line,
      };
      /* Plotly.update, not relayout: Dash 4.4's dcc.Graph copies what a plotly_relayout event
         changed back into its figure prop, which re-plots the whole diagram (250-350 ms of the
         main thread per click); plotly_update is not listened to. */
      const draw = () => {
        const gd = document.querySelector("#run-network .js-plotly-plot");
        if (gd && window.Plotly && gd._fullLayout) {
          window.Plotly.update(gd, {}, { shapes: [shape] });
        }
      };
      if (window.requestIdleCallback) window.requestIdleCallback(draw, { timeout: 1000 });
      else window.setTimeout(draw, 200);
      return selected;
    },
    /* A notification (app/dashboard/toasts.py) in the corner for toast.ms, outside what Dash
       redraws, so the refresh an edit causes never clears it. */
    showToast: function (toast) {
      const noUpdate = window.dash_clientside.no_update;
      const box = document.getElementById("toasts");
      if (!toast || typeof toast.text !== "string" || !box) return noUpdate;
      const kind = ["success", "info", "warning", "danger"].includes(toast.kind)
        ? toast.kind : "info";
      const el = document.createElement("div");
      el.className = "toast alert alert-" + kind;
      el.textContent = toast.text;  // text only, never HTML
      const close = document.createElement("button");
      close.className = "toast-close";
      close.setAttribute("aria-label", "Dismiss");
      close.textContent = "×";
      close.onclick = () => el.remove();
      el.appendChild(close);
      box.appendChild(el);
      window.setTimeout(() => el.remove(), Number(toast.ms) > 0 ? Number(toast.ms) : 6000);
      return toast.id || null;
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
          xaxis: {
            title: {
              text: layer === 0 && curves.x_titles && curves.x_titles[i]
                ? curves.x_titles[i] : "hidden node " + layer + "." + i,
            },
          },
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
