// SVG charts built node by node (createElementNS + text nodes): labels come from data
// (model names, usernames) and must stay text. Colours come from app.css classes
// (.series-0 … .series-7): the CSP forbids inline styles.
import {h, svg} from './dom.js';

const WIDTH = 720;
const HEIGHT = 260;
const PAD = {top: 16, right: 16, bottom: 44, left: 72};
export const PALETTE_SIZE = 8;

function niceMax(value) {
  if (value <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * exp >= value) return step * exp;
  }
  return 10 * exp;
}

function frame(title, maxValue, formatValue, categories, slot) {
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const top = niceMax(maxValue);
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const root = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': title,
    class: 'chart', preserveAspectRatio: 'xMidYMid meet',
  }, svg('title', null, title));
  const grid = svg('g', {class: 'grid'});
  for (let i = 0; i <= 4; i += 1) {
    const v = (top * i) / 4;
    grid.appendChild(svg('line', {x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v)}));
    grid.appendChild(svg('text', {x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end',
      class: 'axis-label'}, formatValue(v)));
  }
  root.appendChild(grid);
  // At most ~12 category labels so they never overlap.
  const every = Math.max(1, Math.ceil(categories.length / 12));
  const labels = svg('g', {class: 'x-labels'});
  categories.forEach((c, i) => {
    if (i % every) return;
    labels.appendChild(svg('text', {x: PAD.left + slot * (i + 0.5), y: HEIGHT - PAD.bottom + 16,
      'text-anchor': 'middle', class: 'axis-label'}, c));
  });
  root.appendChild(labels);
  return {root, y, plotH, top};
}

function legend(series) {
  if (series.length < 2) return null;
  return h('ul', {class: 'legend'}, series.map((s, i) =>
    h('li', null, h('span', {class: `swatch series-${i % PALETTE_SIZE}`, 'aria-hidden': 'true'}),
      s.name)));
}

/**
 * Stacked bar chart. categories: x labels (e.g. days); series: [{name, values}] with one
 * value per category; formatValue: number -> axis/tooltip text. Returns a <figure>.
 */
export function barChart({title, categories, series, formatValue = String}) {
  const totals = categories.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const slot = (WIDTH - PAD.left - PAD.right) / Math.max(1, categories.length);
  const {root, y} = frame(title, Math.max(0, ...totals), formatValue, categories, slot);
  const bars = svg('g', {class: 'bars'});
  const barW = Math.max(2, slot * 0.7);
  categories.forEach((cat, i) => {
    let base = 0;
    series.forEach((s, si) => {
      const v = s.values[i] || 0;
      if (v <= 0) return;
      const y0 = y(base);
      const y1 = y(base + v);
      bars.appendChild(svg('rect', {
        x: PAD.left + slot * i + (slot - barW) / 2, y: y1, width: barW,
        height: Math.max(0.5, y0 - y1), class: `series-${si % PALETTE_SIZE}`,
      }, svg('title', null, `${cat} · ${s.name}: ${formatValue(v)}`)));
      base += v;
    });
  });
  root.appendChild(bars);
  return h('figure', {class: 'chart-figure'}, root, legend(series),
    h('figcaption', null, title));
}

/** Line chart with the same arguments as barChart (one polyline per series). */
export function lineChart({title, categories, series, formatValue = String}) {
  const max = Math.max(0, ...series.flatMap((s) => s.values.map((v) => v || 0)));
  const slot = (WIDTH - PAD.left - PAD.right) / Math.max(1, categories.length);
  const {root, y} = frame(title, max, formatValue, categories, slot);
  series.forEach((s, si) => {
    const points = s.values.map((v, i) => `${PAD.left + slot * (i + 0.5)},${y(v || 0)}`);
    const g = svg('g', {class: `line series-${si % PALETTE_SIZE}`});
    g.appendChild(svg('polyline', {points: points.join(' '), fill: 'none'}));
    s.values.forEach((v, i) => g.appendChild(svg('circle', {
      cx: PAD.left + slot * (i + 0.5), cy: y(v || 0), r: 3,
    }, svg('title', null, `${categories[i]} · ${s.name}: ${formatValue(v || 0)}`))));
    root.appendChild(g);
  });
  return h('figure', {class: 'chart-figure'}, root, legend(series),
    h('figcaption', null, title));
}
