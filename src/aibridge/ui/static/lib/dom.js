// Text-only DOM building. Every string becomes a text node and every attribute is set
// with setAttribute: prompts, tool arguments and model output are attacker-controlled,
// so nothing here ever parses markup (tests/ui/test_static.py bans the HTML sinks).

const SVG_NS = 'http://www.w3.org/2000/svg';
const URL_ATTRS = new Set(['href', 'src', 'action', 'formaction', 'xlink:href', 'poster']);

function checkAttr(name, value) {
  const lower = name.toLowerCase();
  if (lower.startsWith('on')) {
    throw new Error(`h(): event handler attribute ${name} refused; use {on: {event: fn}}`);
  }
  if (lower === 'style') {
    throw new Error('h(): style attribute refused (the CSP blocks it); use a class');
  }
  if (URL_ATTRS.has(lower)) {
    // Browsers ignore control characters and spaces before the scheme.
    const compact = String(value).replace(/[\u0000-\u0020]/g, '').toLowerCase();
    if (compact.startsWith('javascript:') || compact.startsWith('data:text/html')) {
      throw new Error(`h(): unsafe URL in ${name} refused`);
    }
  }
}

function append(el, child) {
  if (child === null || child === undefined || child === false || child === true) return;
  if (Array.isArray(child)) {
    for (const c of child) append(el, c);
  } else if (child instanceof Node) {
    el.appendChild(child);
  } else {
    el.appendChild(document.createTextNode(String(child)));
  }
}

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === 'on') {
      for (const [event, fn] of Object.entries(value || {})) el.addEventListener(event, fn);
      continue;
    }
    if (value === null || value === undefined || value === false) continue;
    checkAttr(name, value);
    el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/**
 * Create an HTML element: h('a', {href: '/ui/usage', class: 'x'}, 'Usage').
 * attrs: plain attributes (true = present, false/null/undefined = absent), plus
 * `on: {click: fn}` for listeners. children: strings/numbers (become text), nodes,
 * arrays of those, null/undefined/booleans (skipped).
 */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Create an SVG element (same contract as h); used by lib/chart.js. */
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replace all children of `el` with `children` (same rules as h's children). */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An element with role="alert" listing an error: its message, detail and each
 * validation (`field: detail`) on its own line. `error` may be an ApiError or a string. */
export function errorBox(error) {
  const box = h('div', {role: 'alert', class: 'error'});
  if (!error) return box;
  showError(box, error);
  return box;
}

/** Fill an existing alert element with `error` (or empty it when `error` is null). */
export function showError(box, error) {
  box.replaceChildren();
  if (!error) return box;
  if (typeof error === 'string') {
    append(box, h('p', null, error));
    return box;
  }
  append(box, h('p', null, error.message || 'Something went wrong.'));
  if (error.detail) append(box, h('p', {class: 'detail'}, error.detail));
  const lines = error.validations || [];
  if (lines.length) {
    append(box, h('ul', null, lines.map((v) => h('li', null, `${v.field}: ${v.detail}`))));
  }
  return box;
}

let nextId = 0;
/** A unique element id (for label for=… / aria-describedby). */
export function uid(prefix = 'f') {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** A labelled form field: returns {row, input}. `control` is 'input' or 'select' or
 * 'textarea'; `options` (for select) are [value, label] pairs or strings. */
export function field(label, attrs = {}, {control = 'input', options = []} = {}) {
  const id = attrs.id || uid();
  let input;
  if (control === 'select') {
    const {value: chosen, ...rest} = attrs;
    input = h('select', {...rest, id}, options.map((o) => {
      const [value, text] = Array.isArray(o) ? o : [o, o];
      return h('option', {value, selected: String(chosen ?? '') === String(value)}, text);
    }));
  } else {
    input = h(control, {...attrs, id});
  }
  const row = h('div', {class: 'field'}, h('label', {for: id}, label), input);
  return {row, input};
}
