// Number, money, time and duration formatting. Deterministic (en-US digits, UTC times)
// so what a page shows can be compared with what the API returned.

const INT = new Intl.NumberFormat('en-US', {maximumFractionDigits: 0});

/** 1234567 -> "1,234,567"; null/undefined -> "—". */
export function formatInt(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return '—';
  return INT.format(Number(n));
}

/**
 * USD exactly as the API gave it (pico-dollar precision, never rounded to cents:
 * single requests cost fractions of a cent): 0.000123 -> "$0.000123", 12.5 -> "$12.50",
 * 1234 -> "$1,234.00". `unpriced` appends a marker that the sum is a lower bound.
 */
export function formatUsd(n, unpriced = false) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return '—';
  const value = Number(n);
  const sign = value < 0 ? '-' : '';
  const fixed = Math.abs(value).toFixed(12);
  let [whole, frac] = fixed.split('.');
  frac = frac.replace(/0+$/, '');
  if (frac.length < 2) frac = frac.padEnd(2, '0');
  const text = `${sign}$${INT.format(Number(whole))}.${frac}`;
  return unpriced ? `${text}+ (unpriced calls)` : text;
}

/** 0.4567 -> "45.7%"; null -> "—". */
export function formatPercent(share) {
  if (share === null || share === undefined) return '—';
  return `${(share * 100).toFixed(1)}%`;
}

function pad(n, width = 2) {
  return String(n).padStart(width, '0');
}

/** An RFC 3339 time -> "2025-01-31 12:00:05 UTC"; null -> "—". */
export function formatTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

/** A <time> element for an RFC 3339 time (machine-readable datetime, UTC text). */
export function timeElement(h, iso) {
  return h('time', {datetime: iso || null}, formatTime(iso));
}

/** Milliseconds -> "850 ms", "2.35 s", "3 min 05 s", "2 h 04 min". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return '—';
  const v = Number(ms);
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60_000) return `${(v / 1000).toFixed(2)} s`;
  const s = Math.round(v / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
}

/** Milliseconds between two RFC 3339 times, or null when either is missing. */
export function durationBetween(startIso, endIso) {
  if (!startIso || !endIso) return null;
  return new Date(endIso).getTime() - new Date(startIso).getTime();
}

/** A Date -> "YYYY-MM-DD" (UTC). */
export function isoDate(d) {
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}
