/* sluice's web console: one page, four views (#/, #/source/NAME, #/dlq[/SINK[/ID]], #/tail).
 *
 * Everything shown comes from sluice's API, and handler output and payloads are hostile: the
 * DOM is built with createElement and text nodes only (no innerHTML, no attribute built from
 * data but hrefs made of encodeURIComponent'd names), and the server sends
 * Content-Security-Policy: default-src 'self', so nothing inline would run anyway.
 *
 * With server.auth set, the token is asked once and kept in sessionStorage (this tab only);
 * every request sends it as Authorization: Bearer. The live tail reads /logs/tail with fetch()
 * and parses the event stream itself, because EventSource cannot send that header. */
(function () {
  'use strict';

  var TOKEN_KEY = 'sluice.token';
  var main = document.getElementById('main');
  var timers = [];
  var charts = [];
  var tailAbort = null;

  /* ---------------------------------------------------------------- DOM */

  function el(tag, props) {
    var e = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        var v = props[k];
        if (v === undefined || v === null) return;
        if (k === 'text') e.textContent = String(v);
        else if (k === 'class') e.className = v;
        else if (k === 'on') Object.keys(v).forEach(function (ev) { e.addEventListener(ev, v[ev]); });
        else if (k === 'dataset') Object.keys(v).forEach(function (d) { e.dataset[d] = String(v[d]); });
        else e[k] = v;             /* id, type, value, href (built by us), hidden, disabled... */
      });
    }
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }

  function add(parent, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { add(parent, c); }); return; }
    parent.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function link(hash, text) { return el('a', { href: hash, text: text }); }

  function fmt(v, unit) {
    if (v === null || v === undefined || Number.isNaN(v)) return '–';
    if (unit === 's') {
      if (v < 1) return (v * 1000).toFixed(v < 0.01 ? 2 : 1) + ' ms';
      return v.toFixed(2) + ' s';
    }
    if (unit === 'B') {
      var u = ['B', 'KiB', 'MiB', 'GiB'], i = 0;
      while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
      return v.toFixed(i ? 1 : 0) + ' ' + u[i];
    }
    if (Math.abs(v) >= 100 || v === Math.round(v)) return String(Math.round(v));
    return v.toFixed(2);
  }

  function setStatus(text, bad) {
    var s = document.getElementById('status');
    s.textContent = text || '';
    s.className = bad ? 'error' : '';
  }

  /* ---------------------------------------------------------------- API */

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function api(path, opts) {
    opts = opts || {};
    var headers = { 'Accept': 'application/json' };
    if (token()) headers['Authorization'] = 'Bearer ' + token();
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    return fetch(path, {
      method: opts.method || 'GET', headers: headers, cache: 'no-store',
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      signal: opts.signal
    }).then(function (r) {
      if (r.status === 401) { askToken(r); throw new Error('a credential is needed'); }
      return r.text().then(function (t) {
        var j = null;
        try { j = t ? JSON.parse(t) : null; } catch (e) { j = null; }
        if (!r.ok) {
          var m = j && (j.message || j.Message) ? (j.message || j.Message) : ('HTTP ' + r.status);
          throw new Error(m);
        }
        return j;
      });
    });
  }

  function askToken(r) {
    var f = document.getElementById('login');
    if (!f.hidden) return;
    stopAll();
    clear(main);
    f.hidden = false;
    document.getElementById('login-error').textContent =
      token() ? 'That token was refused.' : '';
    sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById('token').focus();
  }

  document.getElementById('login').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var t = document.getElementById('token').value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    document.getElementById('token').value = '';
    document.getElementById('login').hidden = true;
    route();
  });

  document.getElementById('logout').addEventListener('click', function () {
    sessionStorage.removeItem(TOKEN_KEY);
    location.hash = '#/';
    location.reload();
  });

  /* ---------------------------------------------------------------- charts */

  function seriesMap(data) {
    var m = {};
    (data.series || []).forEach(function (s) {
      (m[s.name] = m[s.name] || {})[s.key] = s.v;
    });
    return m;
  }

  function lastOf(v) {
    if (!v) return null;
    for (var i = v.length - 1; i >= 0; i--) if (v[i] !== null) return v[i];
    return null;
  }

  var palette = ['#1f6feb', '#d1242f', '#1a7f37', '#9a6700', '#8250df', '#0a7ea4', '#bf3989',
                 '#57606a'];

  /* One chart: a line per key of series `name`, over the ring's timestamps. */
  function chart(parent, title, data, map, name, unit, keys) {
    var box = el('div', { class: 'chart', dataset: { chart: name } }, el('h3', { text: title }));
    parent.appendChild(box);
    var per = map[name] || {};
    keys = (keys || Object.keys(per)).filter(function (k) { return per[k]; });
    if (!keys.length || !data.t.length) {
      box.appendChild(el('p', { class: 'muted', text: 'no samples yet' }));
      return;
    }
    var xs = data.t.map(function (t) { return t / 1000; });
    var cols = [xs], series = [{}];
    keys.forEach(function (k, i) {
      cols.push(per[k]);
      series.push({ label: k || name, stroke: palette[i % palette.length], width: 1.5,
                    spanGaps: false,
                    value: function (u, v) { return fmt(v, unit); } });
    });
    var width = Math.max(300, box.clientWidth - 20);
    var u = new uPlot({
      width: width, height: 180, series: series,
      axes: [{}, { size: 60, values: function (u, vals) {
        return vals.map(function (v) { return fmt(v, unit); }); } }],
      scales: { x: { time: true } }, legend: { live: true }
    }, cols, box);
    charts.push(u);
  }

  /* ---------------------------------------------------------------- views */

  function stopAll() {
    timers.forEach(clearInterval);
    timers = [];
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    if (tailAbort) { tailAbort.abort(); tailAbort = null; }
  }

  function every(ms, fn) { fn(); timers.push(setInterval(fn, ms)); }

  function table(head, rows) {
    return el('table', null,
      el('thead', null, el('tr', null, head.map(function (h) { return el('th', { text: h }); }))),
      el('tbody', null, rows));
  }

  function td(v, cls) { return el('td', { class: cls, text: v }); }

  function viewOverview() {
    var root = el('div', { id: 'overview' });
    main.appendChild(root);
    every(10000, function () {
      Promise.all([api('/console/api/overview'), api('/console/api/series')])
        .then(function (res) {
          var o = res[0], data = res[1], m = seriesMap(data);
          charts.forEach(function (c) { c.destroy(); });
          charts = [];
          clear(root);
          var get = function (n, k) { return lastOf((m[n] || {})[k]); };
          document.getElementById('logout').hidden = !o.auth;

          root.appendChild(el('h2', { text: 'Sources' }));
          root.appendChild(table(['source', 'type', 'function', 'state', 'records/s', 'lag',
                                  'iterator age', 'errors/s', 'DLQ/s', 'in flight'],
            o.sources.map(function (s) {
              var lag = s.type === 'kafka' ? fmt(get('source.kafka_lag', s.name))
                : s.type === 'redis' ? fmt(get('source.redis_pending', s.name)) + ' pending, oldest ' +
                                       fmt(get('source.redis_oldest_age_s', s.name), 's')
                : s.type === 'postgres' ? fmt(get('source.pg_slot_lag_bytes', s.name), 'B') : '–';
              return el('tr', { dataset: { source: s.name } },
                el('td', null, link('#/source/' + encodeURIComponent(s.name), s.name)),
                td(s.type), td(s.function),
                el('td', { class: 'state state-' + s.state, text: s.state }),
                td(fmt(get('source.records_per_s', s.name)), 'num rate'),
                td(lag, 'num'),
                td(fmt(get('source.iterator_age_s', s.name), 's'), 'num'),
                td(fmt(get('source.errors_per_s', s.name)), 'num'),
                td(fmt(get('source.dlq_per_s', s.name)), 'num'),
                td(fmt(s.outstanding), 'num'));
            })));

          root.appendChild(el('h2', { text: 'Functions' }));
          root.appendChild(table(['function', 'runtime', 'state', 'invocations/s', 'errors/s',
                                  'throttles/s', 'p50', 'p99', 'concurrency', 'reserved',
                                  'provisioned', 'cold starts/s'],
            o.functions.map(function (f) {
              return el('tr', { dataset: { function: f.name } },
                td(f.name), td(f.runtime),
                el('td', { class: 'state state-' + f.state, text: f.state }),
                td(fmt(get('function.invocations_per_s', f.name)), 'num rate'),
                td(fmt(get('function.errors_per_s', f.name)), 'num'),
                td(fmt(get('function.throttles_per_s', f.name)), 'num'),
                td(fmt(get('function.duration_p50_s', f.name), 's'), 'num'),
                td(fmt(get('function.duration_p99_s', f.name), 's'), 'num'),
                td(fmt(get('function.concurrency', f.name)), 'num'),
                td(f.reserved_concurrency === null ? '–' : String(f.reserved_concurrency), 'num'),
                td(String(f.provisioned_concurrency), 'num'),
                td(fmt(get('function.cold_starts_per_s', f.name)), 'num'));
            })));

          root.appendChild(el('h2', { text: 'Sinks' }));
          root.appendChild(table(['sink', 'type', ''], o.sinks.map(function (s) {
            return el('tr', { dataset: { sink: s.name } }, td(s.name), td(s.type),
              el('td', null, s.readable ? link('#/dlq/' + encodeURIComponent(s.name),
                                               'dead letters') : ''));
          })));

          root.appendChild(el('h2', { text: 'Last hour' }));
          var grid = el('div', { class: 'charts' });
          root.appendChild(grid);
          chart(grid, 'Records received per second, by source', data, m, 'source.records_per_s');
          chart(grid, 'Kafka consumer lag (records)', data, m, 'source.kafka_lag');
          chart(grid, 'Redis messages pending', data, m, 'source.redis_pending');
          chart(grid, 'Postgres slot lag', data, m, 'source.pg_slot_lag_bytes', 'B');
          chart(grid, 'Iterator age', data, m, 'source.iterator_age_s', 's');
          chart(grid, 'Invocations per second, by function', data, m, 'function.invocations_per_s');
          chart(grid, 'Errors per second, by function', data, m, 'function.errors_per_s');
          chart(grid, 'Duration p99', data, m, 'function.duration_p99_s', 's');
          chart(grid, 'Concurrent executions', data, m, 'function.concurrency');
          setStatus('updated ' + new Date().toLocaleTimeString());
        })
        .catch(function (e) { setStatus(e.message, true); });
    });
  }

  function viewSource(name) {
    var root = el('div', { id: 'source' });
    main.appendChild(root);
    var msg = el('p', { id: 'source-message', class: 'muted' });

    function update(body) {
      msg.textContent = 'saving…';
      return api('/console/api/sources/' + encodeURIComponent(name)).then(function (s) {
        return api('/2015-03-31/event-source-mappings/' + encodeURIComponent(s.uuid),
                   { method: 'PUT', body: body });
      }).then(function () { msg.textContent = 'saved'; load(); })
        .catch(function (e) { msg.textContent = e.message; msg.className = 'error'; });
    }

    function load() {
      api('/console/api/sources/' + encodeURIComponent(name)).then(function (s) {
        return Promise.all([s,
          api('/2015-03-31/event-source-mappings/' + encodeURIComponent(s.uuid))
            .catch(function (e) { return { error: e.message }; }),
          api('/console/api/series?key=' + encodeURIComponent(name))]);
      }).then(function (res) {
        var s = res[0], esm = res[1], data = res[2], m = seriesMap(data);
        charts.forEach(function (c) { c.destroy(); });
        charts = [];
        clear(root);
        var enabled = s.state === 'Enabled' || s.state === 'Enabling';
        root.appendChild(el('h2', null, 'Source ', el('span', { id: 'source-name', text: s.name }),
                            ' ', el('span', { id: 'source-state', class: 'state state-' + s.state,
                                              text: s.state })));
        root.appendChild(el('form', { class: 'inline', on: { submit: function (ev) {
            ev.preventDefault();
            var n = parseInt(document.getElementById('batch-size').value, 10);
            update({ BatchSize: n });
          } } },
          el('button', { type: 'button', id: 'toggle', text: enabled ? 'Disable' : 'Enable',
                         on: { click: function () { update({ Enabled: !enabled }); } } }),
          el('label', null, 'batch size',
             el('input', { type: 'number', id: 'batch-size', min: 1, value: s.batch_size })),
          el('button', { type: 'submit', id: 'save-batch', text: 'Save batch size' })));
        root.appendChild(msg);

        root.appendChild(el('h2', { text: 'Settings' }));
        var rows = [['type', s.type], ['function', s.function], ['UUID', s.uuid],
                    ['batch size', s.batch_size],
                    ['batching window', s.maximum_batching_window_ms + ' ms'],
                    ['on failure', s.on_failure || '–'], ['records in flight', s.outstanding],
                    ['paused by backpressure', s.paused ? 'yes' : 'no']];
        if (esm && !esm.error) {
          Object.keys(esm).forEach(function (k) {
            var v = esm[k];
            if (['UUID', 'BatchSize', 'State'].indexOf(k) >= 0) return;
            rows.push([k, typeof v === 'object' ? JSON.stringify(v) : v]);
          });
        }
        root.appendChild(table(['setting', 'value'], rows.map(function (r) {
          return el('tr', null, td(r[0]), td(String(r[1])));
        })));

        root.appendChild(el('h2', { text: 'Lanes' }));
        root.appendChild(table(['lane', 'waiting', 'running batch', 'failed attempts', 'last error'],
          s.lanes.map(function (l) {
            return el('tr', null, td(l.key), td(l.waiting, 'num'), td(l.running, 'num'),
                      td(l.attempts, 'num'), td(l.error || ''));
          })));
        var parts = s.metrics.filter(function (x) { return x.labels.partition !== undefined; });
        if (parts.length) {
          var byPart = {};
          parts.forEach(function (x) {
            (byPart[x.labels.partition] = byPart[x.labels.partition] || {})[x.name] = x.value;
          });
          root.appendChild(el('h2', { text: 'Partitions' }));
          root.appendChild(table(['partition', 'lag (records)', 'iterator age'],
            Object.keys(byPart).sort(function (a, b) { return a - b; }).map(function (p) {
              return el('tr', null, td(p),
                td(fmt(byPart[p].sluice_kafka_offset_lag), 'num'),
                td(fmt(byPart[p].sluice_kafka_iterator_age_seconds, 's'), 'num'));
            })));
        }
        var gauges = s.metrics.filter(function (x) { return x.labels.partition === undefined; });
        root.appendChild(el('h2', { text: 'Gauges and counters now' }));
        root.appendChild(table(['metric', 'labels', 'value'], gauges.map(function (x) {
          return el('tr', null, td(x.name), td(JSON.stringify(x.labels)), td(fmt(x.value), 'num'));
        })));

        root.appendChild(el('h2', { text: 'Last hour' }));
        var grid = el('div', { class: 'charts' });
        root.appendChild(grid);
        chart(grid, 'Records per second', data, m, 'source.records_per_s');
        chart(grid, 'Errors per second', data, m, 'source.errors_per_s');
        chart(grid, 'Dead-lettered per second', data, m, 'source.dlq_per_s');
        chart(grid, s.type === 'kafka' ? 'Consumer lag' : s.type === 'redis' ? 'Pending' : 'Slot lag',
              data, m, s.type === 'kafka' ? 'source.kafka_lag' : s.type === 'redis'
                ? 'source.redis_pending' : 'source.pg_slot_lag_bytes', s.type === 'postgres' ? 'B' : '');
        chart(grid, 'Iterator age', data, m, s.type === 'redis' ? 'source.redis_oldest_age_s'
                                                                 : 'source.iterator_age_s', 's');
        setStatus('updated ' + new Date().toLocaleTimeString());
      }).catch(function (e) { setStatus(e.message, true); });
    }
    load();
    timers.push(setInterval(load, 10000));
  }

  function viewSinks() {
    var root = el('div', { id: 'dlq' });
    main.appendChild(root);
    api('/console/api/dlq').then(function (sinks) {
      root.appendChild(el('h2', { text: 'Dead letters' }));
      root.appendChild(table(['sink', 'type', ''], sinks.map(function (s) {
        return el('tr', { dataset: { sink: s.name } }, td(s.name), td(s.type),
          el('td', null, s.readable ? link('#/dlq/' + encodeURIComponent(s.name), 'open')
                                    : 'a Kafka topic: read it with a consumer'));
      })));
    }).catch(function (e) { setStatus(e.message, true); });
  }

  function dlqAction(sink, id, what, after) {
    var path = '/console/api/dlq/' + encodeURIComponent(sink) +
               (id !== null ? '/' + encodeURIComponent(id) : '');
    var p = what === 'delete' ? api(path, { method: 'DELETE' })
                              : api(path + '/redrive', { method: 'POST' });
    var out = document.getElementById('dlq-message');
    out.textContent = 'working…';
    out.className = 'muted';
    return p.then(function (r) {
      if (what === 'delete') out.textContent = 'deleted';
      else {
        out.textContent = 'redriven: ' + r.redriven + ', kept: ' + r.kept;
        (r.problems || []).forEach(function (x) {
          out.appendChild(el('div', { class: 'error', text: x.id + ': ' + x.message }));
        });
      }
      after();
    }).catch(function (e) { out.textContent = e.message; out.className = 'error'; });
  }

  function viewSink(sink) {
    var root = el('div', { id: 'dlq-sink' });
    main.appendChild(root);
    function load() {
      api('/console/api/dlq/' + encodeURIComponent(sink)).then(function (d) {
        clear(root);
        var writable = d.type !== 'file';
        root.appendChild(el('h2', null, 'Dead letters in ', el('span', { text: d.sink }), ' ',
                            el('span', { class: 'muted', id: 'dlq-total',
                                         text: d.total + ' entries' })));
        if (writable && d.total)
          root.appendChild(el('p', null, el('button', { type: 'button', id: 'redrive-all',
            text: 'Redrive all', on: { click: function () {
              if (confirm('Redrive every entry of ' + sink + '?')) dlqAction(sink, null, 'redrive', load);
            } } })));
        if (!writable)
          root.appendChild(el('p', { class: 'muted', text: 'A file sink is only read here: ' +
            'redrive and delete it with `sluice dlq` while sluice is stopped.' }));
        root.appendChild(el('div', { id: 'dlq-message' }));
        root.appendChild(table(['id', 'kind', 'function', 'condition', 'attempts', 'error',
                                'payload', ''],
          d.entries.map(function (e) {
            return el('tr', { dataset: { entry: e.id } },
              el('td', null, link('#/dlq/' + encodeURIComponent(sink) + '/' +
                                  encodeURIComponent(e.id), e.id)),
              td(e.kind), td(e.function), td(e.condition),
              td(e.attempts === null ? '–' : e.attempts, 'num'),
              td(e.error || ''), td(e.summary, 'summary'),
              el('td', null, writable ? [
                el('button', { type: 'button', text: 'Redrive', dataset: { action: 'redrive' },
                               on: { click: function () { dlqAction(sink, e.id, 'redrive', load); } } }),
                ' ',
                el('button', { type: 'button', text: 'Delete', dataset: { action: 'delete' },
                               on: { click: function () {
                                 if (confirm('Delete entry ' + e.id + '?')) dlqAction(sink, e.id, 'delete', load);
                               } } })] : null));
          })));
        if (d.truncated)
          root.appendChild(el('p', { class: 'muted', text: 'Only the first entries are shown.' }));
        setStatus('updated ' + new Date().toLocaleTimeString());
      }).catch(function (e) { setStatus(e.message, true); });
    }
    load();
  }

  function pretty(v) {
    return typeof v === 'string' ? v : JSON.stringify(v, null, 2);
  }

  function viewEntry(sink, id) {
    var root = el('div', { id: 'dlq-entry' });
    main.appendChild(root);
    api('/console/api/dlq/' + encodeURIComponent(sink) + '/' + encodeURIComponent(id))
      .then(function (e) {
        var back = function () { location.hash = '#/dlq/' + encodeURIComponent(sink); };
        root.appendChild(el('h2', null, 'Entry ', el('span', { text: e.id }), ' of ',
                            link('#/dlq/' + encodeURIComponent(sink), sink)));
        root.appendChild(table(['', ''], [
          el('tr', null, td('kind'), td(e.kind)),
          el('tr', null, td('function'), td(e.function)),
          el('tr', null, td('condition'), td(e.condition)),
          el('tr', null, td('attempts'), td(e.attempts === null ? '–' : e.attempts)),
          el('tr', null, td('error'), el('td', { id: 'entry-error', text: e.error || '–' }))]));
        root.appendChild(el('p', null,
          el('button', { type: 'button', id: 'entry-redrive', text: 'Redrive',
                         on: { click: function () { dlqAction(sink, e.id, 'redrive', back); } } }),
          ' ',
          el('button', { type: 'button', id: 'entry-delete', text: 'Delete',
                         on: { click: function () {
                           if (confirm('Delete entry ' + e.id + '?')) dlqAction(sink, e.id, 'delete', back);
                         } } })));
        root.appendChild(el('div', { id: 'dlq-message' }));
        root.appendChild(el('h2', { text: 'Payload' }));
        root.appendChild(el('pre', { id: 'entry-payload', text: pretty(e.payload) }));
        root.appendChild(el('h2', { text: 'Record' }));
        root.appendChild(el('pre', { id: 'entry-record', text: pretty(e.record) }));
      }).catch(function (e) { setStatus(e.message, true); });
  }

  /* Server-sent events over fetch: "data:" lines up to a blank line make one event. */
  function viewTail() {
    var root = el('div', { id: 'tail' });
    main.appendChild(root);
    var lines = el('div', { id: 'tail-lines', class: 'tail' });
    var state = el('span', { id: 'tail-state', class: 'muted', text: 'stopped' });
    var q = new URLSearchParams(location.hash.split('?')[1] || '');
    var input = function (id, label, value) {
      return el('label', null, label, el('input', { id: id, value: value || '' }));
    };
    var level = el('select', { id: 'tail-level' },
      ['', 'TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'].map(function (l) {
        return el('option', { value: l, text: l || 'any', selected: q.get('level') === l });
      }));
    var form = el('form', { class: 'inline', id: 'tail-form', on: { submit: function (ev) {
        ev.preventDefault();
        start();
      } } },
      input('tail-function', 'function', q.get('function')),
      input('tail-source', 'source', q.get('source')),
      input('tail-request', 'request id', q.get('request_id')),
      el('label', null, 'level', level),
      input('tail-since', 'since', q.get('since') || '10m'),
      el('button', { type: 'submit', id: 'tail-start', text: 'Follow' }),
      el('button', { type: 'button', id: 'tail-stop', text: 'Stop',
                     on: { click: function () { if (tailAbort) tailAbort.abort(); } } }),
      state);
    root.appendChild(el('h2', { text: 'Live tail' }));
    root.appendChild(form);
    root.appendChild(lines);

    function show(ev) {
      var row = el('div', { class: 'line level-' + (ev.level || '') });
      add(row, [el('span', { class: 'muted', text: (ev.timestamp || '') + ' ' }),
                el('span', { text: (ev.level || '') + ' ' }),
                el('span', { class: 'muted', text: (ev.function || '') +
                             (ev.source ? ' ← ' + ev.source : '') +
                             (ev.requestId ? ' ' + ev.requestId : '') + ' ' }),
                el('span', { class: 'msg', text: typeof ev.message === 'string' ? ev.message
                                                   : JSON.stringify(ev.message) })]);
      lines.appendChild(row);
      while (lines.childNodes.length > 2000) lines.removeChild(lines.firstChild);
      lines.scrollTop = lines.scrollHeight;
    }

    function start() {
      if (tailAbort) tailAbort.abort();
      clear(lines);
      var p = new URLSearchParams();
      [['function', 'tail-function'], ['source', 'tail-source'], ['request_id', 'tail-request'],
       ['level', 'tail-level'], ['since', 'tail-since']].forEach(function (x) {
        var v = document.getElementById(x[1]).value.trim();
        if (v) p.set(x[0], v);
      });
      var ctl = new AbortController();
      tailAbort = ctl;
      var headers = { 'Accept': 'text/event-stream' };
      if (token()) headers['Authorization'] = 'Bearer ' + token();
      state.textContent = 'connecting…';
      fetch('/logs/tail?' + p.toString(), { headers: headers, signal: ctl.signal, cache: 'no-store' })
        .then(function (r) {
          if (r.status === 401) { askToken(r); throw new Error('a credential is needed'); }
          if (!r.ok || !r.body) {
            return r.text().then(function (t) {
              var m = 'HTTP ' + r.status;
              try { m = JSON.parse(t).message || m; } catch (e) { /* text */ }
              throw new Error(m);
            });
          }
          state.textContent = 'following';
          var reader = r.body.getReader(), dec = new TextDecoder(), buf = '', data = [];
          function pump() {
            return reader.read().then(function (x) {
              if (x.done) { state.textContent = 'ended'; return; }
              buf += dec.decode(x.value, { stream: true });
              var nl;
              while ((nl = buf.indexOf('\n')) >= 0) {
                var line = buf.slice(0, nl).replace(/\r$/, '');
                buf = buf.slice(nl + 1);
                if (line === '') {
                  if (data.length) {
                    try { show(JSON.parse(data.join('\n'))); } catch (e) { show({ message: data.join('\n') }); }
                  }
                  data = [];
                } else if (line.indexOf('data:') === 0) {
                  data.push(line.slice(5).replace(/^ /, ''));
                }
              }
              return pump();
            });
          }
          return pump();
        })
        .catch(function (e) {
          if (e.name === 'AbortError') state.textContent = 'stopped';
          else { state.textContent = e.message; state.className = 'error'; }
        });
    }
    start();
  }

  /* ---------------------------------------------------------------- routing */

  function route() {
    stopAll();
    clear(main);
    setStatus('');
    var h = location.hash.replace(/^#/, '').split('?')[0];
    var parts = h.split('/').filter(Boolean).map(decodeURIComponent);
    ['overview', 'dlq', 'tail'].forEach(function (n) {
      document.getElementById('nav-' + n).className = '';
    });
    if (parts[0] === 'source' && parts[1]) { viewSource(parts[1]); }
    else if (parts[0] === 'dlq' && parts[2]) { document.getElementById('nav-dlq').className = 'active'; viewEntry(parts[1], parts[2]); }
    else if (parts[0] === 'dlq' && parts[1]) { document.getElementById('nav-dlq').className = 'active'; viewSink(parts[1]); }
    else if (parts[0] === 'dlq') { document.getElementById('nav-dlq').className = 'active'; viewSinks(); }
    else if (parts[0] === 'tail') { document.getElementById('nav-tail').className = 'active'; viewTail(); }
    else { document.getElementById('nav-overview').className = 'active'; viewOverview(); }
  }

  window.addEventListener('hashchange', route);
  route();
})();
