// Small building blocks shared by the Sessions, Providers and Users pages: in-page
// confirmation steps, a copy-once secret box, polling tied to the page's lifetime and
// little text helpers. Everything goes through lib/dom.js's h() (text only, no HTML).
import {h} from './dom.js';

/**
 * A button that asks before acting, in the page rather than with confirm() (tests and
 * keyboard users can drive it): clicking `label` swaps in `confirmLabel` and `Cancel`;
 * `Confirm…` runs `action` (errors go to `onError`). Returns the wrapping <span>.
 */
export function confirmButton(label, confirmLabel, action, {onError, danger = true} = {}) {
  const wrap = h('span', {class: 'confirm'});
  const first = h('button', {type: 'button', class: danger ? 'danger' : 'secondary'}, label);
  const showFirst = () => {
    wrap.replaceChildren(first);
  };
  const yes = h('button', {type: 'button', class: 'danger'}, confirmLabel);
  const no = h('button', {type: 'button', class: 'secondary'}, 'Cancel');
  first.addEventListener('click', () => {
    wrap.replaceChildren(yes, no);
    yes.focus();
  });
  no.addEventListener('click', () => {
    showFirst();
    first.focus();
  });
  yes.addEventListener('click', async () => {
    yes.disabled = true;
    no.disabled = true;
    try {
      await action();
    } catch (err) {
      if (onError) onError(err);
      else throw err;
    } finally {
      yes.disabled = false;
      no.disabled = false;
      if (wrap.isConnected) showFirst();
    }
  });
  showFirst();
  return wrap;
}

/**
 * A secret shown once (a freshly issued gateway key): a read-only input holding it, a
 * `Copy` button using the clipboard API and, when that is not available (plain http,
 * permission refused), the text selected so Ctrl+C copies it — the visible fallback.
 */
export function secretOnce(label, secret, note) {
  const id = `secret-${Math.random().toString(36).slice(2, 10)}`;
  const input = h('input', {id, type: 'text', readonly: true, class: 'secret',
    spellcheck: 'false', autocomplete: 'off'});
  input.value = secret;
  const status = h('span', {class: 'copy-status', role: 'status'});
  const button = h('button', {type: 'button', on: {click: async () => {
    try {
      if (!navigator.clipboard) throw new Error('clipboard unavailable');
      await navigator.clipboard.writeText(secret);
      status.textContent = 'Copied.';
    } catch {
      input.focus();
      input.select();
      status.textContent = 'Press Ctrl+C (⌘C) to copy the selected key.';
    }
  }}}, 'Copy');
  return h('div', {class: 'secret-once'},
    h('label', {for: id}, label), h('div', {class: 'secret-row'}, input, button), status,
    note ? h('p', {class: 'note'}, note) : null);
}

/**
 * Run `tick` every `ms` milliseconds while the page is on screen: stops when `signal`
 * aborts (the view was left) or `root` was removed. Errors of one tick are passed to
 * `onError` and polling goes on (a transient failure must not freeze a status page).
 */
export function pollWhileShown(root, signal, ms, tick, onError) {
  let timer = null;
  const stop = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
  const schedule = () => {
    timer = setTimeout(async () => {
      if (signal?.aborted || !root.isConnected) return stop();
      try {
        await tick();
      } catch (err) {
        if (signal?.aborted || err?.name === 'AbortError') return stop();
        if (onError) onError(err);
      }
      if (!signal?.aborted && root.isConnected) schedule();
    }, ms);
  };
  signal?.addEventListener('abort', stop);
  schedule();
  return stop;
}

/** A small coloured label, e.g. badge('disabled', 'off'): the text carries the meaning,
 * the class only colours it. */
export function badge(text, kind = '') {
  return h('span', {class: `badge ${kind}`.trim()}, text);
}

/** `s` shortened to `max` characters with an ellipsis (the full text in `title`). */
export function shorten(s, max = 16) {
  const text = String(s ?? '');
  if (text.length <= max) return h('span', null, text);
  return h('span', {title: text}, `${text.slice(0, max - 1)}…`);
}

/** Trimmed value of an input, or null when empty. */
export function valueOrNull(input) {
  const v = input.value.trim();
  return v === '' ? null : v;
}

/** An integer from an input: null when empty, NaN-safe (the API reports bad numbers;
 * a non-integer is sent as typed so its message names the field). */
export function intOrNull(input) {
  const v = input.value.trim();
  if (v === '') return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : v;
}

/** A number from an input: null when empty, the raw text when it is not a number. */
export function numberOrNull(input) {
  return intOrNull(input);
}
