// Plots for the DiLoCo console, drawn as SVG by hand: no library, no inline code. Exposes
// window.DilocoPlot.plot(svgElement, series, xName, yName), where each series is
// {points: [{x, y, label}], marker: 'circle' | 'square'}.
'use strict';

(function () {
  const SVG = 'http://www.w3.org/2000/svg';

  function svg(name, attributes, parent) {
    const element = document.createElementNS(SVG, name);
    for (const key of Object.keys(attributes)) {
      element.setAttribute(key, String(attributes[key]));
    }
    if (parent) {
      parent.appendChild(element);
    }
    return element;
  }

  function tickLabel(value) {
    const magnitude = Math.abs(value);
    if (magnitude >= 1e6) return (value / 1e6).toFixed(1) + 'M';
    if (magnitude >= 1e3) return (value / 1e3).toFixed(1) + 'k';
    if (magnitude >= 10 || value === 0) return value.toFixed(0);
    // 0.000263 would be wider than the margin left of the axis.
    if (magnitude < 0.01) return value.toExponential(1);
    return value.toPrecision(3);
  }

  // Draws series of {x, y, label} points: axes, a line per series, a marker per point.
  function plot(target, series, xName, yName) {
    const width = 640, height = 240, left = 56, right = 12, top = 24, bottom = 36;
    target.replaceChildren();
    const all = series.flatMap((s) => s.points);
    if (all.length === 0) {
      svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'empty' }, target)
        .textContent = 'no data yet';
      return;
    }
    let [x0, x1] = [Math.min(...all.map((p) => p.x)), Math.max(...all.map((p) => p.x))];
    let [y0, y1] = [Math.min(...all.map((p) => p.y)), Math.max(...all.map((p) => p.y))];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { const pad = Math.abs(y0) * 0.1 || 1; y0 -= pad; y1 += pad; }
    const sx = (x) => left + (x - x0) / (x1 - x0) * (width - left - right);
    const sy = (y) => height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom);
    svg('line', { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, class: 'axis' }, target);
    svg('line', { x1: left, y1: top, x2: left, y2: height - bottom, class: 'axis' }, target);
    for (let i = 0; i <= 4; i++) {
      const yv = y0 + (y1 - y0) * i / 4;
      const xv = x0 + (x1 - x0) * i / 4;
      svg('text', { x: left - 6, y: sy(yv) + 4, 'text-anchor': 'end', class: 'tick' }, target).textContent = tickLabel(yv);
      svg('text', { x: sx(xv), y: height - bottom + 16, 'text-anchor': 'middle', class: 'tick' }, target).textContent = tickLabel(xv);
    }
    svg('text', { x: width - right, y: height - 4, 'text-anchor': 'end', class: 'axis-name' }, target).textContent = xName;
    // Above the plot area, clear of the top tick label.
    svg('text', { x: 4, y: 14, class: 'axis-name' }, target).textContent = yName;
    series.forEach((s, index) => {
      if (s.points.length === 0) return;
      const path = s.points.map((p, i) => (i === 0 ? 'M' : 'L') + sx(p.x).toFixed(1) + ' ' + sy(p.y).toFixed(1)).join(' ');
      svg('path', { d: path, class: 'series series-' + index }, target);
      for (const p of s.points) {
        const marker = s.marker === 'square'
          ? svg('rect', { x: sx(p.x) - 3, y: sy(p.y) - 3, width: 6, height: 6, class: 'point series-' + index }, target)
          : svg('circle', { cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r: 3, class: 'point series-' + index }, target);
        svg('title', {}, marker).textContent = p.label;
      }
    });
  }

  window.DilocoPlot = { plot: plot };
})();
