// Time-series charts (uPlot, static/vendor/uplot/) for
// <div class="chart" id="..." data-src="/…/series/tps.json" data-unit="tx/s" data-window="1h" data-refresh="10">.
// The JSON holds Unix-second timestamps and one value list per series, null where nothing was
// sampled, so a gap stays a gap. No inline script or style: uPlot styles elements through the CSSOM.
(() => {
  const WINDOWS = ["15m", "1h", "6h", "24h", "7d"];
  const COLOURS = ["#2457c5", "#1f8a4c", "#b7791f", "#c53030", "#6b46c1"];
  const HEIGHT = 170;
  const chosen = {}; // window per chart id, kept across htmx swaps of the live region

  function number(value) {
    const abs = Math.abs(value);
    if (abs >= 100) return value.toLocaleString("en", { maximumFractionDigits: 0 });
    if (abs >= 10) return value.toLocaleString("en", { maximumFractionDigits: 1 });
    return value.toLocaleString("en", { maximumFractionDigits: 2 });
  }

  function withUnit(value, unit) {
    if (value == null) return "no sample";
    if (unit === "bytes") {
      let v = value;
      for (const u of ["B", "KB", "MB", "GB"]) {
        if (Math.abs(v) < 1024 || u === "GB") return `${number(v)} ${u}`;
        v /= 1024;
      }
    }
    return `${number(value)} ${unit}`;
  }

  function axisValue(value, unit) {
    return unit === "bytes" ? withUnit(value, unit) : number(value);
  }

  function utc(seconds) { return uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"); }

  function tick(seconds, span_s) {
    const iso = new Date(seconds * 1000).toISOString(); // UTC, like every time on the console
    if (span_s > 86400) return `${iso.slice(5, 10)} ${iso.slice(11, 16)}`;
    if (span_s < 60) return iso.slice(11, 21); // tenths of a second for a span of seconds
    return span_s <= 900 ? iso.slice(11, 19) : iso.slice(11, 16); // seconds for a short span
  }

  function axisSize(u, values) { // wide enough for the longest value and the axis title beside it
    const longest = Math.max(0, ...(values || []).map((v) => String(v).length));
    return Math.max(50, 26 + 7 * longest);
  }

  function stamp(seconds) {
    return seconds == null ? "" : `${new Date(seconds * 1000).toISOString().slice(0, 19).replace("T", " ")} UTC`;
  }

  function options(el, data) {
    const unit = data.unit;
    const span_s = data.to - data.from;
    return {
      width: Math.max(el.clientWidth, 240),
      height: HEIGHT,
      tzDate: utc,
      scales: {
        x: { time: true, range: () => el.chartRange }, // the whole window, samples or not
        y: { range: (u, min, max) => [Math.min(0, min ?? 0), max > 0 ? max * 1.1 : 1] },
      },
      series: [
        { label: "time", value: (u, v) => stamp(v) },
        ...data.series.map((s, i) => ({
          label: s.label, stroke: COLOURS[i % COLOURS.length], width: 1.5, spanGaps: false,
          points: { show: data.t.length < 30 },
          value: (u, v, si, idx) => (idx == null ? "—" : withUnit(v, unit)),
        })),
      ],
      axes: [
        {
          space: span_s > 86400 ? 90 : span_s <= 900 ? 70 : 50,
          values: (u, splits) => splits.map((v) => tick(v, span_s)),
        },
        { label: unit, size: axisSize, values: (u, splits) => splits.map((v) => axisValue(v, unit)) },
      ],
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
    };
  }

  function columns(data) { return [data.t, ...data.series.map((s) => s.values)]; }

  function windowOf(el) { return chosen[el.id] || el.dataset.window || "1h"; }

  async function load(el) {
    const url = new URL(el.dataset.src, window.location.href);
    url.searchParams.set("window", windowOf(el));
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const data = await response.json();
    if (data.window !== windowOf(el)) return; // a newer choice is on its way
    el.chartRange = [data.from, data.to];
    const plot = el.uplot;
    if (plot && el.dataset.drawnWindow === data.window && plot.series.length === data.series.length + 1) {
      plot.setData(columns(data)); // a refresh: keeps the cursor and legend
    } else {
      if (plot) plot.destroy();
      el.uplot = new uPlot(options(el, data), columns(data), el.querySelector(".chart-plot"));
    }
    el.dataset.drawnWindow = data.window;
    el.dataset.samples = String(data.t.length);
    el.drawnAt = Date.now();
    el.querySelector(".chart-empty").hidden = data.t.length > 0;
  }

  function draw(el) {
    load(el).catch((err) => {
      el.querySelector(".chart-empty").hidden = false;
      el.querySelector(".chart-empty").textContent = `Could not load the chart: ${err.message}`;
    });
  }

  function toolbar(el) {
    const bar = document.createElement("div");
    bar.className = "chart-windows";
    for (const name of WINDOWS) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small";
      button.textContent = name;
      button.dataset.chartWindow = name;
      button.addEventListener("click", () => {
        chosen[el.id] = name;
        mark(el);
        draw(el);
      });
      bar.append(button);
    }
    return bar;
  }

  function mark(el) {
    el.querySelectorAll("[data-chart-window]").forEach((b) => {
      b.setAttribute("aria-pressed", String(b.dataset.chartWindow === windowOf(el)));
    });
  }

  function setUp(el) {
    if (el.dataset.chartReady) return;
    el.dataset.chartReady = "true";
    const plot = document.createElement("div");
    plot.className = "chart-plot";
    const empty = document.createElement("p");
    empty.className = "chart-empty muted small";
    empty.textContent = "No samples in this window yet.";
    empty.hidden = true;
    el.replaceChildren(toolbar(el), plot, empty); // drops the server-rendered fallback, if any
    mark(el);
    draw(el);
    const refresh_s = Number(el.dataset.refresh || 0);
    if (refresh_s > 0) {
      const timer = window.setInterval(() => {
        if (!document.contains(el)) { window.clearInterval(timer); return; }
        const minutes = ["24h", "7d"].includes(windowOf(el)); // minute averages change once a minute
        if (!document.hidden && !(minutes && Date.now() - (el.drawnAt || 0) < 60_000)) draw(el);
      }, refresh_s * 1000);
    }
  }

  function setUpAll(root) {
    if (typeof uPlot === "undefined") return; // the fallback stays
    root.querySelectorAll(".chart[data-src]").forEach(setUp);
  }

  document.addEventListener("DOMContentLoaded", () => setUpAll(document));
  // Charts carry hx-preserve in live regions, so a swap keeps them; new ones are drawn here.
  document.addEventListener("htmx:afterSwap", () => setUpAll(document));
  window.addEventListener("resize", () => {
    document.querySelectorAll(".chart[data-src]").forEach((el) => {
      if (el.uplot) el.uplot.setSize({ width: Math.max(el.clientWidth, 240), height: HEIGHT });
    });
  });
})();
