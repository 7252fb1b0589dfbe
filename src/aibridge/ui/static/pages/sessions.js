// Sessions: agent sessions (grouped by the client's session id) and a replay of one
// session turn by turn, built only on GET /api/v1/sessions and /api/v1/sessions/{id}.
// Prompts, thoughts, tool arguments and errors are attacker-controlled: text nodes only.
import {h, replace, errorBox, showError, field} from '../lib/dom.js';
import {dataTable} from '../lib/table.js';
import {formatInt, formatUsd, formatPercent, formatDuration, timeElement} from '../lib/format.js';
import {badge, shorten} from '../lib/pagekit.js';

const PAGE_SIZE = 50;
// Filters of the list: query parameter -> label. They live in the page URL so a filtered
// list can be bookmarked and shared, like the API call it mirrors.
const TEXT_FILTERS = [
  ['client', 'Client'],
  ['model', 'Model'],
  ['provider', 'Provider'],
];

/** Page entry point (see app.js): the list, or one session when the path has an id. */
export async function render(root, ctx) {
  const [id] = ctx.params.segments;
  if (id) return renderSession(root, ctx, id);
  return renderList(root, ctx);
}

// --- the list -------------------------------------------------------------------------

function tokensSummary(t) {
  const tokens = t || {};
  return h('span', {class: 'tokens'},
    h('span', null, `in ${formatInt(tokens.input)}`), ' · ',
    h('span', null, `out ${formatInt(tokens.output)}`), ' · ',
    h('span', null, `cache read ${formatInt(tokens.cache_read)}`), ' · ',
    h('span', null, `cache write ${formatInt(tokens.cache_write)}`));
}

function sessionLabel(s) {
  // A request without a session id is a one-turn session: say so rather than show "null".
  return s.client_session_id ? shorten(s.client_session_id, 18) : 'single request';
}

function userName(user) {
  if (!user) return '—';
  return user.username || user.id || '—';
}

const LIST_COLUMNS = [
  {label: 'Session', key: 'session',
    value: (s) => h('a', {href: `/ui/sessions/${encodeURIComponent(s.id)}`}, sessionLabel(s))},
  {label: 'User', key: 'user', value: (s) => userName(s.user)},
  {label: 'Client', key: 'client', value: (s) => s.client || '—'},
  {label: 'First activity', key: 'first_at', value: (s) => timeElement(h, s.first_at)},
  {label: 'Last activity', key: 'last_at', value: (s) => timeElement(h, s.last_at)},
  {label: 'Interceptions', key: 'interceptions', numeric: true,
    value: (s) => formatInt(s.interception_count)},
  {label: 'Tokens', key: 'tokens', value: (s) => tokensSummary(s.tokens)},
  {label: 'Cost', key: 'cost', numeric: true, value: (s) => formatUsd(s.cost_usd, s.unpriced)},
  {label: 'Errors', key: 'errors', numeric: true,
    value: (s) => (s.error_count ? badge(formatInt(s.error_count), 'bad') : '0')},
];

function filterForm(ctx, query) {
  const inputs = {};
  const rows = [];
  if (ctx.me.role === 'admin') {
    const f = field('User', {name: 'user', value: query.get('user') || '',
      placeholder: 'username or id'});
    inputs.user = f.input;
    rows.push(f.row);
  }
  for (const [name, label] of TEXT_FILTERS) {
    const f = field(label, {name, value: query.get(name) || ''});
    inputs[name] = f.input;
    rows.push(f.row);
  }
  for (const [name, label] of [['since', 'From'], ['until', 'To']]) {
    const f = field(label, {name, type: 'date', value: query.get(name) || ''});
    inputs[name] = f.input;
    rows.push(f.row);
  }
  const errors = field('Errors', {name: 'has_errors', value: query.get('has_errors') || ''},
    {control: 'select', options: [['', 'Any'], ['true', 'With errors'],
      ['false', 'Without errors']]});
  inputs.has_errors = errors.input;
  rows.push(errors.row);
  const form = h('form', {class: 'filters', role: 'search', 'aria-label': 'Filter sessions',
    on: {submit: (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      for (const [name, input] of Object.entries(inputs)) {
        const v = input.value.trim();
        if (v) next.set(name, v);
      }
      const qs = next.toString();
      ctx.navigate(qs ? `/ui/sessions?${qs}` : '/ui/sessions');
    }}},
  rows,
  h('div', {class: 'actions'},
    h('button', {type: 'submit'}, 'Apply filters'),
    h('a', {href: '/ui/sessions', class: 'button secondary'}, 'Clear')));
  return form;
}

/** The API query of the page URL: the filters as given; dates widen to whole UTC days
 * (the API reads YYYY-MM-DD as that day's midnight, so "To" is made inclusive). */
function apiQuery(query) {
  const out = {limit: PAGE_SIZE};
  for (const name of ['user', 'client', 'model', 'provider', 'since', 'has_errors']) {
    const v = query.get(name);
    if (v) out[name] = v;
  }
  const until = query.get('until');
  if (until) {
    const d = new Date(`${until}T00:00:00Z`);
    if (Number.isNaN(d.getTime())) out.until = until; // let the API say what is wrong
    else out.until = new Date(d.getTime() + 86_400_000).toISOString().replace('.000Z', 'Z');
  }
  return out;
}

async function renderList(root, ctx) {
  const query = ctx.params.query;
  const alert = errorBox(null);
  const {wrap, setRows} = dataTable({
    caption: 'Agent sessions, newest first',
    columns: LIST_COLUMNS,
    empty: 'No sessions match these filters.',
    rowAttrs: (s) => ({'data-session': s.id}),
  });
  const pageInfo = h('span', {class: 'page-info', 'aria-live': 'polite'});
  const prevButton = h('button', {type: 'button', class: 'secondary'}, 'Previous page');
  const nextButton = h('button', {type: 'button'}, 'Next page');
  const pager = h('div', {class: 'pager'}, prevButton, pageInfo, nextButton);
  replace(root,
    h('h1', null, 'Sessions'),
    h('p', {class: 'lede'}, 'Coding-agent sessions grouped by the client\'s session id. ' +
      'Open one to replay it turn by turn.'),
    filterForm(ctx, query), alert, wrap, pager);

  const base = apiQuery(query);
  // Cursors of the pages shown so far: [null (first page), cursor of page 2, …].
  const cursors = [null];
  let page = 0;
  let nextCursor = null;

  async function load() {
    const cursor = cursors[page];
    const body = await ctx.api.get('/api/v1/sessions', cursor ? {...base, cursor} : base);
    setRows(body.sessions || []);
    nextCursor = body.next_cursor || null;
    prevButton.disabled = page === 0;
    nextButton.disabled = !nextCursor;
    pageInfo.textContent = `Page ${page + 1}`;
  }

  async function go(step) {
    showError(alert, null);
    if (step > 0) {
      if (!nextCursor) return;
      cursors[page + 1] = nextCursor;
    }
    page = Math.max(0, page + step);
    try {
      await load();
    } catch (err) {
      if (err?.name === 'AbortError') return;
      showError(alert, err);
    }
  }
  prevButton.addEventListener('click', () => go(-1));
  nextButton.addEventListener('click', () => go(1));
  try {
    await load();
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    if (err?.status === 401) throw err;
    showError(alert, err);
    prevButton.disabled = true;
    nextButton.disabled = true;
  }
}

// --- one session: the replay ---------------------------------------------------------

function summary(s) {
  const item = (term, value) => [h('dt', null, term), h('dd', null, value)];
  const t = s.tokens || {};
  return h('dl', {class: 'summary'},
    item('User', userName(s.user)),
    item('Client', s.client || '—'),
    item('Client session id', s.client_session_id || 'none (a single request)'),
    item('First activity', timeElement(h, s.first_at)),
    item('Last activity', timeElement(h, s.last_at)),
    item('Interceptions', formatInt(s.interception_count)),
    item('Input tokens', formatInt(t.input)),
    item('Output tokens', formatInt(t.output)),
    item('Cache read tokens', formatInt(t.cache_read)),
    item('Cache write tokens', formatInt(t.cache_write)),
    item('Cost', formatUsd(s.cost_usd, s.unpriced)),
    item('Errors', formatInt(s.error_count)));
}

function prettyArguments(args) {
  if (args === null || args === undefined) return '';
  if (typeof args === 'string') return args; // raw text the model sent (not valid JSON)
  try {
    return JSON.stringify(args, null, 2);
  } catch {
    return String(args);
  }
}

function toolCall(call) {
  const heading = h('p', {class: 'tool-head'},
    h('code', {class: 'tool-name'}, call.name || '(unnamed tool)'), ' ',
    call.injected
      ? badge(`injected by the gateway${call.server_url ? ` · ${call.server_url}` : ''}`, 'info')
      : badge('client tool'),
    call.call_id ? h('span', {class: 'call-id'}, ` ${call.call_id}`) : null);
  return h('li', {class: 'tool-call', 'data-tool': call.name || ''},
    heading,
    h('p', {class: 'label'}, 'Arguments'),
    h('pre', {class: 'args'}, prettyArguments(call.arguments)),
    call.error
      ? [h('p', {class: 'label'}, 'Error'), h('pre', {class: 'tool-error'}, call.error)]
      : null);
}

function cacheShare(turn) {
  const share = turn.cache_read_share;
  const parts = [h('span', {class: 'label'}, 'Input from prompt cache: '),
    h('strong', {class: 'share'}, formatPercent(share))];
  if (share !== null && share !== undefined) {
    // A native meter: accessible and needs no inline style (the CSP forbids it).
    parts.push(' ', h('meter', {min: '0', max: '1', value: String(share),
      'aria-label': 'Share of input served from the prompt cache'}, formatPercent(share)));
  }
  if (turn.cache_break) {
    parts.push(' ', h('strong', {class: 'cache-break', title: 'The prompt cache stopped ' +
      'matching: a changed system prompt, reordered tools or another model make every ' +
      'following turn pay full input price.'}, '⚠ cache broke here'));
  }
  return h('p', {class: 'cache'}, parts);
}

function turnTokens(turn) {
  const t = turn.tokens || {};
  return h('p', {class: 'turn-tokens'},
    `Tokens: input ${formatInt(t.input)} · output ${formatInt(t.output)} · ` +
    `cache read ${formatInt(t.cache_read)} · cache write ${formatInt(t.cache_write)}` +
    (t.reasoning ? ` · reasoning ${formatInt(t.reasoning)}` : '') +
    ` — cost ${formatUsd(turn.cost_usd, turn.unpriced)}`);
}

function turnView(turn, index) {
  const calls = turn.tool_calls || [];
  const thoughts = turn.thoughts || [];
  const headingId = `turn-${index + 1}`;
  return h('li', {class: turn.cache_break ? 'turn cache-broken' : 'turn',
    'data-turn': String(index + 1), 'data-interception': turn.id},
  h('article', {'aria-labelledby': headingId},
    h('header', {class: 'turn-head'},
      h('h2', {id: headingId}, `Turn ${index + 1}`),
      h('span', {class: 'meta'}, timeElement(h, turn.started_at), ' · ',
        turn.model || 'unknown model', ' · ', turn.provider_name || turn.provider || '—',
        ' · ', formatDuration(turn.duration_ms)),
      h('a', {href: `/ui/interceptions/${encodeURIComponent(turn.id)}`},
        'Full record', h('span', {class: 'visually-hidden'}, ` of turn ${index + 1}`))),
    cacheShare(turn),
    turnTokens(turn),
    turn.error_type
      ? h('div', {class: 'turn-error', role: 'note'}, badge(turn.error_type, 'bad'), ' ',
        turn.error_message || '')
      : null,
    h('h3', null, 'Prompt'),
    turn.prompt ? h('pre', {class: 'prompt'}, turn.prompt)
      : h('p', {class: 'muted'}, 'No prompt recorded.'),
    thoughts.length
      ? h('details', {class: 'thoughts'},
        h('summary', null, `Thoughts (${thoughts.length})`),
        thoughts.map((t) => h('pre', {class: 'thought'}, t)))
      : null,
    h('h3', null, calls.length ? `Tool calls (${calls.length})` : 'Tool calls'),
    calls.length ? h('ol', {class: 'tool-calls'}, calls.map(toolCall))
      : h('p', {class: 'muted'}, 'No tool calls.')));
}

async function renderSession(root, ctx, id) {
  replace(root, h('p', {class: 'loading'}, 'Loading session…'));
  let s;
  try {
    s = await ctx.api.get(`/api/v1/sessions/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err?.name === 'AbortError' || err?.status === 401) throw err;
    replace(root, h('h1', null, 'Session'), errorBox(err),
      h('p', null, h('a', {href: '/ui/sessions'}, 'Back to sessions')));
    return;
  }
  const turns = s.interceptions || [];
  const breaks = turns.filter((t) => t.cache_break).length;
  replace(root,
    h('p', {class: 'crumbs'}, h('a', {href: '/ui/sessions'}, 'Sessions'), ' / ',
      s.client_session_id || 'single request'),
    h('h1', null, `Session of ${userName(s.user)}`, s.client ? ` with ${s.client}` : ''),
    summary(s),
    breaks
      ? h('p', {class: 'warning', role: 'note'},
        `The prompt cache broke ${breaks === 1 ? 'once' : `${breaks} times`} in this ` +
        'session: the turns after a break paid full price for input the cache held before.')
      : null,
    h('h2', {class: 'section'}, `Replay (${turns.length} ${turns.length === 1 ? 'turn' : 'turns'})`),
    turns.length ? h('ol', {class: 'turns'}, turns.map(turnView))
      : h('p', {class: 'muted'}, 'This session has no recorded turns.'));
}
