// The dashboard shell: sign-in/out, navigation, and a router that loads one page module
// per path under /ui/. Pages are ES modules in ./pages/<name>.js exporting
// `async function render(root, ctx)`; see README "Dashboard" for the contract.
import {createApi, signIn, signOut, whoAmI, ApiError} from './lib/api.js';
import {h, replace, errorBox, showError} from './lib/dom.js';

// name -> {label (nav text and title), admin (admin-only page), nav (shown in the nav)}
const PAGES = {
  usage: {label: 'Usage', admin: false},
  sessions: {label: 'Sessions', admin: false},
  interceptions: {label: 'Interceptions', admin: false},
  providers: {label: 'Providers', admin: true},
  users: {label: 'Users', admin: true},
};
const DEFAULT_PAGE = 'usage';

const app = document.getElementById('app');
let me = null;
let view = null; // {controller: AbortController} of the page on screen

/** The page name, the path segments after it and the query of a /ui/… URL. */
export function parseLocation(url) {
  const u = new URL(url, location.origin);
  const rest = u.pathname.replace(/^\/ui\/?/, '');
  const segments = rest.split('/').filter(Boolean).map(decodeURIComponent);
  const name = segments.shift() || DEFAULT_PAGE;
  return {name, segments, query: u.searchParams};
}

function leaveView() {
  if (view) view.controller.abort();
  view = null;
}

function showSignIn(message) {
  leaveView();
  me = null;
  document.title = 'Sign in · aibridge';
  const keyInput = h('input', {
    id: 'gateway-key', name: 'key', type: 'password', autocomplete: 'off',
    required: true, spellcheck: 'false',
  });
  const alert = errorBox(message || null);
  const button = h('button', {type: 'submit'}, 'Sign in');
  const form = h('form', {class: 'signin', 'aria-labelledby': 'signin-title', on: {
    submit: async (event) => {
      event.preventDefault();
      button.disabled = true;
      showError(alert, null);
      try {
        me = await signIn(keyInput.value);
        keyInput.value = '';
        renderShell();
      } catch (err) {
        showError(alert, err instanceof ApiError ? err : String(err));
        button.disabled = false;
        keyInput.focus();
      }
    },
  }},
  h('h1', {id: 'signin-title'}, 'Sign in to aibridge'),
  h('p', null, 'Use your gateway key (aib-…). It is kept in an HttpOnly cookie for this ' +
    'browser session only.'),
  h('div', {class: 'field'}, h('label', {for: 'gateway-key'}, 'Gateway key'), keyInput),
  button,
  alert);
  replace(app, h('main', {id: 'main', class: 'signin-page'}, form));
  keyInput.focus();
}

async function doSignOut() {
  try {
    await signOut();
  } finally {
    showSignIn();
  }
}

function renderShell() {
  const nav = h('nav', {'aria-label': 'Main'}, h('ul', null,
    Object.entries(PAGES)
      .filter(([, page]) => !page.admin || me.role === 'admin')
      .map(([name, page]) => h('li', null, h('a', {href: `/ui/${name}`, 'data-page': name},
        page.label)))));
  const header = h('header', {class: 'top'},
    h('a', {class: 'brand', href: '/ui/'}, 'aibridge'),
    nav,
    h('div', {class: 'who'},
      h('span', {class: 'user'}, `${me.username} (${me.role})`),
      h('button', {type: 'button', class: 'secondary', on: {click: doSignOut}}, 'Sign out')));
  replace(app, header, h('main', {id: 'main', tabindex: '-1'}));
  route();
}

/** Go to a /ui/ URL without reloading (pages call ctx.navigate). */
export function navigate(url, {replaceState = false} = {}) {
  if (replaceState) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  route();
}

async function route() {
  if (!me) return;
  leaveView();
  const {name, segments, query} = parseLocation(location.href);
  const page = PAGES[name];
  for (const link of app.querySelectorAll('nav a')) {
    if (link.dataset.page === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  // A fresh <main> per view: a slow request of the previous page cannot write into it.
  const root = h('main', {id: 'main', tabindex: '-1'});
  app.querySelector('main').replaceWith(root);
  const controller = new AbortController();
  view = {controller};
  if (!page) {
    document.title = 'Not found · aibridge';
    replace(root, h('h1', null, 'Page not found'),
      h('p', null, 'No such page. ', h('a', {href: '/ui/'}, 'Go to Usage')));
    return;
  }
  document.title = `${page.label} · aibridge`;
  if (page.admin && me.role !== 'admin') {
    // No request is made: the API would refuse it too (403).
    replace(root, h('h1', null, page.label), h('p', {role: 'alert'}, 'This page is for admins.'));
    return;
  }
  const api = createApi({
    signal: controller.signal,
    onUnauthorized: () => showSignIn('Your session has ended; sign in again.'),
  });
  const ctx = {api, me, params: {segments, query}, navigate, signal: controller.signal};
  try {
    const module = await import(`./pages/${name}.js`);
    if (controller.signal.aborted) return;
    await module.render(root, ctx);
  } catch (err) {
    if (controller.signal.aborted || err?.name === 'AbortError') return;
    if (err instanceof ApiError && err.status === 401) return; // sign-in already shown
    if (!(err instanceof ApiError) && String(err).includes('dynamically imported module')) {
      replace(root, h('h1', null, page.label), h('p', null, 'This page is not available yet.'));
      return;
    }
    console.error(err);
    root.appendChild(errorBox(err instanceof ApiError ? err : String(err)));
  }
}

// Same-page navigation for every /ui/ link (real links: middle-click and copy still work).
document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest('a[href]');
  if (!link || link.target) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/ui/')) return;
  event.preventDefault();
  if (!me) return;
  navigate(url.pathname + url.search);
  document.getElementById('main')?.focus();
});
window.addEventListener('popstate', () => route());

async function start() {
  try {
    me = await whoAmI();
  } catch (err) {
    replace(app, h('main', {id: 'main'}, h('h1', null, 'aibridge'),
      errorBox(err instanceof ApiError ? err : String(err))));
    return;
  }
  if (me) renderShell();
  else showSignIn();
}

start();
