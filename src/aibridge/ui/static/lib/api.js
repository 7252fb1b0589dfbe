// The admin API client the pages use. The session cookie is HttpOnly (this code never
// sees the key); unsafe requests echo the readable aibridge_csrf cookie in X-CSRF-Token.

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** An error answer of the admin API: {status, message, detail, validations}. */
export class ApiError extends Error {
  constructor(status, body) {
    const b = body && typeof body === 'object' ? body : {};
    super(b.message || `Request failed (HTTP ${status}).`);
    this.name = 'ApiError';
    this.status = status;
    this.detail = b.detail || '';
    this.validations = Array.isArray(b.validations) ? b.validations : [];
  }
}

/** The value of the aibridge_csrf cookie, or '' when not signed in by cookie. */
export function csrfToken() {
  for (const part of document.cookie.split(';')) {
    const [name, ...rest] = part.trim().split('=');
    if (name === 'aibridge_csrf') return decodeURIComponent(rest.join('='));
  }
  return '';
}

/** `path` with `query` (an object; empty, null and undefined values left out). */
export function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v === null || v === undefined || v === '') continue;
    params.set(k, String(v));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

async function request(method, path, {body, signal} = {}) {
  const headers = {Accept: 'application/json'};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (UNSAFE.has(method)) headers['X-CSRF-Token'] = csrfToken();
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    signal,
  });
  if (resp.status === 204) return null;
  let data = null;
  const text = await resp.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = {message: `Unexpected answer (HTTP ${resp.status}).`};
    }
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

/**
 * A client bound to one page view: `signal` aborts its requests when the view is left,
 * and `onUnauthorized` (a 401: signed out, key revoked) sends the app back to sign-in.
 * get(path, query) -> JSON; send(method, path, body) -> JSON or null (204).
 */
export function createApi({signal, onUnauthorized} = {}) {
  async function call(method, path, body) {
    try {
      return await request(method, path, {body, signal});
    } catch (err) {
      if (err instanceof ApiError && err.status === 401 && onUnauthorized) onUnauthorized(err);
      throw err;
    }
  }
  return {
    get: (path, query) => call('GET', withQuery(path, query)),
    send: (method, path, body) => call(method.toUpperCase(), path, body),
    signal,
  };
}

/** Exchange a gateway key for the session cookies; resolves to the /api/v1/me body. */
export function signIn(key) {
  return request('POST', '/api/v1/session', {body: {key}});
}

/** Clear the session cookies. */
export function signOut() {
  return request('DELETE', '/api/v1/session');
}

/** The signed-in user (/api/v1/me), or null when not signed in. */
export async function whoAmI() {
  try {
    return await request('GET', '/api/v1/me');
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null;
    throw err;
  }
}
