// Users (admins): the user list with a create form, and /ui/users/<name>: suspend and
// reactivate, limits and budget, gateway keys (issued once with a Copy button, revoked
// after an in-page confirmation). Built on /api/v1/users… only.
import {h, replace, errorBox, showError, field} from '../lib/dom.js';
import {dataTable} from '../lib/table.js';
import {formatInt, formatUsd, timeElement} from '../lib/format.js';
import {badge, confirmButton, secretOnce, valueOrNull, intOrNull} from '../lib/pagekit.js';

const ROLES = ['member', 'admin'];
const PERIODS = ['day', 'week', 'month'];

/** Page entry point (see app.js): the list, or one user when the path names one. */
export async function render(root, ctx) {
  const [name] = ctx.params.segments;
  if (name) return renderUser(root, ctx, name);
  return renderList(root, ctx);
}

function userHref(u) {
  return `/ui/users/${encodeURIComponent(u.username)}`;
}

function budgetText(limits) {
  const b = limits?.budget;
  return b ? `${formatUsd(b.amount_usd)} per ${b.period}` : 'none';
}

function statusBadge(status) {
  return badge(status, status === 'active' ? 'ok' : 'bad');
}

// --- the list -------------------------------------------------------------------------

async function renderList(root, ctx) {
  const listAlert = errorBox(null);
  const {wrap, setRows} = dataTable({
    caption: 'Users',
    columns: [
      {label: 'Username', key: 'username', value: (u) => h('a', {href: userHref(u)}, u.username)},
      {label: 'Email', key: 'email', value: (u) => u.email || '—'},
      {label: 'Role', key: 'role', value: (u) => u.role},
      {label: 'Status', key: 'status', value: (u) => statusBadge(u.status)},
      {label: 'Budget', key: 'budget', value: (u) => budgetText(u.limits)},
      {label: 'Created', key: 'created', value: (u) => timeElement(h, u.created_at)},
    ],
    empty: 'No users.',
    rowAttrs: (u) => ({'data-user': u.username}),
  });

  const alert = errorBox(null);
  alert.id = 'create-user-alert';
  const username = field('Username', {name: 'username', required: true, autocomplete: 'off',
    spellcheck: 'false'});
  const email = field('Email', {name: 'email', type: 'email', autocomplete: 'off'});
  const role = field('Role', {name: 'role', value: 'member'}, {control: 'select', options: ROLES});
  const submit = h('button', {type: 'submit'}, 'Create user');
  const form = h('form', {class: 'stack', novalidate: true, 'aria-describedby': alert.id,
    'aria-labelledby': 'create-user-title', on: {submit: async (event) => {
      event.preventDefault();
      showError(alert, null);
      submit.disabled = true;
      try {
        const body = {username: username.input.value.trim(), role: role.input.value};
        const mail = valueOrNull(email.input);
        if (mail !== null) body.email = mail;
        const user = await ctx.api.send('POST', '/api/v1/users', body);
        ctx.navigate(userHref(user));
      } catch (err) {
        if (err?.name === 'AbortError' || err?.status === 401) return;
        showError(alert, err);
      } finally {
        submit.disabled = false;
      }
    }}},
  h('h2', {id: 'create-user-title'}, 'Create a user'),
  h('div', {class: 'grid'}, username.row, email.row, role.row),
  h('div', {class: 'actions'}, submit));

  replace(root, h('h1', null, 'Users'), listAlert, wrap,
    h('section', {class: 'user-form'}, form, alert));
  try {
    setRows(await ctx.api.get('/api/v1/users'));
  } catch (err) {
    if (err?.name === 'AbortError' || err?.status === 401) throw err;
    showError(listAlert, err);
  }
}

// --- one user ---------------------------------------------------------------------------

async function renderUser(root, ctx, name, flash = {}) {
  const path = `/api/v1/users/${encodeURIComponent(name)}`;
  let user;
  let keys;
  try {
    [user, keys] = await Promise.all([ctx.api.get(path), ctx.api.get(`${path}/keys`)]);
  } catch (err) {
    if (err?.name === 'AbortError' || err?.status === 401) throw err;
    replace(root, h('p', {class: 'crumbs'}, h('a', {href: '/ui/users'}, 'Users')),
      h('h1', null, name), errorBox(err));
    return;
  }
  const reload = (next) => renderUser(root, ctx, name, next);
  const accountAlert = errorBox(null);
  const issued = h('div', {class: 'issued'});
  if (flash.issued) {
    issued.append(secretOnce('New gateway key', flash.issued.token,
      `Key "${flash.issued.name || flash.issued.id}" issued. Copy it now: it is shown only ` +
      'once and cannot be recovered.'));
  }
  replace(root,
    h('p', {class: 'crumbs'}, h('a', {href: '/ui/users'}, 'Users'), ' / ', user.username),
    h('h1', null, user.username),
    accountSection(ctx, user, path, accountAlert, reload),
    limitsSection(ctx, user, path, reload, flash.limitsSaved),
    keysSection(ctx, user, keys, path, issued, reload));
}

function accountSection(ctx, user, path, alert, reload) {
  const suspended = user.status === 'suspended';
  const toggle = h('button', {type: 'button', class: suspended ? '' : 'danger', on: {click: async () => {
    showError(alert, null);
    toggle.disabled = true;
    try {
      await ctx.api.send('PATCH', path, {status: suspended ? 'active' : 'suspended'});
      await reload();
    } catch (err) {
      if (err?.name === 'AbortError' || err?.status === 401) return;
      showError(alert, err);
      toggle.disabled = false;
    }
  }}}, suspended ? 'Reactivate' : 'Suspend');
  const role = field('Role', {name: 'role', value: user.role}, {control: 'select', options: ROLES});
  const saveRole = h('button', {type: 'button', class: 'secondary', on: {click: async () => {
    showError(alert, null);
    try {
      await ctx.api.send('PATCH', path, {role: role.input.value});
      await reload();
    } catch (err) {
      if (err?.name === 'AbortError' || err?.status === 401) return;
      showError(alert, err);
    }
  }}}, 'Change role');
  const item = (term, value) => [h('dt', null, term), h('dd', null, value)];
  return h('section', {'aria-labelledby': 'account-title'},
    h('h2', {id: 'account-title'}, 'Account'),
    h('dl', {class: 'summary'},
      item('Status', h('span', {'data-field': 'status'}, statusBadge(user.status))),
      item('Role', user.role),
      item('Email', user.email || '—'),
      item('Created', timeElement(h, user.created_at)),
      item('Budget', h('span', {'data-field': 'budget'}, budgetText(user.limits)))),
    h('p', {class: 'help'}, suspended
      ? 'Suspended: none of this user\'s keys work until reactivated.'
      : 'Suspending stops every key of this user at once, on every replica.'),
    h('div', {class: 'actions'}, toggle, role.row, saveRole),
    alert);
}

function limitsSection(ctx, user, path, reload, saved) {
  const limits = user.limits || {};
  const alert = errorBox(null);
  alert.id = 'limits-alert';
  const done = h('p', {role: 'status', class: 'done'}, saved ? 'Limits saved.' : '');
  const num = (label, key) => {
    const f = field(label, {name: key, inputmode: 'numeric', autocomplete: 'off'});
    f.input.value = limits[key] ?? '';
    return f;
  };
  const rpm = num('Requests per minute', 'requests_per_minute');
  const tpm = num('Tokens per minute', 'tokens_per_minute');
  const conc = num('Max concurrent requests', 'max_concurrent');
  const models = field('Allowed models', {name: 'allowed_models', autocomplete: 'off',
    placeholder: 'e.g. claude-*, gpt-4o (comma-separated; empty: all)'});
  models.input.value = (limits.allowed_models || []).join(', ');
  const amount = field('Budget (USD)', {name: 'budget_amount', inputmode: 'decimal',
    autocomplete: 'off'});
  amount.input.value = limits.budget?.amount_usd ?? '';
  const period = field('Budget period', {name: 'budget_period',
    value: limits.budget?.period || 'month'}, {control: 'select', options: PERIODS});
  const submit = h('button', {type: 'submit'}, 'Save limits');
  const form = h('form', {class: 'stack', novalidate: true, 'aria-describedby': alert.id,
    'aria-labelledby': 'limits-title', on: {submit: async (event) => {
      event.preventDefault();
      showError(alert, null);
      done.textContent = '';
      const modelList = models.input.value.split(',').map((m) => m.trim()).filter(Boolean);
      const budgetAmount = intOrNull(amount.input);
      // Every field is sent: the form shows the whole object, so empty means "no limit".
      const body = {limits: {
        requests_per_minute: intOrNull(rpm.input),
        tokens_per_minute: intOrNull(tpm.input),
        max_concurrent: intOrNull(conc.input),
        allowed_models: modelList.length ? modelList : null,
        budget: budgetAmount === null ? null : {amount_usd: budgetAmount, period: period.input.value},
      }};
      submit.disabled = true;
      try {
        await ctx.api.send('PATCH', path, body);
        await reload({limitsSaved: true});
      } catch (err) {
        if (err?.name === 'AbortError' || err?.status === 401) return;
        showError(alert, err);
        submit.disabled = false;
      }
    }}},
  h('h2', {id: 'limits-title'}, 'Limits and budget'),
  h('p', {class: 'help'}, 'Empty fields mean no limit of this user\'s own (the gateway ' +
    'defaults apply). Each key may have stricter limits of its own.'),
  h('div', {class: 'grid'}, rpm.row, tpm.row, conc.row, models.row, amount.row, period.row),
  h('div', {class: 'actions'}, submit));
  return h('section', null, form, alert, done);
}

function keysSection(ctx, user, keys, path, issued, reload) {
  const alert = errorBox(null);
  alert.id = 'keys-alert';
  const {wrap} = dataTable({
    caption: `Gateway keys of ${user.username}`,
    columns: [
      {label: 'Name', key: 'name', value: (k) => k.name || '—'},
      {label: 'Key id', key: 'id', value: (k) => h('code', null, k.id)},
      {label: 'Status', key: 'status', value: (k) => badge(k.status, k.status === 'active' ? 'ok' : 'off')},
      {label: 'Created', key: 'created', value: (k) => timeElement(h, k.created_at)},
      {label: 'Expires', key: 'expires', value: (k) => (k.expires_at ? timeElement(h, k.expires_at) : 'never')},
      {label: 'Last used', key: 'last_used', value: (k) => (k.last_used_at ? timeElement(h, k.last_used_at) : 'never')},
      {label: 'Actions', key: 'actions', value: (k) => (k.status === 'revoked' ? '—'
        : confirmButton('Revoke', 'Confirm revoke', async () => {
          await ctx.api.send('DELETE', `${path}/keys/${encodeURIComponent(k.id)}`);
          await reload();
        }, {onError: (err) => showError(alert, err)}))},
    ],
    rows: keys,
    empty: 'No keys yet.',
    rowAttrs: (k) => ({'data-key': k.id}),
  });
  const keyName = field('Key name', {name: 'key_name', autocomplete: 'off', placeholder: 'laptop'});
  const days = field('Expires in days', {name: 'expires_in_days', inputmode: 'numeric',
    autocomplete: 'off', placeholder: 'empty: never'});
  const submit = h('button', {type: 'submit'}, 'Issue key');
  const form = h('form', {class: 'stack', novalidate: true, 'aria-describedby': alert.id,
    'aria-labelledby': 'keys-title', on: {submit: async (event) => {
      event.preventDefault();
      showError(alert, null);
      issued.replaceChildren();
      const body = {};
      const n = valueOrNull(keyName.input);
      if (n !== null) body.name = n;
      const d = intOrNull(days.input);
      if (d !== null) body.expires_in_days = d;
      submit.disabled = true;
      try {
        const key = await ctx.api.send('POST', `${path}/keys`, body);
        // Shown once: it lives only in this render; leaving or reloading the page drops it.
        await reload({issued: key});
        return;
        keyName.input.value = '';
        days.input.value = '';
      } catch (err) {
        if (err?.name === 'AbortError' || err?.status === 401) return;
        showError(alert, err);
      } finally {
        submit.disabled = false;
      }
    }}},
  h('h3', null, 'Issue a key'),
  h('div', {class: 'grid'}, keyName.row, days.row),
  h('div', {class: 'actions'}, submit));
  return h('section', {'aria-labelledby': 'keys-title'},
    h('h2', {id: 'keys-title'}, 'Gateway keys'),
    h('p', null, `${formatInt(keys.filter((k) => k.status === 'active').length)} active`),
    wrap, form, alert, issued);
}
