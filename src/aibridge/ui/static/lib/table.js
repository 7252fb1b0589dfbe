// Accessible data tables: a caption, <th scope="col"> headers, numeric columns aligned
// right, wrapped so a narrow screen scrolls the table rather than the page.
import {h} from './dom.js';

/**
 * columns: [{label, value: (row) => string|number|Node, numeric?: bool, key?: string}]
 * Returns the <tr> for one row (used to add rows later, e.g. when polling).
 */
export function tableRow(columns, row, attrs = {}) {
  return h('tr', attrs, columns.map((col) => {
    const cell = col.value(row);
    return h('td', {class: col.numeric ? 'num' : null, 'data-col': col.key || null}, cell);
  }));
}

/**
 * dataTable({caption, columns, rows, empty, rowAttrs}) -> {wrap, table, tbody}
 * `wrap` is what to put on the page; `empty` is the text shown when there are no rows;
 * `rowAttrs(row)` gives extra attributes for a row's <tr> (e.g. data-id).
 */
export function dataTable({caption, columns, rows = [], empty = 'Nothing to show.', rowAttrs}) {
  const tbody = h('tbody');
  const table = h('table', null,
    caption ? h('caption', null, caption) : null,
    h('thead', null, h('tr', null, columns.map((col) =>
      h('th', {scope: 'col', class: col.numeric ? 'num' : null}, col.label)))),
    tbody);
  const emptyRow = h('tr', {class: 'empty'},
    h('td', {colspan: String(columns.length)}, empty));
  const setRows = (list) => {
    tbody.replaceChildren();
    if (!list.length) tbody.appendChild(emptyRow);
    for (const row of list) tbody.appendChild(tableRow(columns, row, rowAttrs ? rowAttrs(row) : {}));
  };
  setRows(rows);
  const wrap = h('div', {class: 'table-wrap', tabindex: '0', role: 'region',
    'aria-label': caption || 'table'}, table);
  /** Insert rows above the current ones (newest first lists). */
  const prependRows = (list) => {
    if (!list.length) return;
    if (emptyRow.parentNode) emptyRow.remove();
    const first = tbody.firstChild;
    for (const row of list) {
      tbody.insertBefore(tableRow(columns, row, rowAttrs ? rowAttrs(row) : {}), first);
    }
  };
  /** Append rows below the current ones (next page). */
  const appendRows = (list) => {
    if (!list.length) return;
    if (emptyRow.parentNode) emptyRow.remove();
    for (const row of list) tbody.appendChild(tableRow(columns, row, rowAttrs ? rowAttrs(row) : {}));
  };
  return {wrap, table, tbody, setRows, prependRows, appendRows};
}
