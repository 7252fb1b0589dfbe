// Usage: tokens, requests and cost over a date range, grouped by user, key, model,
// provider or client — a chart per day and the same numbers in a table, straight from
// GET /api/v1/usage (never recomputed), plus the signed-in user's budget from /api/v1/me.
import {h, replace, errorBox, field} from '../lib/dom.js';
import {formatInt, formatUsd, formatTime, isoDate} from '../lib/format.js';
import {dataTable} from '../lib/table.js';
import {barChart} from '../lib/chart.js';

const GROUPS = [['user', 'User'], ['key', 'Key'], ['model', 'Model'], ['provider', 'Provider'],
  ['client', 'Client']];
const METRICS = [
  ['cost_usd', 'Cost (USD)'], ['interceptions', 'Requests'], ['input', 'Input tokens'],
  ['output', 'Output tokens'], ['cache_read', 'Cache read tokens'],
  ['cache_write', 'Cache write tokens'],
];
const MAX_SERIES = 7; // more groups than this are summed into "Other" in the chart
const DAY_MS = 86_400_000;

function groupLabel(groupBy, row) {
  if (groupBy === 'key') {
    if (row.key === '-') return 'no key';
    return `${row.name || 'unnamed'} (${row.user || '?'}) ${row.key}`;
  }
  return row.key === '-' ? 'none' : row.key;
}

function formatMetric(metric, value) {
  return metric === 'cost_usd' ? formatUsd(value) : formatInt(value);
}

function defaults(query) {
  const today = new Date();
  const to = query.get('to') || isoDate(today);
  const from = query.get('from') || isoDate(new Date(Date.parse(to) - 6 * DAY_MS));
  const groupBy = GROUPS.some(([g]) => g === query.get('group_by')) ? query.get('group_by') : 'user';
  const metric = METRICS.some(([m]) => m === query.get('metric')) ? query.get('metric') : 'cost_usd';
  return {from, to, groupBy, metric};
}

function daysBetween(from, to) {
  const days = [];
  for (let t = Date.parse(from); t <= Date.parse(to) && days.length < 400; t += DAY_MS) {
    days.push(isoDate(new Date(t)));
  }
  return days;
}

function budgetCard(me) {
  const b = me.budget;
  if (!b) {
    return h('section', {class: 'budget', 'aria-labelledby': 'budget-title'},
      h('h2', {id: 'budget-title'}, 'Your budget'),
      h('p', {class: 'muted'}, 'No budget applies to your key.'));
  }
  const state = b.exceeded ? ['status-bad', 'Exceeded: requests are refused until it resets']
    : b.soft_exceeded ? ['status-warn', 'Past the warning threshold'] : ['status-ok', 'Within budget'];
  return h('section', {class: 'budget', 'aria-labelledby': 'budget-title'},
    h('h2', {id: 'budget-title'}, 'Your budget'),
    h('dl', {class: 'cards'},
      h('div', {class: 'card'}, h('dt', null, `Budget (per ${b.period}, ${b.scope})`),
        h('dd', {'data-budget': 'amount'}, formatUsd(b.amount_usd))),
      h('div', {class: 'card'}, h('dt', null, 'Spent this period'),
        h('dd', {'data-budget': 'spent'}, formatUsd(b.spent_usd))),
      h('div', {class: 'card'}, h('dt', null, 'Left'),
        h('dd', {'data-budget': 'remaining'}, formatUsd(b.remaining_usd))),
      h('div', {class: 'card'}, h('dt', null, 'Resets'),
        h('dd', {class: 'small'}, formatTime(b.resets_at)))),
    h('p', {class: state[0], 'data-budget': 'state'}, state[1]));
}

/** Per-day series for the chart: [{name, values}] over `days`. */
function seriesFrom(rows, groupBy, metric, days) {
  const index = new Map(days.map((d, i) => [d, i]));
  const byKey = new Map();
  const totals = new Map();
  for (const row of rows) {
    const name = groupLabel(groupBy, row);
    if (!byKey.has(name)) byKey.set(name, new Array(days.length).fill(0));
    const i = index.get(row.day);
    if (i !== undefined) byKey.get(name)[i] += Number(row[metric] || 0);
    totals.set(name, (totals.get(name) || 0) + Number(row[metric] || 0));
  }
  const names = [...byKey.keys()].sort((a, b) => totals.get(b) - totals.get(a));
  const series = names.slice(0, MAX_SERIES).map((name) => ({name, values: byKey.get(name)}));
  if (names.length > MAX_SERIES) {
    const other = new Array(days.length).fill(0);
    for (const name of names.slice(MAX_SERIES)) byKey.get(name).forEach((v, i) => { other[i] += v; });
    series.push({name: 'Other', values: other});
  }
  return series;
}

/** Sum USD amounts exactly (the API's are exact to the pico-dollar). */
function sumUsd(values) {
  let pico = 0n;
  for (const v of values) pico += BigInt(Math.round(Number(v || 0) * 1e12));
  return Number(pico) / 1e12;
}

export async function render(root, ctx) {
  const {api, params, navigate} = ctx;
  const state = defaults(params.query);
  const from = field('From', {type: 'date', name: 'from', value: state.from, required: true});
  const to = field('To', {type: 'date', name: 'to', value: state.to, required: true});
  const group = field('Group by', {name: 'group_by', value: state.groupBy},
    {control: 'select', options: GROUPS});
  const metric = field('Chart', {name: 'metric', value: state.metric},
    {control: 'select', options: METRICS});
  const form = h('form', {class: 'filters', 'aria-label': 'Usage range', on: {submit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams({from: from.input.value, to: to.input.value,
      group_by: group.input.value, metric: metric.input.value});
    navigate(`/ui/usage?${q}`);
  }}}, from.row, to.row, group.row, metric.row, h('button', {type: 'submit'}, 'Show'));
  const alert = errorBox(null);
  const body = h('div', {class: 'usage-body'}, h('p', {class: 'loading'}, 'Loading…'));
  replace(root, h('h1', {tabindex: '-1'}, 'Usage'), form, alert, body);

  if (state.from > state.to) {
    replace(alert, h('p', null, '"From" must not be after "To".'));
    replace(body);
    return;
  }
  // Dates are whole UTC days; the API's until is exclusive.
  const range = {since: state.from, until: isoDate(new Date(Date.parse(state.to) + DAY_MS))};
  const [me, report, perDay] = await Promise.all([
    api.get('/api/v1/me'),
    api.get('/api/v1/usage', {group_by: state.groupBy, ...range}),
    api.get('/api/v1/usage', {group_by: state.groupBy, interval: 'day', ...range}),
  ]).catch((err) => {
    replace(body);
    throw err;
  });
  const days = daysBetween(state.from, state.to);
  let chartRows = perDay.rows;
  let groupBy = state.groupBy;
  if (perDay.interval !== 'day') {
    // An older gateway without ?interval=day: per-day totals, one series.
    const totals = await api.get('/api/v1/usage', {group_by: 'day', ...range});
    chartRows = totals.rows.map((r) => ({...r, day: r.key, key: 'All'}));
    groupBy = 'all';
  }
  const rows = report.rows;
  const metricLabel = METRICS.find(([m]) => m === state.metric)[1];
  const series = seriesFrom(chartRows, groupBy, state.metric, days);
  const groupName = GROUPS.find(([g]) => g === state.groupBy)[1];

  const totals = h('dl', {class: 'cards', 'aria-label': 'Totals for the range'},
    h('div', {class: 'card'}, h('dt', null, 'Requests'),
      h('dd', {'data-total': 'interceptions'}, formatInt(rows.reduce((s, r) => s + r.interceptions, 0)))),
    h('div', {class: 'card'}, h('dt', null, 'Input tokens'),
      h('dd', {'data-total': 'input'}, formatInt(rows.reduce((s, r) => s + r.input, 0)))),
    h('div', {class: 'card'}, h('dt', null, 'Output tokens'),
      h('dd', {'data-total': 'output'}, formatInt(rows.reduce((s, r) => s + r.output, 0)))),
    h('div', {class: 'card'}, h('dt', null, 'Cache read / write'),
      h('dd', null, `${formatInt(rows.reduce((s, r) => s + r.cache_read, 0))} / ` +
        formatInt(rows.reduce((s, r) => s + r.cache_write, 0)))),
    h('div', {class: 'card'}, h('dt', null, 'Cost'),
      h('dd', {'data-total': 'cost_usd'}, formatUsd(sumUsd(rows.map((r) => r.cost_usd)),
        rows.some((r) => r.unpriced)))));

  const table = dataTable({
    caption: `Usage by ${groupName.toLowerCase()}, ${state.from} to ${state.to} (UTC)`,
    empty: 'No requests in this range.',
    rowAttrs: (r) => ({'data-key': r.key}),
    columns: [
      {label: groupName, key: 'key', value: (r) => groupLabel(state.groupBy, r)},
      {label: 'Requests', key: 'interceptions', numeric: true, value: (r) => formatInt(r.interceptions)},
      {label: 'Input', key: 'input', numeric: true, value: (r) => formatInt(r.input)},
      {label: 'Output', key: 'output', numeric: true, value: (r) => formatInt(r.output)},
      {label: 'Cache read', key: 'cache_read', numeric: true, value: (r) => formatInt(r.cache_read)},
      {label: 'Cache write', key: 'cache_write', numeric: true, value: (r) => formatInt(r.cache_write)},
      {label: 'Cost', key: 'cost_usd', numeric: true, value: (r) => formatUsd(r.cost_usd, r.unpriced)},
    ],
    rows,
  });

  replace(body,
    budgetCard(me),
    h('h2', null, 'Totals'),
    totals,
    h('h2', null, `${metricLabel} per day`),
    series.length ? barChart({
      title: `${metricLabel} per day by ${groupBy === 'all' ? 'day' : groupName.toLowerCase()}`,
      categories: days.map((d) => d.slice(5)),
      series,
      formatValue: (v) => formatMetric(state.metric, v),
    }) : h('p', {class: 'muted'}, 'Nothing to chart in this range.'),
    h('h2', null, 'Table'),
    table.wrap);
}
