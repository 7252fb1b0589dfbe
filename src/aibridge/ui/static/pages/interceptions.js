// Interceptions: a filterable table, newest first, that polls for new rows; and the
// full record of one interception at /ui/interceptions/<id>. Prompts, tool arguments
// and thoughts are attacker-controlled: they only ever become text nodes.
import {h, replace, errorBox, field, showError} from '../lib/dom.js';
import {formatInt, formatUsd, formatTime, formatDuration, durationBetween, timeElement} from '../lib/format.js';
import {dataTable} from '../lib/table.js';

export const POLL_MS = 3000;
const PAGE_SIZE = 50;
const FILTERS = ['user', 'client', 'model', 'provider', 'since', 'until', 'status', 'error_type'];

function statusCell(row) {
  return row.error_type
    ? h('span', {class: 'status-bad', title: row.error_message || ''}, row.error_type)
    : h('span', {class: 'status-ok'}, 'OK');
}

const COLUMNS = [
  {label: 'Time', key: 'time', value: (r) =>
    h('a', {href: `/ui/interceptions/${encodeURIComponent(r.id)}`}, formatTime(r.started_at))},
  {label: 'User', key: 'user', value: (r) => r.user?.username || r.user?.id || '—'},
  {label: 'Client', key: 'client', value: (r) => r.client || '—'},
  {label: 'Model', key: 'model', value: (r) => r.model || '—'},
  {label: 'Provider', key: 'provider', value: (r) => r.provider_name || r.provider || '—'},
  {label: 'Status', key: 'status', value: statusCell},
  {label: 'Input', key: 'input', numeric: true, value: (r) => formatInt(r.tokens?.input)},
  {label: 'Output', key: 'output', numeric: true, value: (r) => formatInt(r.tokens?.output)},
  {label: 'Cache read', key: 'cache_read', numeric: true, value: (r) => formatInt(r.tokens?.cache_read)},
  {label: 'Cache write', key: 'cache_write', numeric: true, value: (r) => formatInt(r.tokens?.cache_write)},
  {label: 'Cost', key: 'cost_usd', numeric: true, value: (r) => formatUsd(r.cost_usd, r.unpriced)},
  {label: 'Prompt', key: 'prompt', value: (r) => h('span', {class: 'prompt', title: r.prompt || ''},
    r.prompt || '—')},
];

function filterForm(ctx, filters) {
  const isAdmin = ctx.me.role === 'admin';
  const text = (label, name) => field(label, {name, value: filters[name] || '', type: 'text',
    autocomplete: 'off'});
  const fields = [
    isAdmin ? text('User', 'user') : null,
    text('Client', 'client'),
    text('Model', 'model'),
    text('Provider', 'provider'),
    field('Status', {name: 'status', value: filters.status || ''}, {control: 'select',
      options: [['', 'Any'], ['ok', 'OK'], ['error', 'Error']]}),
    text('Error type', 'error_type'),
    field('Since', {name: 'since', type: 'date', value: filters.since || ''}),
    field('Until', {name: 'until', type: 'date', value: filters.until || ''}),
  ].filter(Boolean);
  const form = h('form', {class: 'filters', 'aria-label': 'Filter interceptions', on: {
    submit: (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const {input} of fields) if (input.value.trim()) q.set(input.name, input.value.trim());
      ctx.navigate(q.toString() ? `/ui/interceptions?${q}` : '/ui/interceptions');
    },
  }}, fields.map((f) => f.row), h('button', {type: 'submit'}, 'Filter'),
  h('a', {href: '/ui/interceptions', class: 'reset'}, 'Clear filters'));
  return form;
}

async function renderList(root, ctx) {
  const {api, params, signal} = ctx;
  const filters = {};
  for (const name of FILTERS) {
    const v = params.query.get(name);
    if (v) filters[name] = v;
  }
  // Every filter is applied by the API, so paging and polling only ever see matching rows.
  const apiQuery = {limit: PAGE_SIZE, ...filters};

  const alert = errorBox(null);
  const live = h('p', {class: 'muted', 'aria-live': 'polite', 'data-role': 'live'});
  const more = h('button', {type: 'button', class: 'secondary', hidden: true}, 'Older interceptions');
  const table = dataTable({
    caption: 'Interceptions, newest first',
    columns: COLUMNS,
    empty: 'No interceptions match.',
    rowAttrs: (r) => ({'data-id': r.id}),
  });
  replace(root, h('h1', {tabindex: '-1'}, 'Interceptions'), filterForm(ctx, filters), alert,
    live, table.wrap, h('div', {class: 'toolbar'}, more));

  const known = new Set();
  const keep = (rows) => rows.filter((r) => {
    if (known.has(r.id)) return false;
    known.add(r.id);
    return true;
  });
  const first = await api.get('/api/v1/interceptions', apiQuery);
  table.setRows(keep(first.interceptions));
  let cursor = first.next_cursor;
  more.hidden = !cursor;
  live.textContent = 'Updates every few seconds.';

  more.addEventListener('click', async () => {
    more.disabled = true;
    try {
      const page = await api.get('/api/v1/interceptions', {...apiQuery, cursor});
      table.appendRows(keep(page.interceptions));
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (err) {
      if (err?.name !== 'AbortError') showError(alert, err);
    } finally {
      more.disabled = false;
    }
  });

  // Poll the first page; rows not seen yet are new (newest first, so insert them on top
  // in their order). One request at a time; paused while the tab is hidden.
  let busy = false;
  const poll = async () => {
    if (busy || document.hidden || signal.aborted) return;
    busy = true;
    try {
      const page = await api.get('/api/v1/interceptions', apiQuery);
      const fresh = keep(page.interceptions);
      if (fresh.length) {
        table.prependRows(fresh);
        for (const id of fresh.map((r) => r.id)) {
          table.tbody.querySelector(`tr[data-id="${CSS.escape(id)}"]`)?.classList.add('new');
        }
        live.textContent = `${fresh.length} new interception${fresh.length > 1 ? 's' : ''}.`;
      }
      alert.replaceChildren();
    } catch (err) {
      if (err?.name !== 'AbortError' && !signal.aborted) {
        replace(alert, h('p', null, `Could not refresh: ${err.message}`));
      }
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(poll, POLL_MS);
  signal.addEventListener('abort', () => clearInterval(timer));
}

function toolCall(call) {
  const args = typeof call.arguments === 'string'
    ? call.arguments : JSON.stringify(call.arguments, null, 2);
  return h('li', {class: 'tool-call'},
    h('p', null, h('strong', null, call.name || '(unnamed tool)'), ' ',
      h('span', {class: 'muted'}, call.injected
        ? `injected by the gateway${call.server_url ? ` (${call.server_url})` : ''}` : 'client tool'),
      call.call_id ? h('span', {class: 'muted'}, ` · ${call.call_id}`) : null),
    h('pre', {class: 'text', 'aria-label': `Arguments of ${call.name}`}, args ?? ''),
    call.error ? h('p', {class: 'status-bad'}, `Error: ${call.error}`) : null);
}

async function renderDetail(root, ctx, id) {
  const back = h('p', null, h('a', {href: '/ui/interceptions'}, '← All interceptions'));
  replace(root, back, h('h1', {tabindex: '-1'}, 'Interception'), h('p', {class: 'loading'}, 'Loading…'));
  const r = await ctx.api.get(`/api/v1/interceptions/${encodeURIComponent(id)}`);
  const t = r.tokens || {};
  const row = (label, value) => [h('dt', null, label), h('dd', null, value)];
  const duration = r.duration_ms ?? durationBetween(r.started_at, r.ended_at);
  const thoughts = Array.isArray(r.thoughts) ? r.thoughts : [];
  replace(root, back,
    h('h1', {tabindex: '-1'}, 'Interception'),
    h('dl', {class: 'record'},
      row('ID', r.id),
      row('Started', timeElement(h, r.started_at)),
      row('Duration', formatDuration(duration)),
      row('User', r.user?.username || r.user?.id || '—'),
      row('Client', r.client || '—'),
      row('Client session', r.session_id || '—'),
      row('Provider', `${r.provider_name || '—'} (${r.provider || '—'})`),
      row('Model', r.model || '—'),
      row('Credential', r.credential_kind ? `${r.credential_kind} ${r.credential_hint || ''}`.trim() : '—'),
      row('Status', statusCell(r)),
      r.error_message ? row('Error', r.error_message) : null,
      row('Input tokens', formatInt(t.input)),
      row('Output tokens', formatInt(t.output)),
      row('Cache read tokens', formatInt(t.cache_read)),
      row('Cache write tokens', formatInt(t.cache_write)),
      row('Reasoning tokens', formatInt(t.reasoning)),
      row('Cost', formatUsd(r.cost_usd, r.unpriced))),
    h('h2', null, 'Prompt'),
    h('pre', {class: 'text', 'data-role': 'prompt'}, r.prompt ?? '(none recorded)'),
    h('h2', null, `Tool calls (${(r.tool_calls || []).length})`),
    (r.tool_calls || []).length
      ? h('ol', {class: 'tool-calls'}, r.tool_calls.map(toolCall))
      : h('p', {class: 'muted'}, 'None.'),
    h('h2', null, `Thoughts (${thoughts.length || r.thought_count || 0})`),
    thoughts.length
      ? thoughts.map((text, i) => h('details', null, h('summary', null, `Thought ${i + 1}`),
        h('pre', {class: 'text'}, text)))
      : h('p', {class: 'muted'}, 'None recorded.'));
}

export async function render(root, ctx) {
  const [id] = ctx.params.segments;
  if (id) await renderDetail(root, ctx, id);
  else await renderList(root, ctx);
}
