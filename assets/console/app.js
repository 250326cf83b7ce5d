// gridwatch console: the city map, alerts, fraud target and pipeline health, live over the
// event stream. Plain JS + SVG, no dependencies: the governance network is closed.
// The API contract is docs/read-model-and-api.md; this file only reads /api/v1/*.
'use strict';

(function () {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const VIEWS = ['15m', '1h', '24h'];
  const TOKEN_KEY = 'gridwatch.token';
  const RESOLVED_KEEP_MILLIS = 15 * 60 * 1000;
  const COUNTS_REFRESH_MILLIS = 120 * 1000;

  // Instrumentation read by the browser test (tests/it/console_browser.rs) and the soak script.
  const probe = {
    errors: [],
    firstRenderMillis: null,
    connection: 'connecting',
    streamEvents: 0,
    connects: 0,
    lastEventId: null,
    alertShown: {}, // fingerprint -> Date.now() when its item first entered the list
  };
  window.__gridwatch = probe;
  // Capture phase: also failed loads of scripts and styles, which do not bubble.
  window.addEventListener('error', (event) => {
    const source = event.target && event.target !== window ? (event.target.src || event.target.href || '') : '';
    probe.errors.push(String(event.message || source || 'error'));
  }, true);
  window.addEventListener('unhandledrejection', (event) => {
    probe.errors.push('unhandled rejection: ' + String(event.reason && (event.reason.stack || event.reason)));
  });

  // ---- language -------------------------------------------------------------------------
  const DICT = {
    zh: {
      title: '城市安全态势', view15m: '15 分钟', view1h: '1 小时', view24h: '24 小时',
      acknowledge: '确认', loading: '加载中…', resetView: '全市', alerts: '告警',
      noAlerts: '当前无告警', fraudTitle: '电诈发案下降目标', tokenPrompt: '请输入访问令牌',
      tokenSubmit: '确定', soundOn: '声音：开', soundOff: '声音：关', langToggle: 'English',
      live: '● 实时', connecting: '连接中…', reconnecting: '重新连接中…', unauthorized: '需要令牌',
      countsUpTo: '统计截至', legendTitle: '事件数', lifeSafety: '生命安全告警', cell: '网格',
      community: '社区', district: '区县', events: '事件', byType: '分类', noEvents: '无事件',
      since: '开始', resolved: '已解除', firing: '告警中', observed: '观测', threshold: '阈值',
      expected: '期望', severity: '级别', lastWindows: '最近窗口', cellAlerts: '本网格告警',
      windowStart: '窗口开始', count: '数量', none: '无', city: '全市', target: '目标',
      onTrack: '达标', offTrack: '未达标', insufficient: '数据不足', drop: '降幅',
      coverage: '已观测', days: '天', perCommunity: '（全社区）', learnedWeeks: '学习{n}周', seeded: '种子基线',
      minutesShort: '分钟', hoursShort: '小时', needs: '需', imported: '导入', splitWarning: '输入未按社区分区的社区',
      eventsPerSecond: '事件/秒', watermarkLag: '水位延迟', deadLetters: '死信(15分钟)',
      broker: 'Kafka', reachable: '可达', unreachable: '不可达', instances: '实例',
      partitions: '分区', source: '数据源', readModelLag: '读模型延迟', stale: '失联',
      secondsAgo: '秒前', minutesAgo: '分钟前', hoursAgo: '小时前', bannerPrefix: '⚠ 生命安全告警',
      more: '更多', communityScope: '全社区', districtScope: '全区', clusterScope: '{n}个相邻社区聚集', yearToDate: '年初至今', ci: '置信区间',
    },
    en: {
      title: 'City safety console', view15m: '15 min', view1h: '1 hour', view24h: '24 hours',
      acknowledge: 'Acknowledge', loading: 'Loading…', resetView: 'Whole city', alerts: 'Alerts',
      noAlerts: 'No alerts', fraudTitle: 'Fraud reduction target', tokenPrompt: 'Access token',
      tokenSubmit: 'OK', soundOn: 'Sound: on', soundOff: 'Sound: off', langToggle: '中文',
      live: '● Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', unauthorized: 'Token needed',
      countsUpTo: 'Counts up to', legendTitle: 'Events', lifeSafety: 'Life-safety alert', cell: 'Cell',
      community: 'Community', district: 'District', events: 'Events', byType: 'By type', noEvents: 'No events',
      since: 'Since', resolved: 'Resolved', firing: 'Firing', observed: 'observed', threshold: 'threshold',
      expected: 'expected', severity: 'Severity', lastWindows: 'Last windows', cellAlerts: 'Alerts of this cell',
      windowStart: 'Window start', count: 'Count', none: 'None', city: 'City', target: 'target',
      onTrack: 'On track', offTrack: 'Behind', insufficient: 'Insufficient data', drop: 'drop',
      coverage: 'observed', days: ' days', perCommunity: ' per community', learnedWeeks: '{n} learned weeks', seeded: 'seeded rates',
      minutesShort: ' min', hoursShort: ' h', needs: 'needs', imported: 'imported', splitWarning: 'communities split over input partitions',
      eventsPerSecond: 'events/s', watermarkLag: 'watermark lag', deadLetters: 'dead letters (15 min)',
      broker: 'Kafka', reachable: 'reachable', unreachable: 'unreachable', instances: 'instances',
      partitions: 'partitions', source: 'source', readModelLag: 'read model lag', stale: 'stale',
      secondsAgo: 's ago', minutesAgo: ' min ago', hoursAgo: ' h ago', bannerPrefix: '⚠ LIFE-SAFETY ALERT',
      more: 'more', communityScope: 'whole community', districtScope: 'whole district', clusterScope: 'cluster of {n} neighbouring communities', yearToDate: 'year to date', ci: 'interval',
    },
  };
  const EVENT_TYPES = {
    FIRE_SMOKE: ['烟感报警', 'Fire / smoke'], GAS_LEAK: ['燃气泄漏', 'Gas leak'],
    ELECTRICAL_FAULT: ['用电异常', 'Electrical fault'], SOS: ['一键报警', 'SOS'],
    ELDER_FALL: ['老人跌倒', 'Elder fall'], ELDER_INACTIVE: ['独居老人无活动', 'Elder inactive'],
    PERIMETER_INTRUSION: ['周界入侵', 'Perimeter intrusion'], TRIPWIRE: ['绊线报警', 'Tripwire'],
    HIGH_ALTITUDE_THROW: ['高空抛物', 'High-altitude throw'], DOOR_FORCED: ['强行开门', 'Door forced'],
    DEVICE_TAMPER: ['设备防拆', 'Device tamper'], EBIKE_IN_ELEVATOR: ['电动车进电梯', 'E-bike in elevator'],
    EBIKE_CHARGING: ['飞线充电', 'E-bike charging'], FIRE_LANE_BLOCKED: ['消防通道占用', 'Fire lane blocked'],
    LOITERING: ['人员徘徊', 'Loitering'], CROWD_GATHERING: ['人员聚集', 'Crowd gathering'],
    TAILGATING: ['尾随进入', 'Tailgating'], FRAUD_WARNING: ['涉诈预警', 'Fraud warning'],
    FRAUD_DISSUADED: ['涉诈劝阻', 'Fraud dissuaded'], FRAUD_REPORTED: ['涉诈接报', 'Fraud reported'],
    FRAUD_CASE_FILED: ['涉诈立案', 'Fraud case filed'], DEVICE_OFFLINE: ['设备离线', 'Device offline'],
    VIDEO_LOSS: ['视频丢失', 'Video loss'], UNSPECIFIED: ['未知', 'Unknown'],
  };

  const params = new URLSearchParams(location.search);
  const state = {
    lang: params.get('lang') === 'en' ? 'en' : (localStorage.getItem('gridwatch.lang') || 'zh'),
    view: VIEWS.includes(params.get('view')) ? params.get('view') : '1h',
    sound: false,
    cells: new Map(), // grid_id -> {props, el, counts: [15m, 1h, 24h] (null = unknown)}
    communities: new Map(), // community_id -> {name, district_id, district_name, district_name_en}
    districts: new Map(), // district_id -> {district_name, district_name_en} (from the GeoJSON)
    alerts: new Map(), // fingerprint -> Alert
    acknowledged: new Set(), // fingerprints of life-safety alerts the operator acknowledged
    seenAlerts: new Set(),
    status: null,
    fraud: null,
    watermark: null,
    breaks: [1, 2, 5, 10, 20, 50],
    selected: null,
    mapBox: null,
    viewBox: null,
    mapReady: false,
    alertsReady: false,
  };
  if (state.lang !== 'en') state.lang = 'zh';

  const $ = (id) => document.getElementById(id);
  const t = (key) => (DICT[state.lang][key] !== undefined ? DICT[state.lang][key] : key);
  const typeName = (type) => {
    const key = String(type || 'UNSPECIFIED').replace(/^EVENT_TYPE_/, '');
    const names = EVENT_TYPES[key];
    return names ? names[state.lang === 'en' ? 1 : 0] : key;
  };
  const districtName = (item) =>
    (state.lang === 'en' && item.district_name_en) ? item.district_name_en : (item.district_name || item.district_id || '');
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  const svg = (tag, attributes) => {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
    return node;
  };
  const fmtTime = (iso) => {
    if (!iso) return '–';
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return '–';
    return date.toLocaleTimeString(state.lang === 'en' ? 'en-GB' : 'zh-CN', { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  };
  const fmtAge = (iso) => {
    const millis = Date.now() - new Date(iso).getTime();
    if (!Number.isFinite(millis)) return '–';
    const seconds = Math.max(0, Math.round(millis / 1000));
    if (seconds < 90) return seconds + t('secondsAgo');
    if (seconds < 5400) return Math.round(seconds / 60) + t('minutesAgo');
    return Math.round(seconds / 3600) + t('hoursAgo');
  };
  const fmtNumber = (value, digits) =>
    (value === null || value === undefined || !Number.isFinite(Number(value))) ? '–' : Number(value).toFixed(digits);
  const fmtPercent = (value) =>
    (value === null || value === undefined || !Number.isFinite(Number(value))) ? '–' : Math.round(Number(value) * 100) + '%';

  // ---- layout -----------------------------------------------------------------------------
  function applyLayout() {
    const wall = params.get('wall') === '1' || (params.get('wall') !== '0' && window.innerWidth >= 1800);
    document.documentElement.classList.toggle('wall', wall);
  }
  applyLayout();
  window.addEventListener('resize', applyLayout);

  // ---- API access ---------------------------------------------------------------------------
  class Unauthorized extends Error {}

  function authHeaders(extra) {
    const headers = Object.assign({ Accept: 'application/json' }, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = 'Bearer ' + token;
    return headers;
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: authHeaders(), cache: 'no-store' });
    if (response.status === 401) throw new Unauthorized(path);
    if (!response.ok) throw new Error(path + ': HTTP ' + response.status);
    return response.json();
  }

  let tokenWaiters = [];
  function askForToken() {
    setConnection('unauthorized');
    $('token-dialog').hidden = false;
    $('token-input').focus();
    return new Promise((resolve) => tokenWaiters.push(resolve));
  }
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token-input').value = '';
    $('token-dialog').hidden = true;
    const waiters = tokenWaiters;
    tokenWaiters = [];
    waiters.forEach((resolve) => resolve());
  });

  // Runs `load` until it succeeds: a 401 asks for a token first, other failures retry later
  // (the service may be restarting). Failures are logged as warnings, not errors: a restart is
  // expected on the wall screen and must not look like a broken page.
  async function withRetry(label, load) {
    let delay = 500;
    for (;;) {
      try {
        return await load();
      } catch (error) {
        if (error instanceof Unauthorized) {
          await askForToken();
          continue;
        }
        console.warn('gridwatch: ' + label + ' failed, retrying: ' + error.message);
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 10000);
      }
    }
  }

  // ---- map ----------------------------------------------------------------------------------
  const SCALE = 10000; // map units per degree of longitude at the city's latitude

  function projector(bbox) {
    const lat0 = (bbox[1] + bbox[3]) / 2;
    const cos = Math.cos((lat0 * Math.PI) / 180);
    return (lon, lat) => [(lon - bbox[0]) * cos * SCALE, (bbox[3] - lat) * SCALE];
  }

  function ringOf(geometry) {
    if (!geometry) return [];
    if (geometry.type === 'Polygon') return geometry.coordinates;
    if (geometry.type === 'MultiPolygon') return geometry.coordinates.flat();
    return [];
  }

  function drawMap(collection) {
    const features = collection.features || [];
    const bbox = [Infinity, Infinity, -Infinity, -Infinity];
    for (const feature of features) {
      for (const ring of ringOf(feature.geometry)) {
        for (const [lon, lat] of ring) {
          if (lon < bbox[0]) bbox[0] = lon;
          if (lat < bbox[1]) bbox[1] = lat;
          if (lon > bbox[2]) bbox[2] = lon;
          if (lat > bbox[3]) bbox[3] = lat;
        }
      }
    }
    const project = projector(bbox);
    const group = $('cells');
    group.textContent = '';
    state.cells.clear();
    // Boundary edges: an edge shared by two cells of the same community is interior; an edge of
    // one cell only, or shared across communities (districts), is a community (district) line.
    const edges = new Map();
    const fragment = document.createDocumentFragment();
    for (const feature of features) {
      const props = feature.properties || {};
      const gridId = props.grid_id;
      if (!gridId) continue;
      let d = '';
      for (const ring of ringOf(feature.geometry)) {
        const points = ring.map(([lon, lat]) => project(lon, lat));
        d += 'M' + points.map((p) => p[0].toFixed(1) + ' ' + p[1].toFixed(1)).join('L') + 'Z';
        for (let i = 0; i + 1 < points.length; i += 1) {
          const a = points[i][0].toFixed(1) + ',' + points[i][1].toFixed(1);
          const b = points[i + 1][0].toFixed(1) + ',' + points[i + 1][1].toFixed(1);
          if (a === b) continue;
          const key = a < b ? a + ' ' + b : b + ' ' + a;
          const owners = edges.get(key);
          if (owners) owners.push(props);
          else edges.set(key, [props]);
        }
      }
      const path = svg('path', { d, 'data-grid': gridId });
      fragment.appendChild(path);
      const counts = [null, null, null];
      counts[VIEWS.indexOf(state.view)] = Number(props.events) || 0;
      const lifeSafety = Boolean(props.life_safety_firing);
      state.cells.set(gridId, { props, el: path, counts, lifeSafety, streamLifeSafety: lifeSafety });
      if (props.district_id && !state.districts.has(props.district_id)) {
        state.districts.set(props.district_id, { district_name: props.district_name, district_name_en: props.district_name_en });
      }
      if (props.community_id && !state.communities.has(props.community_id)) {
        state.communities.set(props.community_id, {
          name: props.community_name, district_id: props.district_id,
          district_name: props.district_name, district_name_en: props.district_name_en,
        });
      }
    }
    group.appendChild(fragment);
    // Communities are lines where a cell edge is not shared with a cell of the same community.
    let communityD = '';
    for (const [key, owners] of edges) {
      if (owners.length === 2 && owners[0].community_id === owners[1].community_id) continue;
      const [a, b] = key.split(' ');
      communityD += 'M' + a.replace(',', ' ') + 'L' + b.replace(',', ' ');
    }
    // Districts are sparse clusters of communities: each is drawn as the convex hull of its
    // cells' corners, labelled with its name.
    const districtPoints = new Map();
    for (const [key, owners] of edges) {
      for (const props of owners) {
        const id = props.district_id || '';
        if (!districtPoints.has(id)) districtPoints.set(id, { props, points: [] });
        for (const corner of key.split(' ')) districtPoints.get(id).points.push(corner.split(',').map(Number));
      }
    }
    let districtD = '';
    const labels = $('district-labels');
    labels.textContent = '';
    state.districtLabels = [];
    for (const { props, points } of districtPoints.values()) {
      const hull = convexHull(points);
      if (hull.length < 3) continue;
      districtD += 'M' + hull.map((p) => p[0].toFixed(1) + ' ' + p[1].toFixed(1)).join('L') + 'Z';
      const top = hull.reduce((best, p) => (p[1] < best[1] ? p : best), hull[0]);
      const xs = hull.map((p) => p[0]);
      const label = svg('text', { x: ((Math.min(...xs) + Math.max(...xs)) / 2).toFixed(1), y: top[1].toFixed(1) });
      labels.appendChild(label);
      state.districtLabels.push({ node: label, props });
    }
    $('community-lines').setAttribute('d', communityD);
    $('district-lines').setAttribute('d', districtD);
    const [x1, y1] = project(bbox[0], bbox[3]);
    const [x2, y2] = project(bbox[2], bbox[1]);
    const pad = (x2 - x1) * 0.02;
    state.mapBox = [x1 - pad, y1 - pad, x2 - x1 + 2 * pad, y2 - y1 + 2 * pad];
    state.project = project;
    setViewBox(state.mapBox.slice());
    state.cellSize = features.length ? Math.sqrt(((x2 - x1) * (y2 - y1)) / features.length) : 10;
    $('district-labels').setAttribute('font-size', (state.mapBox[2] / 45).toFixed(1));
    renderDistrictLabels();
    computeBreaks();
    recolourAll();
    // Alerts may have arrived before the map: mark their cells now.
    markAlertCells(Array.from(state.alerts.values()));
    $('map-loading').hidden = true;
    state.mapReady = true;
  }

  // Andrew's monotone chain.
  function convexHull(points) {
    const sorted = points.slice().sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
    const half = (list) => {
      const chain = [];
      for (const p of list) {
        while (chain.length >= 2 && cross(chain[chain.length - 2], chain[chain.length - 1], p) <= 0) chain.pop();
        chain.push(p);
      }
      chain.pop();
      return chain;
    };
    return half(sorted).concat(half(sorted.slice().reverse()));
  }

  function renderDistrictLabels() {
    for (const { node, props } of state.districtLabels || []) node.textContent = districtName(props);
  }

  // Colour classes: quantile-like breaks of the non-zero counts of the view, rounded to
  // 1-2-5 steps, recomputed only when the view's counts are reloaded (not on every update) so
  // that colours do not jump while the operator watches.
  function computeBreaks() {
    const index = VIEWS.indexOf(state.view);
    const values = [];
    for (const cell of state.cells.values()) {
      const value = cell.counts[index];
      if (value) values.push(value);
    }
    values.sort((a, b) => a - b);
    const top = values.length ? values[Math.floor(values.length * 0.98)] || values[values.length - 1] : 10;
    const nice = (value) => {
      const exponent = Math.pow(10, Math.floor(Math.log10(Math.max(1, value))));
      for (const step of [1, 2, 5, 10]) if (value <= step * exponent) return step * exponent;
      return 10 * exponent;
    };
    const breaks = [1];
    for (const fraction of [0.1, 0.25, 0.45, 0.7, 1.0]) {
      const candidate = nice(Math.max(1, top * fraction));
      if (candidate > breaks[breaks.length - 1]) breaks.push(candidate);
    }
    state.breaks = breaks;
    drawLegend();
  }

  function binOf(value) {
    if (!value) return 0;
    let bin = 0;
    state.breaks.forEach((edge, index) => { if (value >= edge) bin = index + 1; });
    return Math.min(bin, 6);
  }

  function drawLegend() {
    const legend = $('legend');
    legend.textContent = '';
    legend.appendChild(el('div', 'title', t('legendTitle') + ' · ' + t('view' + state.view)));
    const row = (swatchClass, label) => {
      const line = el('div', 'row');
      line.appendChild(el('span', 'swatch ' + swatchClass));
      line.appendChild(el('span', '', label));
      legend.appendChild(line);
    };
    row('sw0', '0');
    state.breaks.forEach((edge, index) => {
      const next = state.breaks[index + 1];
      row('sw' + (index + 1), next ? (next - 1 > edge ? edge + '–' + (next - 1) : String(edge)) : '≥ ' + edge);
    });
    row('swl', t('lifeSafety'));
  }

  function colourCell(cell) {
    const value = cell.counts[VIEWS.indexOf(state.view)];
    const bin = binOf(value);
    const name = bin ? 'b' + bin : '';
    const classes = [name];
    if (cell.lifeSafety) classes.push('ls');
    if (cell.firing) classes.push('alerting');
    if (state.selected === cell.props.grid_id) classes.push('selected');
    const className = classes.filter(Boolean).join(' ');
    if (cell.el.getAttribute('class') !== className) cell.el.setAttribute('class', className);
  }

  function recolourAll() {
    for (const cell of state.cells.values()) colourCell(cell);
  }

  // Counts of the chosen view (and counts by type for the tooltip) from the GeoJSON.
  async function loadMap(firstTime) {
    const collection = await withRetry('cells.geojson', () => getJson('/api/v1/cells.geojson?view=' + state.view));
    if (firstTime || !state.mapReady) {
      drawMap(collection);
      return;
    }
    const index = VIEWS.indexOf(state.view);
    for (const feature of collection.features || []) {
      const props = feature.properties || {};
      const cell = state.cells.get(props.grid_id);
      if (!cell) continue;
      cell.props = props;
      cell.counts[index] = Number(props.events) || 0;
      cell.streamLifeSafety = Boolean(props.life_safety_firing);
      cell.lifeSafety = cell.streamLifeSafety || isLifeCell(props.grid_id);
    }
    computeBreaks();
    recolourAll();
  }

  // ---- zoom and pan -------------------------------------------------------------------------
  const mapSvg = $('map');
  function setViewBox(box) {
    state.viewBox = box;
    mapSvg.setAttribute('viewBox', box.map((v) => v.toFixed(1)).join(' '));
  }
  function svgPoint(clientX, clientY) {
    const rect = mapSvg.getBoundingClientRect();
    const [x, y, w, h] = state.viewBox;
    // preserveAspectRatio xMidYMid meet: one scale for both axes, centred.
    const scale = Math.max(w / rect.width, h / rect.height);
    const offsetX = (rect.width * scale - w) / 2;
    const offsetY = (rect.height * scale - h) / 2;
    return [x - offsetX + (clientX - rect.left) * scale, y - offsetY + (clientY - rect.top) * scale, scale];
  }
  function zoomAt(factor, clientX, clientY) {
    if (!state.viewBox) return;
    const [x, y, w, h] = state.viewBox;
    const rect = mapSvg.getBoundingClientRect();
    const cx = clientX === undefined ? rect.left + rect.width / 2 : clientX;
    const cy = clientY === undefined ? rect.top + rect.height / 2 : clientY;
    const [px, py] = svgPoint(cx, cy);
    const minWidth = state.mapBox[2] / 60;
    const newW = Math.min(state.mapBox[2] * 2, Math.max(minWidth, w * factor));
    const ratio = newW / w;
    setViewBox([px - (px - x) * ratio, py - (py - y) * ratio, newW, h * ratio]);
  }
  mapSvg.addEventListener('wheel', (event) => {
    event.preventDefault();
    zoomAt(event.deltaY > 0 ? 1.25 : 0.8, event.clientX, event.clientY);
  }, { passive: false });
  let drag = null;
  mapSvg.addEventListener('pointerdown', (event) => {
    if (event.button !== 0 || !state.viewBox) return;
    drag = { x: event.clientX, y: event.clientY, box: state.viewBox.slice(), moved: false };
  });
  window.addEventListener('pointermove', (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    drag.moved = true;
    mapSvg.classList.add('dragging');
    const [, , scale] = svgPoint(event.clientX, event.clientY);
    setViewBox([drag.box[0] - dx * scale, drag.box[1] - dy * scale, drag.box[2], drag.box[3]]);
  });
  window.addEventListener('pointerup', () => {
    if (drag && drag.moved) state.suppressClick = true;
    drag = null;
    mapSvg.classList.remove('dragging');
  });
  $('zoom-in').addEventListener('click', () => zoomAt(0.6));
  $('zoom-out').addEventListener('click', () => zoomAt(1.6));
  $('zoom-reset').addEventListener('click', () => state.mapBox && setViewBox(state.mapBox.slice()));

  function focusOn(lonLat, gridId) {
    if (!state.project || !state.mapBox || !Array.isArray(lonLat)) return;
    const [px, py] = state.project(lonLat[0], lonLat[1]);
    const width = Math.max(state.mapBox[2] / 12, (state.cellSize || 10) * 14);
    const height = (width * state.mapBox[3]) / state.mapBox[2];
    setViewBox([px - width / 2, py - height / 2, width, height]);
    if (gridId && state.cells.has(gridId)) selectCell(gridId);
  }

  // ---- tooltip and cell panel ---------------------------------------------------------------
  const tooltip = $('tooltip');
  function placeName(props) {
    return [districtName(props), props.community_name].filter(Boolean).join(' · ');
  }
  mapSvg.addEventListener('mousemove', (event) => {
    const gridId = event.target && event.target.getAttribute && event.target.getAttribute('data-grid');
    if (!gridId || drag) { tooltip.hidden = true; return; }
    const cell = state.cells.get(gridId);
    if (!cell) return;
    tooltip.textContent = '';
    tooltip.appendChild(el('div', '', t('cell') + ' ' + gridId));
    tooltip.appendChild(el('div', 'muted', placeName(cell.props)));
    const counts = VIEWS.map((view, index) => t('view' + view) + ': ' + (cell.counts[index] === null ? '–' : cell.counts[index]));
    tooltip.appendChild(el('div', '', t('events') + ' — ' + counts.join(' · ')));
    const byType = cell.props.events_by_type || {};
    const entries = Object.entries(byType).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
    if (entries.length) {
      tooltip.appendChild(el('div', 'muted', t('byType') + ' (' + t('view' + state.view) + ')'));
      for (const [type, n] of entries) tooltip.appendChild(el('div', '', typeName(type) + ': ' + n));
    }
    const rect = $('map-panel').getBoundingClientRect();
    let left = event.clientX - rect.left + 14;
    let top = event.clientY - rect.top + 14;
    tooltip.hidden = false;
    if (left + tooltip.offsetWidth > rect.width) left = event.clientX - rect.left - tooltip.offsetWidth - 10;
    if (top + tooltip.offsetHeight > rect.height) top = event.clientY - rect.top - tooltip.offsetHeight - 10;
    tooltip.style.left = left + 'px';
    tooltip.style.top = top + 'px';
  });
  mapSvg.addEventListener('mouseleave', () => { tooltip.hidden = true; });
  mapSvg.addEventListener('click', (event) => {
    if (state.suppressClick) { state.suppressClick = false; return; }
    const gridId = event.target && event.target.getAttribute && event.target.getAttribute('data-grid');
    if (gridId) selectCell(gridId);
  });
  $('cell-panel-close').addEventListener('click', () => {
    $('cell-panel').hidden = true;
    const previous = state.cells.get(state.selected);
    state.selected = null;
    if (previous) colourCell(previous);
  });

  async function selectCell(gridId) {
    const previous = state.cells.get(state.selected);
    state.selected = gridId;
    if (previous) colourCell(previous);
    const cell = state.cells.get(gridId);
    if (cell) colourCell(cell);
    const body = $('cell-panel-body');
    body.textContent = t('loading');
    $('cell-panel').hidden = false;
    let detail;
    try {
      detail = await getJson('/api/v1/cells/' + encodeURIComponent(gridId));
    } catch (error) {
      if (error instanceof Unauthorized) { askForToken(); return; }
      body.textContent = error.message;
      return;
    }
    if (state.selected !== gridId) return;
    state.cellDetail = detail;
    renderCellPanel(detail);
  }

  function renderCellPanel(detail) {
    const body = $('cell-panel-body');
    body.textContent = '';
    body.appendChild(el('h3', '', t('cell') + ' ' + detail.grid_id));
    body.appendChild(el('div', 'muted', placeName(detail)));
    body.appendChild(el('p', '', t('events') + ' (' + t('view' + state.view) + '): ' + (detail.events !== undefined ? detail.events : '–')));
    const byType = Object.entries(detail.events_by_type || {}).sort((a, b) => (Number(b[1]) || 0) - (Number(a[1]) || 0));
    const table = el('table');
    if (byType.length) {
      for (const [type, n] of byType) {
        const row = el('tr');
        row.appendChild(el('td', '', typeName(type)));
        row.appendChild(el('td', 'n', Array.isArray(n) ? n.join(' / ') : n));
        table.appendChild(row);
      }
    } else {
      const row = el('tr');
      row.appendChild(el('td', 'muted', t('noEvents')));
      table.appendChild(row);
    }
    body.appendChild(table);
    const cellAlerts = detail.alerts || detail.active_alerts || [];
    body.appendChild(el('h3', '', t('cellAlerts')));
    if (!cellAlerts.length) body.appendChild(el('div', 'muted', t('none')));
    for (const alert of cellAlerts) {
      body.appendChild(el('div', '', ruleLine(alert) + ' · ' + (isFiring(alert) ? t('firing') : t('resolved')) + ' · ' + fmtTime(alert.starts_at)));
    }
    const windows = (detail.windows || []).slice(0, 12);
    if (windows.length) {
      body.appendChild(el('h3', '', t('lastWindows')));
      const windowTable = el('table');
      const head = el('tr');
      head.appendChild(el('th', '', t('windowStart')));
      head.appendChild(el('th', '', t('byType')));
      head.appendChild(el('th', '', t('count')));
      windowTable.appendChild(head);
      for (const pane of windows) {
        const row = el('tr');
        row.appendChild(el('td', '', fmtTime(pane.window_start || pane.windowStart || pane.start)));
        row.appendChild(el('td', '', typeName(pane.event_type || pane.eventType)));
        row.appendChild(el('td', 'n', pane.count));
        windowTable.appendChild(row);
      }
      body.appendChild(windowTable);
    }
  }

  // ---- alerts -------------------------------------------------------------------------------
  const isFiring = (alert) => String(alert.status).replace(/^ALERT_STATUS_/, '') === 'FIRING';
  function ruleLine(alert) {
    return alert.rule + ' · ' + typeName(alert.event_type);
  }
  function compareAlerts(a, b) {
    const firingA = isFiring(a);
    const firingB = isFiring(b);
    if (firingA !== firingB) return firingA ? -1 : 1;
    if (!firingA) return String(b.ends_at || '').localeCompare(String(a.ends_at || ''));
    if (Boolean(a.life_safety) !== Boolean(b.life_safety)) return a.life_safety ? -1 : 1;
    if ((a.severity || 9) !== (b.severity || 9)) return (a.severity || 9) - (b.severity || 9);
    return String(a.starts_at || '').localeCompare(String(b.starts_at || ''));
  }
  // A rule's window in the operators' units (15 分钟, 1 小时, 24 小时).
  function fmtDuration(seconds) {
    const minutes = Number(seconds) / 60;
    if (minutes < 60 || minutes % 60) return fmtNumber(minutes, 0) + t('minutesShort');
    return fmtNumber(minutes / 60, 0) + t('hoursShort');
  }
  // Statistical rules (spike, cusum) carry the expected count: observed vs expected says
  // more than their internal threshold. Count rules compare with their threshold.
  function measureLine(alert) {
    const digits = (value) => (Number(value) % 1 ? 1 : 0);
    const observed = t('observed') + ' ' + fmtNumber(alert.observed, digits(alert.observed));
    // The scale and scope it counted over, and what its expectation rests on.
    const scale = alert.window_seconds ? ' · ' + fmtDuration(alert.window_seconds) +
      (alert.scope === 'community' ? t('perCommunity') : '') : '';
    if (alert.expected !== null && alert.expected !== undefined) {
      const provenance = alert.baseline_weeks === null || alert.baseline_weeks === undefined ? ''
        : ' (' + (alert.baseline_weeks > 0 ? t('learnedWeeks').replace('{n}', alert.baseline_weeks) : t('seeded')) + ')';
      const pValue = alert.p_value ? ' · p=' + Number(alert.p_value).toExponential(1) : '';
      return observed + ' / ' + t('expected') + ' ' + fmtNumber(alert.expected, 1) + provenance + scale + pValue;
    }
    if (alert.threshold !== null && alert.threshold !== undefined) {
      return observed + ' / ' + t('threshold') + ' ' + fmtNumber(alert.threshold, digits(alert.threshold)) + scale;
    }
    return observed;
  }

  function applyAlert(alert, live) {
    if (!alert || !alert.fingerprint) return;
    const previous = state.alerts.get(alert.fingerprint);
    if (previous && String(previous.updated_at || '') > String(alert.updated_at || '')) return;
    state.alerts.set(alert.fingerprint, alert);
    if (isFiring(alert) && alert.life_safety && !state.seenAlerts.has(alert.fingerprint) && live) beep();
    if (isFiring(alert) && !state.seenAlerts.has(alert.fingerprint)) alert.__new = live;
    state.seenAlerts.add(alert.fingerprint);
  }

  function pruneAlerts() {
    const now = Date.now();
    for (const [fingerprint, alert] of state.alerts) {
      if (!isFiring(alert) && now - new Date(alert.ends_at || alert.updated_at || 0).getTime() > RESOLVED_KEEP_MILLIS) {
        state.alerts.delete(fingerprint);
        delete probe.alertShown[fingerprint];
      }
    }
  }

  let alertRenderPending = false;
  function scheduleAlertRender() {
    if (alertRenderPending) return;
    alertRenderPending = true;
    requestAnimationFrame(() => { alertRenderPending = false; renderAlerts(); });
  }

  function renderAlerts() {
    pruneAlerts();
    const list = $('alerts');
    const alerts = Array.from(state.alerts.values()).sort(compareAlerts);
    const existing = new Map();
    for (const item of list.children) existing.set(item.dataset.fingerprint, item);
    const fragment = document.createDocumentFragment();
    for (const alert of alerts) {
      let item = existing.get(alert.fingerprint);
      existing.delete(alert.fingerprint);
      if (!item) {
        item = el('li');
        item.dataset.fingerprint = alert.fingerprint;
        if (!probe.alertShown[alert.fingerprint]) probe.alertShown[alert.fingerprint] = Date.now();
        item.addEventListener('click', () => {
          const current = state.alerts.get(item.dataset.fingerprint);
          if (current) focusOn(current.centroid, current.grid_id);
        });
      }
      fillAlertItem(item, alert);
      fragment.appendChild(item);
    }
    for (const stale of existing.values()) stale.remove();
    list.appendChild(fragment);
    const firing = alerts.filter(isFiring).length;
    $('alert-count').textContent = firing ? '(' + firing + ')' : '';
    $('alerts-empty').hidden = alerts.length > 0;
    markAlertCells(alerts);
    updateBanner(alerts);
  }

  function fillAlertItem(item, alert) {
    const firing = isFiring(alert);
    const classes = ['sev' + (alert.severity || 4)];
    if (alert.life_safety && firing) classes.push('life');
    if (!firing) classes.push('resolved');
    if (alert.__new) { classes.push('new'); alert.__new = false; }
    item.className = classes.join(' ');
    item.dataset.grid = alert.grid_id || '';
    item.dataset.status = firing ? 'FIRING' : 'RESOLVED';
    item.dataset.lifeSafety = alert.life_safety ? 'true' : 'false';
    item.textContent = '';
    const head = el('div', 'head');
    head.appendChild(el('span', 'rule', ruleLine(alert)));
    head.appendChild(el('span', 'badge', (alert.life_safety ? t('lifeSafety') + ' · ' : '') + 'S' + (alert.severity || '?')));
    item.appendChild(head);
    const community = alert.community_name || alert.community_id || '';
    const community_known = alert.community_name || alert.community_id;
    // A space-time cluster names its centre community and lists every member.
    const members = Array.isArray(alert.cluster_members) ? alert.cluster_members : [];
    const grid = alert.grid_id ? t('cell') + ' ' + alert.grid_id
      : members.length ? t('clusterScope').replace('{n}', members.length)
      : community_known ? t('communityScope')
      : alert.scope === 'city' ? t('city') : t('districtScope');
    item.appendChild(el('div', 'place', [districtName(alert), community, grid].filter(Boolean).join(' / ')));
    if (members.length) {
      item.appendChild(el('div', 'members', members
        .map((member) => member.community_name || member.community_id).join(state.lang === 'en' ? ', ' : '、')));
    }
    const meta = el('div', 'meta');
    meta.appendChild(el('span', 'since', firing
      ? t('since') + ' ' + fmtTime(alert.starts_at) + ' (' + fmtAge(alert.starts_at) + ')'
      : t('resolved') + ' ' + fmtTime(alert.ends_at)));
    meta.appendChild(el('span', 'measure', measureLine(alert)));
    item.appendChild(meta);
  }

  function markAlertCells(alerts) {
    const firingCells = new Set();
    const lifeCells = new Set();
    const markers = $('markers');
    markers.textContent = '';
    for (const alert of alerts) {
      if (!isFiring(alert)) continue;
      if (alert.grid_id) {
        firingCells.add(alert.grid_id);
        if (alert.life_safety) lifeCells.add(alert.grid_id);
      }
      if (state.project && Array.isArray(alert.centroid)) {
        const [cx, cy] = state.project(alert.centroid[0], alert.centroid[1]);
        const r = (state.cellSize || 10) * (alert.grid_id ? 3 : 4);
        markers.appendChild(svg('circle', { cx: cx.toFixed(1), cy: cy.toFixed(1), r: r.toFixed(1), class: alert.life_safety ? 'ls' : '', 'data-fingerprint': alert.fingerprint }));
      }
    }
    for (const cell of state.cells.values()) {
      const gridId = cell.props.grid_id;
      const firing = firingCells.has(gridId);
      // The stream's per-cell flag and the alerts agree eventually; either marks the cell.
      const life = lifeCells.has(gridId) || (cell.streamLifeSafety === true);
      if (cell.firing !== firing || cell.lifeSafety !== life) {
        cell.firing = firing;
        cell.lifeSafety = life;
        colourCell(cell);
      }
    }
  }

  function updateBanner(alerts) {
    const pending = alerts.filter((alert) => isFiring(alert) && alert.life_safety && !state.acknowledged.has(alert.fingerprint));
    const banner = $('banner');
    if (!pending.length) { banner.hidden = true; return; }
    const first = pending[0];
    const place = [districtName(first), first.community_name, first.grid_id].filter(Boolean).join(' / ');
    $('banner-text').textContent = t('bannerPrefix') + ': ' + typeName(first.event_type) + ' — ' + place +
      ' — ' + fmtTime(first.starts_at) + (pending.length > 1 ? ' (+' + (pending.length - 1) + ')' : '');
    banner.dataset.fingerprint = first.fingerprint;
    banner.hidden = false;
  }
  $('banner-ack').addEventListener('click', () => {
    const fingerprint = $('banner').dataset.fingerprint;
    const alert = state.alerts.get(fingerprint);
    if (fingerprint) state.acknowledged.add(fingerprint);
    if (alert) focusOn(alert.centroid, alert.grid_id);
    scheduleAlertRender();
  });

  async function loadAlerts() {
    const answer = await withRetry('alerts', () => getJson('/api/v1/alerts?limit=500'));
    const fresh = new Set();
    for (const alert of answer.alerts || []) {
      fresh.add(alert.fingerprint);
      applyAlert(alert, state.alertsReady);
    }
    // Alerts the service no longer lists (e.g. after a restart) are gone.
    for (const fingerprint of Array.from(state.alerts.keys())) {
      if (!fresh.has(fingerprint)) state.alerts.delete(fingerprint);
    }
    if (answer.watermark) setWatermark(answer.watermark);
    state.alertsReady = true;
    renderAlerts();
  }

  // ---- sound --------------------------------------------------------------------------------
  let audio = null;
  function beep() {
    if (!state.sound || !audio) return;
    const now = audio.currentTime;
    for (let i = 0; i < 3; i += 1) {
      const oscillator = audio.createOscillator();
      const gain = audio.createGain();
      oscillator.type = 'square';
      oscillator.frequency.value = 880;
      gain.gain.setValueAtTime(0.0001, now + i * 0.35);
      gain.gain.exponentialRampToValueAtTime(0.3, now + i * 0.35 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.35 + 0.25);
      oscillator.connect(gain).connect(audio.destination);
      oscillator.start(now + i * 0.35);
      oscillator.stop(now + i * 0.35 + 0.3);
    }
  }
  $('sound-toggle').addEventListener('click', () => {
    state.sound = !state.sound;
    // An AudioContext may only start after a user gesture: this click is one.
    if (state.sound && !audio && (window.AudioContext || window.webkitAudioContext)) {
      audio = new (window.AudioContext || window.webkitAudioContext)();
    }
    if (audio && audio.state === 'suspended') audio.resume();
    renderLabels();
    if (state.sound) beep();
  });

  // ---- fraud --------------------------------------------------------------------------------
  function fraudStatus(entry) {
    if (entry.status === 'insufficient_data' || entry.on_track === null || entry.on_track === undefined) return 'na';
    return entry.on_track ? 'on' : 'off';
  }
  function fraudBar(entry, target) {
    // Axis from −50 % (more cases) to +100 % drop.
    const low = -0.5;
    const high = 1;
    const x = (value) => (((Math.min(high, Math.max(low, value)) - low) / (high - low)) * 200).toFixed(1);
    const bar = svg('svg', { viewBox: '0 0 200 20', preserveAspectRatio: 'none' });
    bar.appendChild(svg('line', { class: 'axis', x1: 0, y1: 10, x2: 200, y2: 10 }));
    bar.appendChild(svg('line', { class: 'axis', x1: x(0), y1: 4, x2: x(0), y2: 16 }));
    if (entry.drop !== null && entry.drop !== undefined) {
      const ciLow = entry.drop_ci_low === null || entry.drop_ci_low === undefined ? low : entry.drop_ci_low;
      const ciHigh = entry.drop_ci_high === null || entry.drop_ci_high === undefined ? high : entry.drop_ci_high;
      bar.appendChild(svg('line', { class: 'ci', x1: x(ciLow), y1: 10, x2: x(ciHigh), y2: 10 }));
      bar.appendChild(svg('circle', { class: 'point', cx: x(entry.drop), cy: 10, r: 3.5 }));
    }
    bar.appendChild(svg('line', { class: 'target', x1: x(target), y1: 1, x2: x(target), y2: 19 }));
    return bar;
  }
  function renderFraud() {
    const report = state.fraud;
    const list = $('fraud');
    list.textContent = '';
    if (!report || !report.city) { $('fraud-head').textContent = t('loading'); return; }
    const target = Number(report.target_drop) || 0.6;
    // How much of the year was observed: below the minimum there is no verdict (数据不足),
    // and the operator sees why and how far it is.
    const city = report.city;
    const coveredDays = Number(city.covered_days) || 0;
    const importedDays = Number(city.covered_days_imported) || 0;
    let coverage = t('coverage') + ' ' + coveredDays.toFixed(coveredDays < 10 ? 1 : 0) + t('days');
    if (importedDays > 0) coverage += '（' + t('imported') + ' ' + importedDays.toFixed(0) + t('days') + '）';
    if (city.status === 'insufficient_data') {
      coverage += ' · ' + t('insufficient') + '，' + t('needs') + ' ' + Number(report.minimum_coverage_days || 14).toFixed(0) + t('days');
    }
    if ((report.split_communities || []).length > 0) {
      coverage += ' · ⚠ ' + t('splitWarning') + ' ' + report.split_communities.length;
    }
    $('fraud-head').textContent = t('target') + ' ' + fmtPercent(target) + ' · ' + t('yearToDate') + ' ' +
      (report.year || '') + ' · ' + t('ci') + ' ' + fmtPercent(report.confidence) + ' · ' + coverage;
    $('fraud-head').dataset.status = city.status || '';
    const byDistance = (a, b) => {
      const da = a.distance_from_target;
      const db = b.distance_from_target;
      if (da === null || da === undefined) return (db === null || db === undefined) ? 0 : 1;
      if (db === null || db === undefined) return -1;
      return db - da;
    };
    const rows = [Object.assign({ __scope: 'city' }, report.city)]
      .concat((report.districts || []).slice().sort(byDistance).map((d) => Object.assign({ __scope: 'district' }, d)))
      .concat((report.communities || []).slice().sort(byDistance).map((c) => Object.assign({ __scope: 'community' }, c)));
    for (const entry of rows) {
      const item = el('li', entry.__scope);
      const name = entry.__scope === 'city' ? t('city')
        : entry.__scope === 'district' ? districtName(Object.assign(
          { district_name: entry.district_name, district_name_en: entry.district_name_en, district_id: entry.district_code || entry.district_id },
          state.districts.get(entry.district_code || entry.district_id) || {}))
          : (entry.community_name || entry.community_id);
      const label = el('span', 'name', name);
      label.title = name + ' · ' + t('drop') + ' ' + fmtPercent(entry.drop) + ' [' + fmtPercent(entry.drop_ci_low) + ', ' + fmtPercent(entry.drop_ci_high) + ']' +
        ' · ' + t('coverage') + ' ' + (Number(entry.covered_days) || 0).toFixed(1) + t('days');
      item.appendChild(label);
      item.appendChild(fraudBar(entry, target));
      const status = fraudStatus(entry);
      item.appendChild(el('span', 'status ' + status, status === 'on' ? t('onTrack') : status === 'off' ? t('offTrack') : t('insufficient')));
      item.dataset.status = status;
      list.appendChild(item);
    }
  }
  async function loadFraud() {
    try {
      state.fraud = await getJson('/api/v1/fraud');
    } catch (error) {
      if (error instanceof Unauthorized) throw error;
      console.warn('gridwatch: fraud report not available yet: ' + error.message);
    }
    renderFraud();
  }

  // ---- pipeline strip -------------------------------------------------------------------------
  function renderStatus() {
    const status = state.status;
    const strip = $('pipeline');
    strip.textContent = '';
    if (!status) return;
    const item = (key, value, className) => {
      const span = el('span', 'item');
      span.appendChild(el('span', 'k', t(key)));
      span.appendChild(el('span', 'v ' + (className || ''), value));
      strip.appendChild(span);
    };
    item('eventsPerSecond', fmtNumber(status.events_per_second, 1));
    const lag = Number(status.watermark_lag_seconds);
    item('watermarkLag', fmtNumber(lag, 1) + ' s', lag > 120 ? 'bad' : '');
    const dead = Object.entries(status.dead_letters_15m || {}).filter(([, n]) => n > 0);
    item('deadLetters', dead.length ? dead.map(([reason, n]) => reason + ' ' + n).join(', ') : '0', dead.length ? 'bad' : '');
    if (status.broker_reachable !== null && status.broker_reachable !== undefined) {
      item('broker', status.broker_reachable ? t('reachable') : t('unreachable'), status.broker_reachable ? 'good' : 'bad');
    }
    const instances = status.instances || [];
    const stale = instances.filter((instance) => instance.stale).length;
    item('instances', instances.length + (stale ? ' (' + stale + ' ' + t('stale') + ')' : ''), stale ? 'bad' : '');
    const assigned = instances.reduce((sum, instance) => sum + ((instance.partitions || []).length), 0);
    item('partitions', (status.partitions_total !== undefined && status.partitions_total !== null)
      ? assigned + ' / ' + status.partitions_total : String(assigned));
    const sources = status.source ? [status.source]
      : Array.from(new Set(instances.map((instance) => instance.source).filter(Boolean)));
    if (sources.length) item('source', sources.join(', '));
    if (status.read_model_lag_seconds !== undefined) item('readModelLag', fmtNumber(status.read_model_lag_seconds, 1) + ' s');
    if (status.watermark) setWatermark(status.watermark);
  }
  async function loadStatus() {
    try {
      state.status = await getJson('/api/v1/status');
    } catch (error) {
      if (error instanceof Unauthorized) throw error;
      console.warn('gridwatch: status not available yet: ' + error.message);
    }
    renderStatus();
  }

  function setWatermark(watermark) {
    if (!watermark || (state.watermark && watermark < state.watermark && state.connectionStable)) return;
    state.watermark = watermark;
    $('counts-up-to').textContent = t('countsUpTo') + ' ' + fmtTime(watermark);
  }

  // ---- live stream ----------------------------------------------------------------------------
  function setConnection(name) {
    probe.connection = name;
    const node = $('connection');
    node.dataset.state = name;
    node.textContent = t(name === 'live' ? 'live' : name);
  }

  function applyCells(data) {
    const views = data.views || VIEWS;
    for (const update of data.cells || []) {
      const cell = state.cells.get(update.grid_id);
      if (!cell) continue;
      (update.events || []).forEach((n, index) => {
        const at = VIEWS.indexOf(views[index]);
        if (at >= 0) cell.counts[at] = Number(n) || 0;
      });
      if (update.life_safety_firing !== undefined) cell.streamLifeSafety = Boolean(update.life_safety_firing);
      const life = cell.streamLifeSafety || isLifeCell(update.grid_id);
      cell.lifeSafety = life;
      colourCell(cell);
    }
    if (data.watermark) setWatermark(data.watermark);
  }
  function isLifeCell(gridId) {
    for (const alert of state.alerts.values()) {
      if (alert.grid_id === gridId && alert.life_safety && isFiring(alert)) return true;
    }
    return false;
  }

  function handleEvent(name, data) {
    probe.streamEvents += 1;
    switch (name) {
      case 'alert': applyAlert(data, true); scheduleAlertRender(); break;
      case 'cells': applyCells(data); break;
      case 'status': state.status = data; renderStatus(); break;
      case 'fraud': state.fraud = data; renderFraud(); break;
      case 'reset': reloadAll(); break;
      default: break;
    }
  }

  async function readStream(signal) {
    const headers = authHeaders({ Accept: 'text/event-stream' });
    if (probe.lastEventId !== null) headers['Last-Event-ID'] = probe.lastEventId;
    const response = await fetch('/api/v1/stream', { headers, signal, cache: 'no-store' });
    if (response.status === 401) throw new Unauthorized('stream');
    if (!response.ok || !response.body) throw new Error('stream: HTTP ' + response.status);
    probe.connects += 1;
    setConnection('live');
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let eventName = 'message';
    let dataLines = [];
    const opened = Date.now();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (Date.now() - opened > 5000) state.backoff = 500; // a stream that held is healthy
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer[newline] === '\r' && buffer[newline + 1] === '\n' ? 2 : 1));
        if (line === '') {
          if (dataLines.length) {
            let data = null;
            try { data = JSON.parse(dataLines.join('\n')); } catch (error) { console.warn('gridwatch: bad stream data: ' + error.message); }
            if (data !== null) handleEvent(eventName, data);
          }
          eventName = 'message';
          dataLines = [];
          continue;
        }
        if (line[0] === ':') continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let fieldValue = colon < 0 ? '' : line.slice(colon + 1);
        if (fieldValue[0] === ' ') fieldValue = fieldValue.slice(1);
        if (field === 'event') eventName = fieldValue;
        else if (field === 'data') dataLines.push(fieldValue);
        else if (field === 'id') probe.lastEventId = fieldValue;
      }
    }
  }

  async function streamLoop() {
    state.backoff = 500;
    let first = true;
    for (;;) {
      if (!first) {
        // After a drop the service may have restarted: re-read the small REST answers so the
        // screen is right even when its replay buffer no longer knows our Last-Event-ID.
        try {
          await Promise.all([loadAlertsOnce(), loadStatus(), loadFraud()]);
        } catch (error) {
          if (error instanceof Unauthorized) { await askForToken(); continue; }
        }
      }
      first = false;
      try {
        await readStream();
        console.warn('gridwatch: stream ended, reconnecting');
      } catch (error) {
        if (error instanceof Unauthorized) { await askForToken(); continue; }
        console.warn('gridwatch: stream failed, reconnecting: ' + error.message);
      }
      setConnection('reconnecting');
      const delay = state.backoff * (0.75 + Math.random() * 0.5);
      state.backoff = Math.min(state.backoff * 2, 10000);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
  async function loadAlertsOnce() {
    const answer = await getJson('/api/v1/alerts?limit=500');
    const fresh = new Set();
    for (const alert of answer.alerts || []) { fresh.add(alert.fingerprint); applyAlert(alert, true); }
    for (const fingerprint of Array.from(state.alerts.keys())) if (!fresh.has(fingerprint)) state.alerts.delete(fingerprint);
    renderAlerts();
  }

  async function reloadAll() {
    await Promise.all([loadMap(false), loadAlerts(), loadStatus(), loadFraud()]);
  }

  // ---- labels and controls ------------------------------------------------------------------
  function renderLabels() {
    document.documentElement.lang = state.lang === 'en' ? 'en' : 'zh-CN';
    document.title = 'gridwatch · ' + t('title');
    for (const node of document.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
    $('lang-toggle').textContent = t('langToggle');
    $('sound-toggle').textContent = state.sound ? t('soundOn') : t('soundOff');
    $('sound-toggle').setAttribute('aria-pressed', state.sound ? 'true' : 'false');
    for (const button of document.querySelectorAll('button.view')) {
      button.classList.toggle('active', button.dataset.view === state.view);
    }
    setConnection(probe.connection);
    if (state.watermark) $('counts-up-to').textContent = t('countsUpTo') + ' ' + fmtTime(state.watermark);
  }
  function renderAll() {
    renderLabels();
    drawLegend();
    renderDistrictLabels();
    renderAlerts();
    renderFraud();
    renderStatus();
    if (!$('cell-panel').hidden && state.cellDetail) renderCellPanel(state.cellDetail);
  }
  $('lang-toggle').addEventListener('click', () => {
    state.lang = state.lang === 'zh' ? 'en' : 'zh';
    localStorage.setItem('gridwatch.lang', state.lang);
    renderAll();
  });
  for (const button of document.querySelectorAll('button.view')) {
    button.addEventListener('click', () => {
      if (state.view === button.dataset.view) return;
      state.view = button.dataset.view;
      renderLabels();
      computeBreaks();
      recolourAll();
      loadMap(false);
    });
  }

  // ---- start --------------------------------------------------------------------------------
  async function start() {
    renderLabels();
    renderFraud();
    const started = performance.now();
    const map = loadMap(true);
    const alerts = loadAlerts();
    await Promise.all([map, alerts]);
    // Since navigation start: HTML, scripts, GeoJSON and alerts fetched, map and list drawn.
    probe.firstRenderMillis = Math.round(performance.now());
    probe.dataLoadMillis = Math.round(performance.now() - started);
    await Promise.all([withRetry('status', loadStatus), withRetry('fraud', loadFraud)]);
    streamLoop();
    // Keep "since" ages fresh and the by-type counts (not carried by the stream) current.
    setInterval(scheduleAlertRender, 10000);
    setInterval(() => { if (probe.connection === 'live') loadMap(false); }, COUNTS_REFRESH_MILLIS);
  }
  start();
})();
