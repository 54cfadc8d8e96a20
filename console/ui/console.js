// The DiLoCo console's page: no framework, no build step, no inline code (the
// Content-Security-Policy allows only this file). Everything shown is written with
// textContent or SVG attributes, never parsed as HTML.
'use strict';

(function () {
  const POLL_MS = 2000;
  const LIST_POLL_MS = 5000;
  const HISTORY_POINTS = 500;
  const AUDIT_RECORDS = 50;

  const state = { csrf: null, user: null, timer: null, server: null, generation: 0 };
  const $ = (id) => document.getElementById(id);

  // ---- the API ---------------------------------------------------------------------------

  // Every request goes through here. A reply tagged x-upstream-auth-failed is the coordinator
  // refusing the console's credential: shown inline, the session stays. A 401 without the
  // tag is the console itself: the session is gone, show the login form.
  async function api(method, path, body) {
    const init = { method: method, credentials: 'same-origin', headers: {} };
    if (method !== 'GET') {
      init.headers['content-type'] = 'application/json';
      init.headers['x-csrf-token'] = state.csrf || '';
      init.body = JSON.stringify(body === undefined ? {} : body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      return { ok: false, status: 0, data: { error: 'the console cannot be reached' }, upstreamAuthFailed: false };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    const upstreamAuthFailed = response.headers.get('x-upstream-auth-failed') === '1';
    if (upstreamAuthFailed) {
      showUpstreamAuthError(data);
    } else if (response.status === 401 && path !== '/api/login') {
      signedOut();
    }
    return { ok: response.ok, status: response.status, data: data, upstreamAuthFailed: upstreamAuthFailed };
  }

  function errorText(reply) {
    if (reply.data && typeof reply.data.error === 'string') {
      return reply.data.error;
    }
    return 'HTTP ' + reply.status;
  }

  function showUpstreamAuthError(data) {
    const banner = $('upstream-auth-error');
    let text = 'Upstream authentication failed: the coordinator refused the console\'s credential. '
      + 'Your console session is still valid.';
    if (data && data.error) {
      text += ' (' + data.error + ')';
    }
    banner.textContent = text;
    banner.hidden = false;
  }

  function hideUpstreamAuthError() {
    $('upstream-auth-error').hidden = true;
  }

  // ---- sign in and out -------------------------------------------------------------------

  function show(section) {
    for (const id of ['login', 'server-list', 'server-page']) {
      $(id).hidden = id !== section;
    }
  }

  function signedOut() {
    state.csrf = null;
    state.user = null;
    stopPolling();
    hideUpstreamAuthError();
    $('whoami').textContent = '';
    $('logout').hidden = true;
    show('login');
  }

  function signedIn(reply) {
    state.csrf = reply.csrf_token;
    state.user = reply.user;
    $('whoami').textContent = reply.user;
    $('logout').hidden = false;
    $('login-error').textContent = '';
    route();
  }

  async function login(event) {
    event.preventDefault();
    const input = $('login-token');
    const token = input.value.trim();
    // The token leaves the page with this one request and is not kept.
    input.value = '';
    if (!token) {
      $('login-error').textContent = 'Paste a token first.';
      return;
    }
    $('login-submit').disabled = true;
    const reply = await api('POST', '/api/login', { token: token });
    $('login-submit').disabled = false;
    if (reply.ok) {
      signedIn(reply.data);
    } else {
      $('login-error').textContent = errorText(reply);
      show('login');
    }
  }

  async function logout() {
    await api('POST', '/api/logout');
    signedOut();
  }

  // ---- routing and polling ---------------------------------------------------------------

  function stopPolling() {
    if (state.timer !== null) {
      clearTimeout(state.timer);
      state.timer = null;
    }
    state.generation += 1;
  }

  // Runs `poll` now and every `interval` ms until the page changes.
  function startPolling(poll, interval) {
    stopPolling();
    const generation = state.generation;
    const tick = async () => {
      await poll();
      if (generation === state.generation && state.csrf !== null) {
        state.timer = setTimeout(tick, interval);
      }
    };
    tick();
  }

  function route() {
    if (state.csrf === null) {
      signedOut();
      return;
    }
    const match = /^#\/servers\/([^/]+)\/([^/]+)$/.exec(location.hash);
    if (match) {
      state.server = { namespace: decodeURIComponent(match[1]), name: decodeURIComponent(match[2]) };
      openServer();
    } else {
      state.server = null;
      show('server-list');
      startPolling(loadServers, LIST_POLL_MS);
    }
  }

  // ---- the list --------------------------------------------------------------------------

  function cell(row, text) {
    const td = document.createElement('td');
    td.textContent = text === null || text === undefined ? '–' : String(text);
    row.appendChild(td);
    return td;
  }

  function serverHash(namespace, name) {
    return '#/servers/' + encodeURIComponent(namespace) + '/' + encodeURIComponent(name);
  }

  async function loadServers() {
    const reply = await api('GET', '/api/servers');
    if (!reply.ok) {
      if (reply.status !== 401) {
        $('servers-error').textContent = errorText(reply);
      }
      return;
    }
    $('servers-error').textContent = '';
    const body = $('servers').tBodies[0];
    body.replaceChildren();
    for (const server of reply.data) {
      const row = document.createElement('tr');
      row.dataset.server = server.namespace + '/' + server.name;
      cell(row, server.namespace);
      const nameCell = cell(row, '');
      const link = document.createElement('a');
      link.href = serverHash(server.namespace, server.name);
      link.textContent = server.name;
      nameCell.appendChild(link);
      cell(row, server.phase);
      cell(row, server.round);
      cell(row, server.workers);
      cell(row, server.endpoint);
      cell(row, age(server.created));
      row.addEventListener('click', () => { location.hash = link.getAttribute('href'); });
      body.appendChild(row);
    }
    $('servers-empty').hidden = reply.data.length > 0;
  }

  // ---- one server ------------------------------------------------------------------------

  function serverPath(suffix) {
    const s = state.server;
    return '/api/servers/' + encodeURIComponent(s.namespace) + '/' + encodeURIComponent(s.name) + suffix;
  }

  function openServer() {
    $('server-title').textContent = state.server.namespace + '/' + state.server.name;
    for (const id of ['server-error', 'action-result', 'audit-note']) {
      $(id).textContent = '';
    }
    for (const id of ['phase', 'round', 'worker-count', 'train-loss', 'tokens-per-second',
      'outer-step', 'endpoint', 'created', 'token-rotated-at', 'certificate-expires-at']) {
      $(id).textContent = '–';
    }
    $('round').dataset.fromStatus = '';
    for (const id of ['conditions', 'workers-table', 'round-durations', 'audit']) {
      $(id).tBodies[0].replaceChildren();
    }
    for (const id of ['loss-plot', 'throughput-plot']) {
      $(id).replaceChildren();
    }
    hideUpstreamAuthError();
    show('server-page');
    startPolling(pollServer, POLL_MS);
  }

  async function pollServer() {
    const server = state.server;
    const [summary, status, history, audit] = await Promise.all([
      api('GET', serverPath('')),
      api('GET', serverPath('/status')),
      api('GET', serverPath('/history?max_points=' + HISTORY_POINTS)),
      api('GET', serverPath('/audit?limit=' + AUDIT_RECORDS)),
    ]);
    if (server !== state.server || state.csrf === null) {
      return;
    }
    const errors = [];
    if (summary.ok) {
      renderSummary(summary.data);
    } else {
      errors.push(errorText(summary));
    }
    if (status.ok) {
      renderStatus(status.data, auditRecords(audit));
    } else if (!status.upstreamAuthFailed && summary.ok) {
      errors.push('coordinator status: ' + errorText(status));
    }
    if (history.ok && history.data && Array.isArray(history.data.records)) {
      renderHistory(history.data.records);
    }
    if (audit.ok) {
      renderAudit(auditRecords(audit));
      $('audit-note').textContent = '';
    } else if (!audit.upstreamAuthFailed) {
      $('audit-note').textContent = 'Audit records unavailable: ' + errorText(audit);
    }
    if (status.ok && !status.upstreamAuthFailed && !audit.upstreamAuthFailed && !history.upstreamAuthFailed) {
      hideUpstreamAuthError();
    }
    $('server-error').textContent = errors.join(' · ');
  }

  function auditRecords(reply) {
    return reply.ok && reply.data && Array.isArray(reply.data.records) ? reply.data.records : [];
  }

  function renderSummary(s) {
    $('phase').textContent = s.phase || '–';
    if (s.round !== null && s.round !== undefined && $('round').dataset.fromStatus !== '1') {
      $('round').textContent = String(s.round);
    }
    $('endpoint').textContent = s.endpoint || '–';
    $('created').textContent = s.created ? s.created + ' (' + age(s.created) + ' ago)' : '–';
    $('token-rotated-at').textContent = s.token_rotated_at || 'never';
    $('certificate-expires-at').textContent = s.certificate_expires_at
      ? s.certificate_expires_at + ' (in ' + until(s.certificate_expires_at) + ')'
      : '–';
    const body = $('conditions').tBodies[0];
    body.replaceChildren();
    for (const c of s.conditions || []) {
      const row = document.createElement('tr');
      cell(row, c.type);
      cell(row, c.status);
      cell(row, c.reason);
      cell(row, c.message);
      body.appendChild(row);
    }
  }

  function renderStatus(status, auditRecords) {
    $('round').textContent = String(status.sync_round);
    $('round').dataset.fromStatus = '1';
    $('worker-count').textContent = String(status.num_registered);
    const stats = status.aggregate_stats || {};
    $('train-loss').textContent = stats.train_loss === null || stats.train_loss === undefined
      ? '–' : stats.train_loss.toFixed(4);
    $('tokens-per-second').textContent = stats.tok_per_sec === undefined ? '–' : stats.tok_per_sec.toFixed(1);
    $('outer-step').textContent = status.last_outer_step_seconds === null || status.last_outer_step_seconds === undefined
      ? '–' : status.last_outer_step_seconds.toFixed(3) + ' s';
    const identities = {};
    for (const record of auditRecords) {
      if (record.event === 'register' && record.worker_id && record.caller) {
        identities[record.worker_id] = record.caller;
      }
    }
    const folded = new Set(status.pending_submissions || []);
    const waiting = new Set(status.waiting_for || []);
    const receiving = new Set(status.receiving || []);
    const body = $('workers-table').tBodies[0];
    body.replaceChildren();
    for (const id of Object.keys(status.workers || {}).sort()) {
      const w = status.workers[id];
      const row = document.createElement('tr');
      row.dataset.worker = id;
      cell(row, id);
      cell(row, identities[id]);
      cell(row, w.hostname);
      cell(row, w.steps_per_second === null || w.steps_per_second === undefined ? null : w.steps_per_second.toFixed(2));
      cell(row, w.last_heartbeat ? age(w.last_heartbeat) + ' ago' : null);
      let round = '–';
      if (folded.has(id)) {
        round = 'contributed';
      } else if (receiving.has(id)) {
        round = 'uploading';
      } else if (waiting.has(id)) {
        round = 'waiting';
      }
      cell(row, round);
      body.appendChild(row);
    }
  }

  function renderHistory(records) {
    const loss = [];
    const evalLoss = [];
    const throughput = [];
    for (const r of records) {
      const label = 'round ' + r.sync_round + ', step ' + r.total_steps;
      if (typeof r.train_loss === 'number') {
        loss.push({ x: r.total_steps, y: r.train_loss, label: label + ': loss ' + r.train_loss.toFixed(4) });
      }
      if (typeof r.eval_loss === 'number') {
        evalLoss.push({ x: r.total_steps, y: r.eval_loss, label: label + ': eval loss ' + r.eval_loss.toFixed(4) });
      }
      throughput.push({ x: r.total_steps, y: r.tok_per_sec, label: label + ': ' + r.tok_per_sec.toFixed(1) + ' tokens/s' });
    }
    window.DilocoPlot.plot($('loss-plot'), [{ points: loss, marker: 'circle' }, { points: evalLoss, marker: 'square' }], 'steps', 'loss');
    window.DilocoPlot.plot($('throughput-plot'), [{ points: throughput, marker: 'circle' }], 'steps', 'tokens/s');
    renderRoundDurations(records);
  }

  function renderRoundDurations(records) {
    const starts = [];
    for (const r of records) {
      if (starts.length === 0 || starts[starts.length - 1].round !== r.sync_round) {
        starts.push({ round: r.sync_round, at: Date.parse(r.ts) });
      }
    }
    const body = $('round-durations').tBodies[0];
    body.replaceChildren();
    for (let i = starts.length - 2; i >= 0 && i >= starts.length - 11; i--) {
      const row = document.createElement('tr');
      cell(row, starts[i].round);
      cell(row, new Date(starts[i].at).toISOString());
      cell(row, duration((starts[i + 1].at - starts[i].at) / 1000));
      body.appendChild(row);
    }
  }

  function renderAudit(records) {
    const body = $('audit').tBodies[0];
    body.replaceChildren();
    for (const r of records.slice().reverse()) {
      const row = document.createElement('tr');
      cell(row, r.ts);
      cell(row, r.event);
      cell(row, r.caller);
      cell(row, r.worker_id);
      cell(row, r.round);
      cell(row, r.remote_addr);
      cell(row, r.details === null || r.details === undefined ? null : JSON.stringify(r.details));
      body.appendChild(row);
    }
  }

  // ---- actions ---------------------------------------------------------------------------

  function numberOf(id) {
    const text = $(id).value.trim();
    return text === '' ? undefined : Number(text);
  }

  const ACTIONS = {
    save_state: () => ({}),
    kick_worker: () => ({ worker_id: $('param-kick-worker').value.trim() }),
    update_optimizer: () => {
      const body = {};
      const lr = numberOf('param-lr');
      const momentum = numberOf('param-momentum');
      if (lr !== undefined) body.lr = lr;
      if (momentum !== undefined) body.momentum = momentum;
      return body;
    },
    update_num_workers: () => ({ num_workers: numberOf('param-num-workers') }),
    update_token_budget: () => ({ token_budget: numberOf('param-token-budget') }),
    command: () => {
      const body = { command: $('param-command').value };
      const worker = $('param-command-worker').value.trim();
      if (worker) body.worker_id = worker;
      return body;
    },
    shutdown: () => ({}),
  };

  const CONFIRM = {
    shutdown: 'Shut the coordinator down (after a checkpoint)?',
  };

  function result(text, failed) {
    const out = $('action-result');
    out.textContent = text;
    out.classList.toggle('error', failed);
  }

  async function runAction(action) {
    if (CONFIRM[action] && !window.confirm(CONFIRM[action])) {
      return;
    }
    const button = $('action-' + action);
    button.disabled = true;
    const reply = await api('POST', serverPath('/control/' + action), ACTIONS[action]());
    button.disabled = false;
    if (reply.ok) {
      result(action + ': ' + JSON.stringify(reply.data), false);
    } else {
      result(action + ' refused (HTTP ' + reply.status + '): ' + errorText(reply), true);
    }
  }

  async function rotate(what) {
    const question = what === 'token'
      ? 'Rotate the worker token? Workers have the grace period to pick up the new one.'
      : 'Re-issue the leaf certificates?';
    if (!window.confirm(question)) {
      return;
    }
    const reply = await api('POST', serverPath('/rotate/' + what));
    if (reply.ok) {
      result('rotation requested: ' + reply.data.annotation + '=' + reply.data.value, false);
    } else {
      result('rotate ' + what + ' refused (HTTP ' + reply.status + '): ' + errorText(reply), true);
    }
  }

  // ---- time ------------------------------------------------------------------------------

  function duration(seconds) {
    if (!isFinite(seconds)) return '–';
    seconds = Math.max(0, seconds);
    if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + ' s';
    if (seconds < 3600) return Math.floor(seconds / 60) + ' min ' + Math.floor(seconds % 60) + ' s';
    if (seconds < 86400) return Math.floor(seconds / 3600) + ' h ' + Math.floor(seconds % 3600 / 60) + ' min';
    return Math.floor(seconds / 86400) + ' d ' + Math.floor(seconds % 86400 / 3600) + ' h';
  }

  function age(timestamp) {
    if (!timestamp) return null;
    return duration((Date.now() - Date.parse(timestamp)) / 1000);
  }

  function until(timestamp) {
    return duration((Date.parse(timestamp) - Date.now()) / 1000);
  }

  // ---- start -----------------------------------------------------------------------------

  async function start() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    for (const action of Object.keys(ACTIONS)) {
      $('action-' + action).addEventListener('click', () => runAction(action));
    }
    $('rotate-token').addEventListener('click', () => rotate('token'));
    $('rotate-certificates').addEventListener('click', () => rotate('certificates'));
    window.addEventListener('hashchange', route);
    const reply = await api('GET', '/api/session');
    if (reply.ok) {
      signedIn(reply.data);
    } else {
      signedOut();
    }
  }

  document.addEventListener('DOMContentLoaded', start);
})();
