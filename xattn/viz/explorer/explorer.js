// The xattn attention explorer. Everything lives inside `root`: no globals, no network.
function xattnExplorer(root) {
  "use strict";
  var data = JSON.parse(root.querySelector(".xae-data").textContent);
  var app = root.querySelector(".xae-app");
  var COLOURS = { text: [33, 102, 172, 1], audio: [33, 102, 172, 1], image: [255, 90, 0, 0.8] };
  var state = { example: 0, map: null, token: 0 };
  var view = {};

  function bytes(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function decoded(ex) {
    if (!ex._levels) {
      ex._levels = bytes(ex.levels);
      ex._peaks = new Float32Array(bytes(ex.peaks).buffer);
    }
    return ex;
  }
  function mapNames(ex) {
    var L = ex.shape[0], H = ex.shape[1], names = [];
    for (var l = 0; l < L; l++) for (var h = 0; h < H; h++) names.push("layer " + (l + 1) + " head " + (h + 1));
    names.push("mean of every head");
    if (data.alignment_heads) names.push("alignment heads");
    return names;
  }
  function level(ex, m, t, s) {
    var T = ex.shape[2], S = ex.shape[3];
    return ex._levels[(m * T + t) * S + s];
  }
  function weight(ex, m, t, s) {
    return (level(ex, m, t, s) / 255) * ex._peaks[m * ex.shape[2] + t];
  }
  function paint(cell, lv, kind) {
    var c = COLOURS[kind], a = (c[3] * lv) / 255;
    cell.style.backgroundColor = "rgba(" + c[0] + ", " + c[1] + ", " + c[2] + ", " + a.toFixed(3) + ")";
    if (kind === "text") cell.style.color = a > 0.55 ? "white" : "black";
  }
  function peakOf(ex, m, t, columns) {
    var best = 0;
    for (var s = 1; s < columns; s++) if (level(ex, m, t, s) > level(ex, m, t, best)) best = s;
    return best;
  }

  // ---- source views ----------------------------------------------------------------------

  function textSource(ex, panel) {
    var src = ex.source, cells = [];
    src.labels.forEach(function (label, s) {
      var cell = el("span", "xae-src" + (src.sentences ? " xae-sentence" : ""), label);
      cell.dataset.position = s;
      panel.appendChild(cell);
      cells.push(cell);
    });
    return cells;
  }
  function imageSource(ex, panel) {
    var src = ex.source, scale = Math.max(4, Math.floor(480 / src.width));
    var box = el("div", "xae-image"), canvas = el("canvas");
    canvas.width = src.width; canvas.height = src.height;
    canvas.style.width = src.width * scale + "px"; canvas.style.height = src.height * scale + "px";
    var pixels = bytes(src.pixels), ctx = canvas.getContext("2d"), img = ctx.createImageData(src.width, src.height);
    for (var i = 0; i < pixels.length; i++) {
      var v = 255 - pixels[i];
      img.data[4 * i] = v; img.data[4 * i + 1] = v; img.data[4 * i + 2] = v; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    var grid = el("div", "xae-grid"), cells = [];
    grid.style.gridTemplateColumns = "repeat(" + src.cols + ", 1fr)";
    grid.style.gridTemplateRows = "repeat(" + src.rows + ", 1fr)";
    for (var k = 0; k < src.rows * src.cols; k++) {
      var cell = el("div", "xae-src");
      cell.style.gridColumn = String(Math.floor(k / src.rows) + 1);
      cell.style.gridRow = String((k % src.rows) + 1);
      cell.dataset.position = k;
      cell.title = src.labels[k];
      grid.appendChild(cell);
      cells.push(cell);
    }
    box.appendChild(canvas); box.appendChild(grid); panel.appendChild(box);
    view.canvas = canvas;
    return cells;
  }
  function spectrogram(src) {
    var canvas = el("canvas"), levels = bytes(src.mel);
    canvas.width = src.frames; canvas.height = src.bins;
    var ctx = canvas.getContext("2d"), img = ctx.createImageData(src.frames, src.bins);
    var stops = [[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]];
    for (var f = 0; f < src.frames; f++) {
      for (var b = 0; b < src.bins; b++) {
        var x = levels[f * src.bins + b] / 255 * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), u = x - i;
        var p = 4 * ((src.bins - 1 - b) * src.frames + f);
        for (var c = 0; c < 3; c++) img.data[p + c] = Math.round(stops[i][c] * (1 - u) + stops[i + 1][c] * u);
        img.data[p + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    return canvas;
  }
  function audioSource(ex, panel) {
    var src = ex.source, box = el("div", "xae-audio"), seconds = src.frames * src.frame_seconds;
    box.appendChild(spectrogram(src));
    view.canvas = box.firstChild;
    var strip = el("div", "xae-strip"), cells = [];
    strip.style.width = Math.min(100, (100 * src.labels.length * src.seconds_per_position) / seconds) + "%";
    src.labels.forEach(function (label, s) {
      var cell = el("div", "xae-src");
      cell.title = label;
      cell.dataset.position = s;
      strip.appendChild(cell);
      cells.push(cell);
    });
    view.span = el("div", "xae-span");
    strip.appendChild(view.span);
    box.appendChild(el("div", "xae-label", "the selected word's attention over time; red: where it was spoken"));
    box.appendChild(strip);
    if (src.words) {
      var words = el("div", "xae-words");
      src.words.forEach(function (w) {
        var mark = el("span", null, w[0]);
        mark.style.left = (100 * w[1]) / seconds + "%";
        mark.title = w[1].toFixed(2) + "-" + w[2].toFixed(2) + " s";
        words.appendChild(mark);
      });
      box.appendChild(el("div", "xae-label", "word timestamps"));
      box.appendChild(words);
    }
    if (src.wav) {
      var player = el("audio");
      player.controls = true;
      player.src = src.wav;
      box.appendChild(player);
    }
    panel.appendChild(box);
    view.seconds = seconds;
    return cells;
  }

  // ---- the model view --------------------------------------------------------------------

  function thumbnail(ex, m) {
    var T = ex.shape[2], S = ex.shape[3], canvas = el("canvas");
    canvas.width = S; canvas.height = T;
    var ctx = canvas.getContext("2d"), img = ctx.createImageData(S, T);
    for (var t = 0; t < T; t++) for (var s = 0; s < S; s++) {
      var v = 255 - level(ex, m, t, s), p = 4 * (t * S + s);
      img.data[p] = v; img.data[p + 1] = v; img.data[p + 2] = 255; img.data[p + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    return canvas;
  }
  function modelView(ex, names) {
    var L = ex.shape[0], H = ex.shape[1], box = el("div", "xae-thumbs");
    box.style.gridTemplateColumns = "repeat(" + Math.max(H, names.length - L * H) + ", max-content)";
    view.thumbs = [];
    names.forEach(function (name, m) {
      var button = el("button", "xae-thumb");
      button.type = "button";
      button.title = name;
      button.dataset.map = m;
      button.appendChild(thumbnail(ex, m));
      button.appendChild(el("div", null, m < L * H ? "L" + (Math.floor(m / H) + 1) + " H" + ((m % H) + 1) : name));
      button.addEventListener("click", function () { chooseMap(m); });
      view.thumbs.push(button);
      box.appendChild(button);  // layers by rows; the means on a row of their own
    });
    return box;
  }

  // ---- what a chosen token shows ---------------------------------------------------------

  function columns(ex) {
    var labels = ex.source.labels;
    return labels[labels.length - 1] === "</s>" ? labels.length - 1 : labels.length;
  }
  function showToken(t) {
    var ex = data.examples[state.example], m = state.map, kind = ex.source.kind;
    state.token = t;
    view.tokens.forEach(function (tok, i) {
      tok.classList.toggle("xae-on", i === t);
      tok.setAttribute("aria-pressed", i === t ? "true" : "false");
    });
    view.cells.forEach(function (cell, s) {
      var lv = level(ex, m, t, s);
      paint(cell, lv, kind);
      cell.dataset.level = lv;
      cell.dataset.weight = weight(ex, m, t, s).toFixed(4);
    });
    if (kind === "audio" && view.span) {
      var spans = ex.source.spans;
      if (spans && t < spans.length) {
        view.span.style.display = "block";
        var width = ex.source.labels.length * ex.source.seconds_per_position;
        view.span.style.left = (100 * spans[t][0]) / width + "%";
        view.span.style.width = (100 * (spans[t][1] - spans[t][0])) / width + "%";
      } else {
        view.span.style.display = "none";
      }
    }
    var peak = peakOf(ex, m, t, ex.source.labels.length);
    view.focus.textContent = "\u201c" + ex.target[t] + "\u201d looks most at \u201c" + ex.source.labels[peak] +
      "\u201d (" + (100 * weight(ex, m, t, peak)).toFixed(1) + "%)";
  }
  function hardAlignment(ex) {
    var m = state.map, T = ex.shape[2], rows = ex.target[T - 1] === "</s>" ? T - 1 : T, links = [];
    for (var t = 0; t < rows; t++) links.push(peakOf(ex, m, t, columns(ex)) + "-" + t);
    links.sort(function (a, b) {
      var x = a.split("-").map(Number), y = b.split("-").map(Number);
      return x[0] - y[0] || x[1] - y[1];
    });
    view.pharaoh.textContent = links.join(" ");
  }
  function chooseMap(m) {
    state.map = m;
    view.select.value = String(m);
    view.thumbs.forEach(function (b, i) { b.classList.toggle("xae-on", i === m); });
    if (view.pharaoh) hardAlignment(data.examples[state.example]);
    showToken(state.token);
  }

  function generation(ex, box) {
    if (ex.generated) {
      var line = el("div");
      line.appendChild(el("span", "xae-label", "generated"));
      ex.generated.forEach(function (g, i) {
        var differs = ex.reference && ex.reference[i] !== g[0];
        var tok = el("span", "xae-src" + (differs ? " xae-diff" : ""), g[0] + " " + (100 * g[1]).toFixed(0) + "%");
        tok.title = "probability " + g[1].toFixed(3);
        line.appendChild(tok);
      });
      box.appendChild(line);
    }
    if (ex.reference) {
      var ref = el("div");
      ref.appendChild(el("span", "xae-label", "reference"));
      ref.appendChild(el("span", null, ex.reference.join(" ")));
      box.appendChild(ref);
    }
  }

  function render() {
    var ex = decoded(data.examples[state.example]), names = mapNames(ex);
    app.textContent = "";
    view = {};
    app.appendChild(el("h2", null, data.title));
    if (data.description) app.appendChild(el("div", "xae-desc", data.description));
    var controls = el("div", "xae-controls");
    if (data.examples.length > 1) {
      var pick = el("select", "xae-example");
      data.examples.forEach(function (e, i) { pick.appendChild(new Option(e.name || "example " + (i + 1), i)); });
      pick.value = String(state.example);
      pick.addEventListener("change", function () { state.example = Number(pick.value); state.token = 0; state.map = null; render(); });
      controls.appendChild(el("span", "xae-label", "example"));
      controls.appendChild(pick);
    }
    view.select = el("select", "xae-map");
    names.forEach(function (name, m) { view.select.appendChild(new Option(name, m)); });
    view.select.addEventListener("change", function () { chooseMap(Number(view.select.value)); });
    controls.appendChild(el("span", "xae-label", "map"));
    controls.appendChild(view.select);
    app.appendChild(controls);
    if (ex.note) app.appendChild(el("div", "xae-note", ex.note));
    var models = el("details", "xae-panel xae-models");
    models.appendChild(el("summary", null, "model view: every layer and head (click one)"));
    models.appendChild(modelView(ex, names));
    app.appendChild(models);
    var source = el("div", "xae-panel xae-source");
    source.appendChild(el("div", "xae-label", "source"));
    var kind = ex.source.kind;
    view.cells = (kind === "image" ? imageSource : kind === "audio" ? audioSource : textSource)(ex, source);
    app.appendChild(source);
    var target = el("div", "xae-panel xae-target");
    target.appendChild(el("div", "xae-label", "target (hover, click, or the arrow keys)"));
    view.tokens = ex.target.map(function (token, t) {
      var tok = el("span", "xae-tok", token);
      tok.tabIndex = 0;
      tok.setAttribute("role", "button");
      tok.dataset.index = t;
      tok.addEventListener("mouseenter", function () { showToken(t); });
      tok.addEventListener("click", function () { showToken(t); });
      tok.addEventListener("focus", function () { showToken(t); });
      tok.addEventListener("keydown", function (event) {
        var next = { ArrowRight: t + 1, ArrowLeft: t - 1, Home: 0, End: ex.target.length - 1 }[event.key];
        if (next === undefined) return;
        event.preventDefault();
        next = Math.max(0, Math.min(ex.target.length - 1, next));
        view.tokens[next].focus();
      });
      target.appendChild(tok);
      return tok;
    });
    app.appendChild(target);
    var info = el("div", "xae-panel xae-info");
    view.focus = el("div", "xae-focus");
    info.appendChild(view.focus);
    if (kind === "text") {
      var line = el("div");
      line.appendChild(el("span", "xae-label", "hard alignment (Pharaoh source-target)"));
      view.pharaoh = el("span", "xae-mono xae-pharaoh");
      line.appendChild(view.pharaoh);
      info.appendChild(line);
    }
    generation(ex, info);
    app.appendChild(info);
    chooseMap(state.map === null ? names.length - 1 : state.map);
  }

  render();
}
