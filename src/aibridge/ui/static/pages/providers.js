// Providers (admins): the configured AI providers with their live status on this replica
// (enabled, disabled, error and why, key pool, circuit breakers), the configuration
// version every replica has applied, and forms to create, edit, enable/disable and
// delete. Built on /api/v1/providers and /api/v1/providers/status only.
// Upstream keys are write-only: the page shows the API's masked renderings and never
// echoes what was typed (the key input is emptied after every save).
import {h, replace, errorBox, showError, field} from '../lib/dom.js';
import {dataTable} from '../lib/table.js';
import {formatTime, timeElement} from '../lib/format.js';
import {badge, confirmButton, pollWhileShown, valueOrNull, numberOrNull} from '../lib/pagekit.js';

const TYPES = ['openai', 'anthropic', 'azure', 'openai-compat', 'openrouter', 'copilot',
  'google', 'vercel', 'bedrock'];
const STATUS_POLL_MS = 5000;
// Settings with their own inputs; anything else stays in the "Other settings" JSON box.
const NAMED_SETTINGS = ['allow_byok', 'key_cooldown_seconds', 'upstream_timeout_seconds',
  'api_version', 'bedrock'];
const BEDROCK_FIELDS = [
  ['region', 'AWS region', 'text'],
  ['model', 'Bedrock model', 'text'],
  ['small_fast_model', 'Small fast model', 'text'],
  ['access_key_id', 'AWS access key ID', 'text'],
  ['secret_access_key', 'AWS secret access key', 'password'],
  ['role_arn', 'Role ARN', 'text'],
];

/** Page entry point (see app.js). */
export async function render(root, ctx) {
  const state = {providers: [], status: null, editing: null};
  const listAlert = errorBox(null);
  const statusNote = h('p', {class: 'muted status-note', 'aria-live': 'polite'});
  const {wrap, setRows} = dataTable({
    caption: 'AI providers and their live status on this replica',
    columns: providerColumns(ctx, state, refresh, listAlert),
    empty: 'No providers yet: add one below.',
    rowAttrs: (p) => ({'data-provider': p.name}),
  });
  const replicasBox = h('section', {class: 'replicas', 'aria-labelledby': 'replicas-title'});
  const formBox = h('section', {class: 'provider-form', 'aria-labelledby': 'form-title'});

  replace(root,
    h('h1', null, 'Providers'),
    listAlert, wrap, statusNote, formBox, replicasBox);

  async function refresh() {
    const [providers, status] = await Promise.all([
      ctx.api.get('/api/v1/providers'),
      ctx.api.get('/api/v1/providers/status').catch((err) => {
        // Status is extra information: the list stays usable when it is unavailable.
        if (err?.name === 'AbortError' || err?.status === 401) throw err;
        return {unavailable: err};
      }),
    ]);
    state.providers = providers;
    state.status = status;
    setRows(providers);
    statusNote.textContent = status?.unavailable
      ? (status.unavailable.status === 404
        ? 'Live status (key pool, circuit breakers, replicas) is not served by this gateway ' +
          'version: GET /api/v1/providers/status answered 404.'
        : `Live status unavailable: ${status.unavailable.message}`)
      : `Live status refreshed ${formatTime(new Date().toISOString())}; refreshes every ` +
        `${STATUS_POLL_MS / 1000} s.`;
    renderReplicas(replicasBox, status);
  }

  function showForm(provider) {
    state.editing = provider;
    renderForm(formBox, ctx, provider, {
      saved: async (message) => {
        await refresh();
        showForm(null);
        formBox.querySelector('[role="status"]').textContent = message;
      },
      cancel: () => showForm(null),
    });
  }
  state.edit = (provider) => {
    showForm(provider);
    formBox.querySelector('input:not([disabled]), select:not([disabled])')?.focus();
  };

  showForm(null);
  await refresh();
  pollWhileShown(root, ctx.signal, STATUS_POLL_MS, refresh, (err) => showError(listAlert, err));
}

// --- the list -------------------------------------------------------------------------

// The live entry of provider `name` in GET /api/v1/providers/status (null: status not
// available, or this replica has not loaded that row yet).
function liveOf(state, name) {
  const status = state.status;
  if (!status || status.unavailable || !Array.isArray(status.providers)) return null;
  return status.providers.find((p) => p.name === name) || null;
}

const KEY_REASONS = {
  rate_limited: 'rate limited (upstream 429)',
  unauthorized: 'unauthorized (upstream 401/403)',
};

function statusCell(p, live) {
  // The row's own flag is what an admin set; the live view is what this replica made of it
  // (built, disabled, or an error and why). When they disagree a reload is on its way.
  if (live?.status === 'error') {
    return h('span', null, badge('error', 'bad'), ' ',
      h('span', {class: 'reason'}, live.reason || 'unknown error'));
  }
  if (!p.enabled) {
    if (live?.status === 'ok') return [badge('disabled', 'off'), ' ', badge('still serving: reload pending', 'warn')];
    return badge('disabled', 'off');
  }
  if (live && live.status === 'disabled') {
    return [badge('enabled', 'ok'), ' ', badge('not applied yet', 'warn')];
  }
  return badge('enabled', 'ok');
}

function keyItem(k) {
  const cooling = k.state === 'cooling';
  return h('li', {'data-key': k.id},
    h('code', null, k.hint),
    k.primary ? h('span', {class: 'muted'}, ' primary') : null, ' ',
    badge(cooling ? `cooling ${Math.ceil(k.cooldown_seconds)} s` : 'valid', cooling ? 'warn' : 'ok'),
    cooling && k.reason ? h('span', {class: 'reason'}, ` ${KEY_REASONS[k.reason] || k.reason}`) : null);
}

function keysCell(p, live) {
  // Live keys exist only for providers this replica built; otherwise the stored (masked)
  // keys are listed without a state.
  if (live?.keys?.length) return h('ul', {class: 'plain keys'}, live.keys.map(keyItem));
  if (!p.api_keys.length) return h('span', {class: 'muted'}, 'none');
  return h('ul', {class: 'plain keys'}, p.api_keys.map((k) => h('li', {'data-key': k.id},
    h('code', null, k.masked))));
}

function breakerItem(b) {
  const open = b.state === 'open';
  return h('li', null,
    h('code', null, b.endpoint), ' ', b.model || h('span', {class: 'muted'}, '(no model)'), ' ',
    badge(b.state, b.state === 'closed' ? 'ok' : open ? 'bad' : 'warn'),
    open && b.retry_after_seconds !== null
      ? h('span', {class: 'muted'}, ` retry in ${b.retry_after_seconds} s`) : null);
}

function breakersCell(live) {
  if (!live || live.status !== 'ok') return h('span', {class: 'muted'}, '—');
  if (!live.breakers_enabled) return h('span', {class: 'muted'}, 'off');
  // Only breakers that saw traffic on this replica are listed; none means none tripped.
  if (!live.breakers.length) return h('span', {class: 'muted'}, 'no traffic yet');
  return h('ul', {class: 'plain breakers'}, live.breakers.map(breakerItem));
}

function providerColumns(ctx, state, refresh, alert) {
  const act = (fn) => async () => {
    showError(alert, null);
    try {
      await fn();
      await refresh();
    } catch (err) {
      if (err?.name === 'AbortError') return;
      showError(alert, err);
    }
  };
  return [
    {label: 'Name', key: 'name', value: (p) => h('span', null, h('strong', null, p.name),
      p.display_name && p.display_name !== p.name ? h('span', {class: 'muted'}, ` ${p.display_name}`) : null)},
    {label: 'Type', key: 'type', value: (p) => p.type},
    {label: 'Base URL', key: 'base_url', value: (p) => h('code', {class: 'url'}, p.base_url || '—')},
    {label: 'Status', key: 'status', value: (p) => statusCell(p, liveOf(state, p.name))},
    {label: 'Key pool', key: 'keys', value: (p) => keysCell(p, liveOf(state, p.name))},
    {label: 'Circuit breakers', key: 'breakers', value: (p) => breakersCell(liveOf(state, p.name))},
    {label: 'Actions', key: 'actions', value: (p) => h('div', {class: 'row-actions'},
      h('button', {type: 'button', class: 'secondary', 'aria-label': `Edit ${p.name}`,
        on: {click: () => state.edit(p)}}, 'Edit'),
      h('button', {type: 'button', class: 'secondary',
        'aria-label': `${p.enabled ? 'Disable' : 'Enable'} ${p.name}`,
        on: {click: act(() => ctx.api.send('PATCH', `/api/v1/providers/${encodeURIComponent(p.name)}`,
          {enabled: !p.enabled}))}}, p.enabled ? 'Disable' : 'Enable'),
      confirmButton('Delete', 'Confirm delete',
        act(() => ctx.api.send('DELETE', `/api/v1/providers/${encodeURIComponent(p.name)}`)),
        {onError: (err) => showError(alert, err)}))},
  ];
}

function renderReplicas(box, status) {
  const items = [h('h2', {id: 'replicas-title'}, 'Replicas')];
  if (!status || status.unavailable || !Array.isArray(status.replicas)) {
    items.push(h('p', {class: 'muted'}, 'No replica information available.'));
    replace(box, items);
    return;
  }
  const current = status.current_config_version;
  items.push(h('p', {class: 'config-version'},
    `Current configuration version: ${current}. This replica (`, h('code', null, status.replica),
    `) has applied ${status.config_version < 0 ? 'none yet' : `version ${status.config_version}`}` +
    (status.last_reload_at ? `, last reload ${formatTime(status.last_reload_at)}.` : '.')));
  if (status.last_reload_error) {
    items.push(h('p', {class: 'reason', role: 'alert'}, `Last reload failed: ${status.last_reload_error}`));
  }
  const {wrap} = dataTable({
    caption: 'Configuration version each replica has applied',
    columns: [
      {label: 'Replica', key: 'replica', value: (r) => h('span', null, h('code', null, r.id),
        r.current ? h('span', {class: 'muted'}, ' (this one)') : null)},
      {label: 'Host', key: 'host', value: (r) => r.host},
      {label: 'PID', key: 'pid', numeric: true, value: (r) => String(r.pid)},
      {label: 'Applied version', key: 'version', numeric: true, value: (r) => String(r.config_version)},
      {label: 'Last seen', key: 'last_seen', value: (r) => timeElement(h, r.last_seen)},
      {label: 'State', key: 'state', value: (r) => {
        if (r.stale) {
          return badge(`stale: no heartbeat for over ${Math.round(status.stale_after_seconds)} s`, 'bad');
        }
        // Behind is normal for a few seconds after a change: the replica is catching up.
        if (r.config_version < current) return badge('catching up', 'warn');
        return badge('up to date', 'ok');
      }},
    ],
    rows: status.replicas,
    empty: 'No replica has reported yet.',
    rowAttrs: (r) => ({'data-replica': r.id}),
  });
  items.push(wrap);
  replace(box, items);
}

// --- create / edit form ---------------------------------------------------------------

function otherSettings(settings) {
  const rest = {};
  for (const [k, v] of Object.entries(settings || {})) {
    if (!NAMED_SETTINGS.includes(k)) rest[k] = v;
  }
  return Object.keys(rest).length ? JSON.stringify(rest, null, 2) : '';
}

function renderForm(box, ctx, provider, {saved, cancel}) {
  const editing = Boolean(provider);
  const settings = provider?.settings || {};
  const alert = errorBox(null);
  const done = h('p', {role: 'status', class: 'done'});
  const name = field('Name', {name: 'name', required: !editing, disabled: editing,
    autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'name-help'});
  name.input.value = provider?.name || '';
  const type = field('Type', {name: 'type', disabled: editing, value: provider?.type || 'openai'},
    {control: 'select', options: TYPES});
  const baseUrl = field('Base URL', {name: 'base_url', type: 'url', autocomplete: 'off',
    placeholder: 'empty: the type\'s default endpoint'});
  baseUrl.input.value = provider?.base_url || '';
  const displayName = field('Display name', {name: 'display_name', autocomplete: 'off'});
  displayName.input.value = provider && provider.display_name !== provider.name
    ? provider.display_name : '';
  const apiKey = field(editing ? 'API key' : 'API key', {name: 'api_key', type: 'password',
    autocomplete: 'new-password', spellcheck: 'false',
    placeholder: editing ? 'add another key (optional)' : ''});
  const enabled = h('input', {type: 'checkbox', id: 'provider-enabled', name: 'enabled',
    checked: editing ? provider.enabled : true});

  // Existing keys (edit): masked, each with a checkbox to remove it.
  const keepBoxes = [];
  const existingKeys = editing && provider.api_keys.length
    ? h('fieldset', {class: 'keys'}, h('legend', null, 'Existing API keys'),
      provider.api_keys.map((k) => {
        const id = `remove-key-${k.id}`;
        const box = h('input', {type: 'checkbox', id, 'data-key': k.id});
        keepBoxes.push(box);
        return h('div', {class: 'check'}, box,
          h('label', {for: id}, 'Remove ', h('code', null, k.masked)));
      }))
    : null;

  // The type's own settings.
  const byok = h('input', {type: 'checkbox', id: 'allow-byok', checked: Boolean(settings.allow_byok)});
  const cooldown = field('Key cooldown (seconds)', {name: 'key_cooldown_seconds', inputmode: 'decimal'});
  cooldown.input.value = settings.key_cooldown_seconds ?? '';
  const timeout = field('Upstream timeout (seconds)', {name: 'upstream_timeout_seconds', inputmode: 'decimal'});
  timeout.input.value = settings.upstream_timeout_seconds ?? '';
  const apiVersion = field('API version', {name: 'api_version', placeholder: '2024-10-21'});
  apiVersion.input.value = settings.api_version ?? '';
  const bedrock = {};
  const bedrockRows = BEDROCK_FIELDS.map(([key, label, inputType]) => {
    const f = field(label, {name: `bedrock.${key}`, type: inputType, autocomplete: 'off',
      placeholder: inputType === 'password' && editing ? 'unchanged when empty' : null});
    // Write-only secrets come back masked: never put them in an input.
    if (inputType !== 'password') f.input.value = settings.bedrock?.[key] ?? '';
    bedrock[key] = f.input;
    return f.row;
  });
  const other = field('Other settings (JSON)', {name: 'settings_json', rows: '4',
    spellcheck: 'false', placeholder: '{"extra_headers": {…}, "circuit_breaker": {…}}'},
  {control: 'textarea'});
  other.input.value = otherSettings(settings);

  const azureBox = h('div', {class: 'type-settings', 'data-for': 'azure'}, apiVersion.row);
  const bedrockBox = h('div', {class: 'type-settings', 'data-for': 'bedrock'}, bedrockRows);
  const keyRingBox = h('div', {class: 'type-settings', 'data-for': 'keyring'},
    h('div', {class: 'check'}, byok, h('label', {for: 'allow-byok'}, 'Allow bring-your-own-key')),
    cooldown.row);
  const showTypeSettings = () => {
    const t = type.input.value;
    azureBox.hidden = t !== 'azure';
    bedrockBox.hidden = t !== 'bedrock';
    keyRingBox.hidden = t === 'bedrock';
    apiKey.row.hidden = t === 'bedrock' || t === 'copilot';
  };
  type.input.addEventListener('change', showTypeSettings);
  showTypeSettings();

  function settingsBody() {
    const t = type.input.value;
    let out = {};
    const raw = other.input.value.trim();
    if (raw) {
      try {
        out = JSON.parse(raw);
      } catch (err) {
        throw {message: 'Other settings is not valid JSON.', detail: String(err.message || err),
          validations: []};
      }
      if (!out || typeof out !== 'object' || Array.isArray(out)) {
        throw {message: 'Other settings must be a JSON object.', validations: []};
      }
    }
    if (t !== 'bedrock') {
      if (byok.checked) out.allow_byok = true;
      const c = numberOrNull(cooldown.input);
      if (c !== null) out.key_cooldown_seconds = c;
    }
    const to = numberOrNull(timeout.input);
    if (to !== null) out.upstream_timeout_seconds = to;
    if (t === 'azure') {
      const v = valueOrNull(apiVersion.input);
      if (v !== null) out.api_version = v;
    }
    if (t === 'bedrock') {
      const block = {};
      for (const [key, input] of Object.entries(bedrock)) {
        const v = valueOrNull(input);
        if (v !== null) block[key] = v;
      }
      out.bedrock = block;
    }
    return out;
  }

  const submit = h('button', {type: 'submit'}, editing ? 'Save changes' : 'Create provider');
  const form = h('form', {class: 'stack', 'aria-describedby': 'provider-form-alert', novalidate: true,
    on: {submit: async (event) => {
      event.preventDefault();
      showError(alert, null);
      done.textContent = '';
      submit.disabled = true;
      try {
        const s = settingsBody();
        if (editing) {
          const body = {enabled: enabled.checked, settings: Object.keys(s).length ? s : null};
          const url = valueOrNull(baseUrl.input);
          if (url !== null && url !== provider.base_url) body.base_url = url;
          const dn = displayName.input.value.trim();
          if (dn !== (provider.display_name === provider.name ? '' : provider.display_name)) {
            body.display_name = dn;
          }
          const removed = keepBoxes.filter((b) => b.checked).map((b) => b.dataset.key);
          const added = valueOrNull(apiKey.input);
          if (removed.length || added !== null) {
            body.api_keys = provider.api_keys.filter((k) => !removed.includes(k.id))
              .map((k) => ({id: k.id}));
            if (added !== null) body.api_keys.push({api_key: added});
          }
          await ctx.api.send('PATCH', `/api/v1/providers/${encodeURIComponent(provider.name)}`, body);
          apiKey.input.value = '';
          await saved(`Saved ${provider.name}.`);
        } else {
          const body = {name: name.input.value.trim(), type: type.input.value,
            enabled: enabled.checked};
          const url = valueOrNull(baseUrl.input);
          if (url !== null) body.base_url = url;
          const dn = valueOrNull(displayName.input);
          if (dn !== null) body.display_name = dn;
          const key = valueOrNull(apiKey.input);
          if (key !== null) body.api_keys = [key];
          if (Object.keys(s).length) body.settings = s;
          const created = await ctx.api.send('POST', '/api/v1/providers', body);
          apiKey.input.value = '';
          await saved(`Created ${created.name}.`);
        }
      } catch (err) {
        if (err?.name === 'AbortError') return;
        if (err?.status === 401) throw err;
        showError(alert, err);
        alert.scrollIntoView?.({block: 'nearest'});
      } finally {
        submit.disabled = false;
      }
    }}},
  h('h2', {id: 'form-title'}, editing ? `Edit provider ${provider.name}` : 'Add a provider'),
  h('div', {class: 'grid'},
    name.row, type.row, baseUrl.row, displayName.row, apiKey.row),
  h('p', {id: 'name-help', class: 'help'}, 'Name: lower-case letters, digits and dashes; ' +
    'it becomes the provider\'s path (/<name>/v1/…) and cannot be changed later.'),
  existingKeys,
  h('div', {class: 'check'}, enabled, h('label', {for: 'provider-enabled'}, 'Enabled')),
  h('fieldset', null, h('legend', null, 'Settings'),
    keyRingBox, timeout.row, azureBox, bedrockBox, other.row),
  h('div', {class: 'actions'}, submit,
    editing ? h('button', {type: 'button', class: 'secondary', on: {click: cancel}}, 'Cancel') : null));
  alert.id = 'provider-form-alert';
  replace(box, form, alert, done);
}
